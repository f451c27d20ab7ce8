"""Sharded parameters (`sgm.train(fsdp=F)`): on 4 simulated devices the parameters, EMA and
optimizer state are split over the `'fsdp'` axis (a device holds 1/F of every split array) and
training gives the single-device parameters to float32 rounding; a sharded run checkpoints
and resumes bit for bit; settings that cannot work are one-line errors before any work. The
two-process case is in tests/test_multiprocess.py."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
import optax
import pytest
from helpers import FixedNoiseLoss, TinyNet, four_gaussians
from jax.sharding import PartitionSpec as P

import sgm
from sgm._training._fsdp import check_fsdp, leaf_spec

SDE = sgm.VPSDE()


def test_leaf_spec_splits_the_largest_divisible_dimension():
    assert leaf_spec((32, 3), 4) == P("fsdp")
    assert leaf_spec((2, 32), 4) == P(None, "fsdp")
    assert leaf_spec((8, 8, 3, 3), 4) == P("fsdp")  # the first of equal dimensions
    assert leaf_spec((3, 3, 16, 64), 2) == P(None, None, None, "fsdp")
    assert leaf_spec((2,), 4) == P()  # 4 divides no dimension: whole
    assert leaf_spec((), 2) == P()


def test_settings_that_cannot_work_are_refused_before_any_work(tmp_path):
    model = sgm.ScoreModel(TinyNet(2, key=jr.key(0)), SDE)
    x = np.asarray(four_gaussians().sample(jr.key(7), 64))
    ckpt = tmp_path / "ckpt"
    with pytest.raises(ValueError, match="fsdp=2 must divide the 1 devices"):
        sgm.train(model, SDE, x, steps=2, key=jr.key(1), fsdp=2, checkpoints=sgm.Checkpoints(ckpt))
    assert not ckpt.exists()
    with pytest.raises(ValueError, match="fsdp must be an integer >= 1"):
        sgm.train(model, SDE, x, steps=2, key=jr.key(1), fsdp=0)
    params = [jax.ShapeDtypeStruct((3,), np.float32), jax.ShapeDtypeStruct((5, 5), np.float32)]
    with pytest.raises(ValueError, match=r"fsdp=4 splits no parameter.*largest is \(5, 5\)"):
        check_fsdp(4, 8, params)
    assert check_fsdp(4, 8, params + [jax.ShapeDtypeStruct((12,), np.float32)]) == 4


_FOUR = textwrap.dedent(
    """
    import json, sys, jax, jax.random as jr, numpy as np, optax, equinox as eqx, sgm
    sys.path.insert(0, sys.argv[2])
    from helpers import FixedNoiseLoss, TinyNet, four_gaussians
    from sgm._training._fsdp import fsdp_mesh, place_state
    from sgm._training._state import init_state, train_step
    assert jax.device_count() == 4
    sde = sgm.VPSDE()
    x = np.asarray(four_gaussians().sample(jr.key(7), 512))
    model = lambda: sgm.ScoreModel(TinyNet(2, key=jr.key(0)), sde)
    quiet = sgm.Monitor(progress=False)
    kw = dict(steps=5, batch_size=64, key=jr.key(1), monitor=quiet, ema_decay=0.9)
    out, report = {}, {}
    for f in (1, 2, 4):
        m = sgm.train(model(), sde, x, optax.adam(1e-3), fsdp=f, **kw)
        out.update({f"f{f}_{i}": np.asarray(a)
                    for i, a in enumerate(jax.tree.leaves(eqx.filter(m, eqx.is_inexact_array)))})
        # where one step leaves the state: each float array split 1/f on every device
        mesh = fsdp_mesh(f)
        state = place_state(init_state(model(), optax.adam(1e-3), key=jr.key(1)), mesh)
        batch = jax.device_put(x[:64], sgm._sharding.batch_sharding(mesh))
        state, _ = train_step(batch, state, None, sgm.DSMLoss(), optax.adam(1e-3), 0.9,
                              "float32", 1, mesh)
        arrays = jax.tree.leaves(eqx.filter(state, eqx.is_inexact_array))
        report[f] = dict(
            whole=int(sum(a.nbytes for a in arrays)),
            device0=int(sum(s.data.nbytes for a in arrays for s in a.addressable_shards
                            if s.device == jax.devices()[0])),
            specs=sorted({str(tuple(a.sharding.spec)) for a in arrays}),
        )
    # with accumulation: 2 micro-batches of a loss without joint draws, SGD
    m = sgm.train(model(), sde, x, optax.sgd(1e-2), fsdp=2, accumulate=2, loss=FixedNoiseLoss(),
                  **{**kw, "ema_decay": 0.0})
    out.update({f"acc_{i}": np.asarray(a)
                for i, a in enumerate(jax.tree.leaves(eqx.filter(m, eqx.is_inexact_array)))})
    # a sharded run stopped at step 3 and resumed to 5 is the uninterrupted one, bit for bit
    ck = sgm.Checkpoints(sys.argv[3], every=3)
    ema = sgm.PostHocEMA(snapshot_every=3)
    sgm.train(model(), sde, x, optax.adam(1e-3), fsdp=2, checkpoints=ck, posthoc_ema=ema,
              **{**kw, "steps": 3})
    ck = sgm.Checkpoints(sys.argv[3], every=3, resume=True)
    resumed = sgm.train(model(), sde, x, optax.adam(1e-3), fsdp=2, checkpoints=ck,
                        posthoc_ema=ema, **kw)
    out.update({f"resumed_{i}": np.asarray(a) for i, a in
                enumerate(jax.tree.leaves(eqx.filter(resumed, eqx.is_inexact_array)))})
    np.savez(sys.argv[1] + ".npz", **out)
    with open(sys.argv[1] + ".json", "w") as fh:
        json.dump(report, fh)
    """
)


def _one_device(optimizer, **kw) -> list:
    """The parameters of the 4-device script's 5 steps, trained on one device."""
    trained = sgm.train(
        sgm.ScoreModel(TinyNet(2, key=jr.key(0)), SDE),
        SDE,
        np.asarray(four_gaussians().sample(jr.key(7), 512)),
        optimizer,
        steps=5,
        batch_size=64,
        key=jr.key(1),
        monitor=sgm.Monitor(progress=False),
        **kw,
    )
    return jax.tree.leaves(eqx.filter(trained, eqx.is_inexact_array))


