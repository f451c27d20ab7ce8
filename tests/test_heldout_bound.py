"""The trainer's held-out variational bound (`sgm.HeldOutBound`): the same number as
`variational_bound` / `bits_per_dim(method="bound")`, near the closed form with the exact
score, read every `every` steps, repeated exactly by a resumed run, and refused when
misconfigured."""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from helpers import TinyNet, exact_model, four_gaussians, rotated_gaussian
from jax.scipy.stats import norm

import sgm

SDE = sgm.VPSDE()
FROZEN = optax.sgd(0.0)  # the model stays the closed form: its EMA (decay 0) is the model


def _train(model, x, evaluation, *, steps, optimizer=FROZEN, ema_decay=0.0, **kw):
    monitor = sgm.Monitor(every=2, evaluation=evaluation, progress=False, history=True)
    return sgm.train(
        model,
        SDE,
        x,
        optimizer,
        steps=steps,
        batch_size=16,
        key=jr.key(1),
        ema_decay=ema_decay,
        monitor=monitor,
        **kw,
    )


def test_continuous_bound_is_variational_bound_per_dim_and_matches_the_closed_form():
    """With the exact score of a rotated 3-D Gaussian the readings are the mean over the
    examples of `variational_bound / D` (the same numbers), and lie within four estimator
    standard errors of the exact `-log p_t0(x) / D` on those examples."""
    dist = rotated_gaussian(3)
    model = exact_model(dist, SDE)
    x = np.asarray(dist.sample(jr.key(3), 64))
    bound = sgm.HeldOutBound(n_examples=16, n_times=32, seed=5)
    _, history = _train(model, x, sgm.Evaluation(x, every=2, bound=bound), steps=4)
    assert history["eval_step"] == [2, 4]
    assert bound.keys == ("eval_bound_nats_per_dim", "eval_bound_nats_per_dim_se")
    nats, se = sgm.variational_bound(model, SDE, x[:16], key=jr.key(5), n_times=32)
    per_dim = np.asarray(nats, np.float64) / 3
    expected = float(per_dim.mean())
    assert history["eval_bound_nats_per_dim"] == [expected, expected]
    expected_se = float(per_dim.std(ddof=1) / 4)
    assert history["eval_bound_nats_per_dim_se"] == [expected_se, expected_se]
    exact = -np.mean(jax.vmap(lambda v: dist.log_prob(v, sde=SDE, t=SDE.t0))(x[:16])) / 3
    estimator_se = float(jnp.sqrt(jnp.sum(se**2))) / 16 / 3
    assert abs(expected - exact) < 4 * estimator_se, (expected, exact, estimator_se)


_BITS = 3
_MEAN = np.array([0.1, -0.2, 0.3, 0.0])  # model scale [-1, 1]
_VAR = np.array([0.09, 0.04, 0.16, 0.06])


def _images(n, seed=0):
    """Integer images drawn from the quantized Gaussian."""
    rng = np.random.default_rng(seed)
    v = (rng.normal(_MEAN, np.sqrt(_VAR), (n, 4)) + 1) / 2 * 2**_BITS
    return np.clip(np.floor(v), 0, 2**_BITS - 1).astype(np.int32)


def _exact_bits(k):
    """`-log2 P(k) / D` of the Gaussian's marginal at t0 quantized into the `2^b` bins."""
    m, s = SDE.marginal(SDE.t0)
    half = 2**_BITS / 2
    mean, std = (m * _MEAN + 1) * half, jnp.sqrt(m**2 * _VAR + s**2) * half
    log_p = jnp.log(norm.cdf((k + 1 - mean) / std) - norm.cdf((k - mean) / std))
    return -jnp.sum(log_p, axis=-1) / (k.shape[-1] * math.log(2))


