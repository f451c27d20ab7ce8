"""Mixed precision and gradient accumulation in `sgm.train`: K micro-batches give the gradient
of one batch to float32 rounding (one device, four devices), the bfloat16 network computes in
bfloat16 while everything it returns stays float32, and what cannot work is refused before
any work."""

import os
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from helpers import FixedNoiseLoss, TinyNet, four_gaussians

import sgm
from sgm._training._accumulate import micro_batches, value_and_grad
from sgm._training._precision import in_precision

SDE = sgm.VPSDE()
QUIET = sgm.Monitor(progress=False)


def data(n=256):
    return np.asarray(four_gaussians().sample(jr.key(7), n))


def leaves(model):
    return jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))


def mlp_model(seed=0):
    return sgm.ScoreModel(sgm.nets.MLP((2,), key=jr.key(seed), width=64, depth=2), SDE)


def test_micro_batches_take_every_kth_row():
    a = jnp.arange(12).reshape(12, 1)
    mb = micro_batches(a, 3)
    assert mb.shape == (3, 4, 1)
    np.testing.assert_array_equal(mb[1, :, 0], [1, 4, 7, 10])


def test_accumulated_gradient_is_the_batch_gradient():
    """A deterministic objective (the mean of per-example terms): 4 micro-batches of 16 give
    the loss and gradient of the batch of 64 to float32 rounding."""
    model = mlp_model()
    params, static = eqx.partition(model, eqx.is_inexact_array)
    x = jnp.asarray(data(64))

    def objective(p, xb, yb, key):
        return FixedNoiseLoss().batch_loss(eqx.combine(p, static), xb, key=key)

    one = value_and_grad(objective, params, x, None, jr.key(0), 1)
    four = value_and_grad(objective, params, x, None, jr.key(0), 4)
    np.testing.assert_allclose(four[0], one[0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(four[1]), jax.tree.leaves(one[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def _train(accumulate, **kw):
    model = sgm.ScoreModel(TinyNet(2, key=jr.key(0)), SDE)
    return sgm.train(
        model,
        SDE,
        data(),
        optax.sgd(1e-2),
        steps=3,
        batch_size=64,
        key=jr.key(1),
        loss=FixedNoiseLoss(),
        ema_decay=0.0,
        monitor=QUIET,
        accumulate=accumulate,
        **kw,
    )


def test_accumulated_training_equals_one_batch():
    """Three SGD steps with the batch of 64 in 4 micro-batches: the parameters of the
    unaccumulated run to float32 rounding; and in distribution with DSM's random draws (the
    same loss scale, other draws)."""
    one, four = _train(1), _train(4)
    for a, b in zip(leaves(four), leaves(one), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


_MULTI = textwrap.dedent(
    """
    import sys, jax, jax.random as jr, numpy as np, optax, equinox as eqx, sgm
    sys.path.insert(0, sys.argv[2])
    from helpers import FixedNoiseLoss, TinyNet, four_gaussians
    assert jax.device_count() == 4
    sde = sgm.VPSDE()
    x = np.asarray(four_gaussians().sample(jr.key(7), 256))
    out = []
    for k in (1, 2, 4):
        model = sgm.ScoreModel(TinyNet(2, key=jr.key(0)), sde)
        m = sgm.train(model, sde, x, optax.sgd(1e-2), steps=3, batch_size=64, key=jr.key(1),
                      loss=FixedNoiseLoss(), ema_decay=0.0, monitor=sgm.Monitor(progress=False),
                      accumulate=k)
        out += [np.asarray(a) for a in jax.tree.leaves(eqx.filter(m, eqx.is_inexact_array))]
    np.savez(sys.argv[1], *out)
    """
)


def test_accumulation_sharded_over_four_devices_equals_one_device(tmp_path):
    """On 4 simulated devices, accumulate 1, 2 and 4 (micro-batches of 16 spread over the
    devices) give the single-device, unaccumulated parameters to float32 rounding."""
    script, out = tmp_path / "multi.py", tmp_path / "params.npz"
    script.write_text(_MULTI)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    subprocess.run(
        [sys.executable, str(script), str(out), os.path.dirname(__file__)],
        env=env,
        check=True,
        timeout=300,
    )
    one = leaves(_train(1))
    multi = np.load(out)
    for k in range(3):
        for i, leaf in enumerate(one):
            got = multi[f"arr_{k * len(one) + i}"]
            np.testing.assert_allclose(got, leaf, rtol=1e-5, atol=1e-6)


def test_bfloat16_network_computes_in_bfloat16_and_returns_float32():
    model = mlp_model()
    low = in_precision(model, "bfloat16")
    assert {a.dtype for a in leaves(low.net)} == {jnp.dtype(jnp.bfloat16)}
    x = jnp.ones(2)
    out = low(0.5, x)
    assert out.dtype == jnp.float32
    jaxpr = str(jax.make_jaxpr(lambda x: low(0.5, x))(x))
    assert "bf16[" in jaxpr and "dot_general" in jaxpr
    # the float32 network's program has no bfloat16 at all, and the outputs differ by
    # bfloat16's rounding, not more
    assert "bf16" not in str(jax.make_jaxpr(lambda x: model(0.5, x))(x))
    np.testing.assert_allclose(out, model(0.5, x), rtol=5e-2, atol=5e-2)
    assert in_precision(model, "float32") is model


def test_bfloat16_training_keeps_float32_state_and_learns_like_float32():
    """200 DSM steps on the 2-D mixture: the returned model (and its EMA) is float32, its
    parameters differ from the float32 run's (the network really ran in bfloat16), and the
    last loss readings agree within 10%."""
    kw = dict(
        steps=200,
        batch_size=64,
        key=jr.key(1),
        monitor=sgm.Monitor(every=50, progress=False, history=True),
    )
    m32, h32 = sgm.train(mlp_model(), SDE, data(1024), optax.adam(3e-3), **kw)
    m16, h16 = sgm.train(mlp_model(), SDE, data(1024), optax.adam(3e-3), precision="bfloat16", **kw)
    assert {a.dtype for a in leaves(m16)} == {jnp.dtype(jnp.float32)}
    assert not all(np.array_equal(a, b) for a, b in zip(leaves(m16), leaves(m32), strict=True))
    assert h16["loss"][-1] < 0.8 * h16["loss"][0]
    np.testing.assert_allclose(np.mean(h16["loss"][-2:]), np.mean(h32["loss"][-2:]), rtol=0.1)


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(precision="float16"), "needs dynamic loss scaling"),
        (dict(precision="fp8"), "precision must be one of"),
        (dict(accumulate=0), "accumulate must be an integer >= 1"),
        (dict(accumulate=3), "multiple of the 1 devices times accumulate=3"),
    ],
)
def test_bad_precision_and_accumulation_are_one_line_errors(kw, message, tmp_path):
    directory = tmp_path / "ckpt"
    with pytest.raises(ValueError, match=message) as e:
        sgm.train(
            mlp_model(),
            SDE,
            data(),
            steps=2,
            batch_size=64,
            key=jr.key(0),
            monitor=QUIET,
            checkpoints=sgm.Checkpoints(directory),
            **kw,
        )
    assert "\n" not in str(e.value)
    assert not directory.exists()


def _bfloat16(model):
    return jax.tree.map(lambda a: a.astype(jnp.bfloat16) if eqx.is_inexact_array(a) else a, model)


def test_a_bfloat16_model_is_refused_by_training_and_likelihoods():
    low = _bfloat16(mlp_model())
    with pytest.raises(ValueError, match="precision='bfloat16'"):
        sgm.train(low, SDE, data(), steps=2, batch_size=64, key=jr.key(0), monitor=QUIET)
    x = jnp.asarray(data(4))
    with pytest.raises(ValueError, match="a likelihood needs float32"):
        sgm.log_likelihood(low, SDE, x, key=jr.key(0))
    with pytest.raises(ValueError, match="a likelihood needs float32"):
        sgm.variational_bound(low, SDE, x, key=jr.key(0))
    images = np.zeros((2, 1, 4, 4), np.uint8)
    image_model = sgm.ScoreModel(sgm.nets.MLP((1, 4, 4), key=jr.key(0), width=16, depth=1), SDE)
    with pytest.raises(ValueError, match="a likelihood needs float32"):
        sgm.bits_per_dim(_bfloat16(image_model), SDE, images, key=jr.key(0))