def test_sharded_parameters_on_four_devices_give_the_single_device_result(tmp_path):
    """F = 1, 2, 4 parameter shards on 4 simulated devices: 5 Adam steps with the EMA give the
    single-device parameters to 1e-5 (the gradient's all-reduce sums in another order); after
    one step every split array holds 1/F of itself on device 0 (the state is the parameters,
    EMA and two Adam moments of a network whose arrays are all split but two of 2 entries);
    F = 2 with 2 micro-batches per step gives the single-device unaccumulated SGD steps of a
    loss without joint draws to 1e-5; and the sharded run stopped at step 3 resumes from its
    checkpoint to the uninterrupted parameters bit for bit."""
    script, out = tmp_path / "four.py", tmp_path / "out"
    script.write_text(_FOUR)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    subprocess.run(
        [sys.executable, str(script), str(out), os.path.dirname(__file__), str(tmp_path / "ck")],
        env=env,
        check=True,
        timeout=600,
    )
    one = _one_device(optax.adam(1e-3), ema_decay=0.9)
    plain = _one_device(optax.sgd(1e-2), ema_decay=0.0, loss=FixedNoiseLoss())
    got = np.load(f"{out}.npz")
    for i, leaf in enumerate(plain):
        np.testing.assert_allclose(got[f"acc_{i}"], leaf, rtol=1e-5, atol=1e-6)
    ref = one
    for f in (1, 2, 4):
        for i, leaf in enumerate(ref):
            np.testing.assert_allclose(got[f"f{f}_{i}"], leaf, rtol=1e-5, atol=1e-6)
    for i in range(len(ref)):
        np.testing.assert_array_equal(got[f"resumed_{i}"], got[f"f2_{i}"])
    report = json.loads((tmp_path / "out.json").read_text())
    # TinyNet(2): weights (32, 3), (32, 32), (2, 32), biases (32,), (32,), (2,); only the
    # (2,) bias is whole at F = 4 (4 divides none of its dimensions), none at F = 2
    assert report["1"]["device0"] == report["1"]["whole"]
    assert report["2"]["device0"] == report["2"]["whole"] // 2
    whole_bias = 4 * 2 * 4  # the (2,) bias in the parameters, EMA and two moments, float32
    assert report["4"]["device0"] == (report["4"]["whole"] - whole_bias) // 4 + whole_bias
    assert report["2"]["specs"] == ["('fsdp',)", "(None, 'fsdp')"]
    assert report["4"]["specs"] == ["('fsdp',)", "()", "(None, 'fsdp')"]


@pytest.mark.slow
def test_main_trains_with_sharded_parameters_on_four_devices(tmp_path):
    """`python main.py --train.fsdp 2 --train.checkpoint_async true` on 4 simulated devices: a
    whole run (train, sample, likelihood) with its state split and its checkpoints written in
    the background, both recorded in config.json (about 50 s)."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    tiny = "--model.width 16 --model.depth 1 --train.batch_size 32 --train.steps 8"
    tiny += " --train.log_every 2 --train.checkpoint_every 4 --data.n_train 256"
    tiny += " --data.n_test 16 --sample.samplers em --sample.steps 3 --sample.n_samples 6"
    tiny += " --eval.n_images 3 --eval.batch_size 2"
    command = [sys.executable, "main.py", "--experiment", "moons_vp", "--train.fsdp", "2"]
    command += ["--train.checkpoint_async", "true"]
    command += [*tiny.split(), "--out", str(tmp_path)]
    subprocess.run(command, cwd=root, env=env, check=True, timeout=600)
    (run,) = (tmp_path / "moons_vp").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["devices"] == 4
    assert np.isfinite(metrics["test_nll_nats_per_dim"]["mean"])
    train = json.loads((run / "config.json").read_text())["train"]
    assert train["fsdp"] == 2 and train["checkpoint_async"] is True
    assert (run / "checkpoint" / "step_00000008" / "state").is_dir()