def test_image_bound_is_bits_per_dim_and_bounds_the_discrete_likelihood():
    """With integer images the readings are `bits_per_dim(method="bound")`'s mean and
    standard error on the first examples with the same key (the same numbers), never below
    the exact discrete bits/dim by more than three estimator standard errors, and conditional
    inputs are passed through (labels of a class-conditional model would go with them)."""
    k = _images(48)
    x = np.asarray(sgm.AffineScaler()(k / (2**_BITS - 1)), np.float32)
    model = exact_model(sgm.Gaussian(_MEAN, _VAR), SDE)
    bound = sgm.HeldOutBound(n_examples=24, n_times=16, images=k, num_bits=_BITS)
    _, history = _train(model, x, sgm.Evaluation(x, every=2, bound=bound), steps=2)
    _, info = sgm.bits_per_dim(
        model,
        SDE,
        k[:24],
        key=jr.key(0),
        num_bits=_BITS,
        method="bound",
        estimator="mean",
        n_times=16,
        return_info=True,
    )
    assert history["eval_bound_bits_per_dim"] == [info.bits_per_dim]
    assert history["eval_bound_bits_per_dim_se"] == [info.sem]
    exact = float(_exact_bits(k[:24]).mean())
    estimator_se = info.estimator_std / math.sqrt(24)
    assert info.bits_per_dim > exact - 3 * estimator_se, (info.bits_per_dim, exact)


def test_bound_is_read_every_every_steps_and_repeated_exactly_after_resume(tmp_path):
    """A training run's readings (every 5 steps, changing as the model learns) are the same
    bit for bit when the run is stopped at step 10 and resumed from its checkpoint."""
    x = np.asarray(four_gaussians().sample(jr.key(7), 256))
    held_out = np.asarray(four_gaussians().sample(jr.key(8), 32))
    bound = sgm.HeldOutBound(n_examples=8, n_times=4)
    evaluation = sgm.Evaluation(held_out, every=5, bound=bound)
    kw = dict(optimizer=optax.adam(1e-2), ema_decay=0.9, steps=20)
    model = lambda: sgm.ScoreModel(TinyNet(2, key=jr.key(0)), SDE)  # noqa: E731
    _, full = _train(model(), x, evaluation, **kw)
    ckpt = sgm.Checkpoints(tmp_path, every=5)
    _train(model(), x, evaluation, **{**kw, "steps": 10}, checkpoints=ckpt)
    ckpt = sgm.Checkpoints(tmp_path, every=5, resume=True)
    _, resumed = _train(model(), x, evaluation, **kw, checkpoints=ckpt)
    assert full["eval_step"] == [5, 10, 15, 20]
    readings = full["eval_bound_nats_per_dim"]
    assert len(readings) == 4 and len(set(readings)) == 4 and np.all(np.isfinite(readings))
    assert np.all(np.asarray(full["eval_bound_nats_per_dim_se"]) > 0)
    for name in ("step", "loss", "eval_step", "eval_loss", *bound.keys):
        assert resumed[name] == full[name], name


_K = np.random.default_rng(0).integers(0, 256, (10, 1, 2, 2))
_X = np.zeros((10, 1, 2, 2), np.float32)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: sgm.HeldOutBound(n_examples=1), "n_examples must be an integer >= 2"),
        (lambda: sgm.HeldOutBound(n_times=1), "n_times must be an integer >= 2"),
        (lambda: sgm.HeldOutBound(images=_K + 0.5), "images must hold integer values"),
        (lambda: sgm.HeldOutBound(images=_K, num_bits=4), r"images must lie in \[0, 2\*\*"),
        (lambda: sgm.HeldOutBound(scaler=lambda u: u), "scaler must be an sgm scaler"),
        (
            lambda: sgm.Evaluation(_X, bound=sgm.HeldOutBound(n_examples=4, images=_K[:, 0])),
            "images must be the integer form of Evaluation.data",
        ),
        (
            lambda: sgm.Evaluation(_X, bound=sgm.HeldOutBound(images=_K)),
            "n_examples=64 is more than the 10 held-out examples",
        ),
        (lambda: sgm.Evaluation(_X, bound=3), "bound must be an sgm.HeldOutBound"),
    ],
)
def test_bad_bound_options_are_one_line_errors(build, message):
    with pytest.raises(ValueError, match=message) as error:
        build()
    assert "\n" not in str(error.value)


def test_held_out_data_of_another_shape_is_refused_before_training():
    x = np.asarray(four_gaussians().sample(jr.key(7), 64))
    model = sgm.ScoreModel(TinyNet(2, key=jr.key(0)), SDE)
    evaluation = sgm.Evaluation(np.zeros((16, 3), np.float32), bound=sgm.HeldOutBound(n_examples=8))
    with pytest.raises(ValueError, match=r"training data's example shape \(2,\), got \(3,\)"):
        _train(model, x, evaluation, steps=2)


@pytest.mark.slow  # about 50 s through main.py; the bound's library checks are the other tests here
def test_main_records_the_bound_in_history_and_config(tmp_path):
    """`main.py --train.eval_bound true` on a tiny digits run: config.json records the
    setting, history.json the bound in bits/dim at each held-out reading, loss.png is drawn."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import main as cli

    tiny = "--model.channels 8 --model.channel_mults 1,2 --model.attention_levels 1"
    tiny += " --model.num_groups 4 --train.steps 4 --train.batch_size 16 --train.log_every 2"
    tiny += " --train.eval_every 2 --train.eval_bound true --train.eval_bound_examples 4"
    args = ["--experiment", "digits_vp", "--mode", "train", "--out", str(tmp_path)]
    assert cli.main(args + tiny.split()) == 0
    (run,) = (tmp_path / "digits_vp").iterdir()
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["eval_bound"] is True and config["train"]["eval_bound_examples"] == 4
    history = json.loads((run / "history.json").read_text())
    assert history["eval_step"] == [2, 4]
    values = history["eval_bound_bits_per_dim"]
    assert len(values) == 2 and all(0 < v < 50 for v in values)
    assert len(history["eval_bound_bits_per_dim_se"]) == 2
    assert (run / "loss.png").exists()
    # metrics.json carries the last reading with its protocol
    reading = json.loads((run / "metrics.json").read_text())["held_out_bound"]
    assert reading["value"] == values[-1] and reading["step"] == 4
    assert reading["n_examples"] == 4 and reading["n_times"] == 16
    assert reading["unit"] == "bits_per_dim" and reading["dequantizer"] == "uniform"


def _load(path):
    import json

    return json.loads(path.read_text())


_SHARDED = """
import json, sys
import sgm
if sys.argv[2] == "processes":
    sgm.distributed.initialize(timeout=120)
import jax, jax.random as jr, numpy as np, optax, equinox as eqx
sys.path.insert(0, sys.argv[3])
from helpers import TinyNet, four_gaussians
x = np.asarray(four_gaussians().sample(jr.key(7), 256))
held_out = np.asarray(four_gaussians().sample(jr.key(8), 32))
evaluation = sgm.Evaluation(held_out, every=5, bound=sgm.HeldOutBound(n_examples=8, n_times=4))
monitor = sgm.Monitor(every=5, evaluation=evaluation, progress=False, history=True)
model = sgm.ScoreModel(TinyNet(2, key=jr.key(0)), sgm.VPSDE())
out, history = sgm.train(model, sgm.VPSDE(), x, optax.adam(1e-2), steps=10, batch_size=16,
                         key=jr.key(1), ema_decay=0.9, monitor=monitor)
rank = jax.process_index()
eqx.tree_serialise_leaves(f"{sys.argv[1]}/model{rank}.eqx", out)
with open(f"{sys.argv[1]}/history{rank}.json", "w") as f:
    json.dump(history, f)
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["devices", "processes"])
def test_sharded_training_reads_the_bound_of_its_model(where, tmp_path):
    """On two simulated devices, and in a job of two processes (which record the same
    readings), the last reading is the bound of the returned EMA model computed on one
    device, up to float rounding."""
    import os
    import subprocess
    import sys

    import equinox as eqx
    from test_multiprocess import finish, launch

    from sgm._training._state import bound_inputs, eval_bound

    here = os.path.dirname(__file__)
    command = [sys.executable, "-c", _SHARDED, str(tmp_path), where, here]
    if where == "devices":
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
        subprocess.run(command, env=env, check=True, timeout=600)
        histories = [_load(tmp_path / "history0.json")]
    else:
        codes, outs = finish(launch(command))
        assert codes == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
        histories = [_load(tmp_path / f"history{r}.json") for r in (0, 1)]
        for name in ("step", "loss", "eval_step", "eval_loss", "eval_bound_nats_per_dim"):
            assert histories[0][name] == histories[1][name], name
    like = sgm.ScoreModel(TinyNet(2, key=jr.key(0)), SDE)
    model = eqx.tree_deserialise_leaves(tmp_path / "model0.eqx", like)
    held_out = np.asarray(four_gaussians().sample(jr.key(8), 32))
    bound = sgm.HeldOutBound(n_examples=8, n_times=4)
    mean, se = eval_bound(model, bound, *bound_inputs(bound, held_out, None))
    history = histories[0]
    assert history["eval_step"] == [5, 10]
    np.testing.assert_allclose(history["eval_bound_nats_per_dim"][-1], mean, rtol=1e-5)
    np.testing.assert_allclose(history["eval_bound_nats_per_dim_se"][-1], se, rtol=1e-4)
