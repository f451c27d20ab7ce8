"""Log-likelihoods against closed-form densities and flows."""

import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import SDES, ImageGaussian, rotated_gaussian

import sgm
from sgm._trace import balanced_chunks


def pushforward_log_prob(g: sgm.Gaussian, sde, x):
    """The model's exact log-density at t0: the prior at the exact flow map's image plus the
    log-determinant of that affine map."""
    flow = lambda x: g.flow(sde, sde.t0, sde.t1, x)  # noqa: E731
    return jax.vmap(lambda x: sde.prior_log_prob(flow(x)))(x) + g.flow_log_det(sde, sde.t0, sde.t1)


@pytest.mark.parametrize("sde", ["vp", "subvp", "ve"])
@pytest.mark.parametrize("rotated", [True, False])
def test_exact_trace_matches_closed_form_at_default_tolerances(sde, rotated):
    sde = SDES[sde]
    g = (
        rotated_gaussian(d=3)
        if rotated
        else sgm.Gaussian(jnp.array([0.3, -0.5, 0.1]), jnp.array([0.2, 0.5, 0.05]))
    )
    x = g.sample(jr.key(0), 8)
    lp = sgm.log_likelihood(g.score(sde), sde, x, trace=sgm.Exact())
    assert lp.shape == (8,)
    np.testing.assert_allclose(lp, pushforward_log_prob(g, sde, x), atol=1e-3, rtol=0)


def test_cosine_schedule_likelihood_converges_with_tolerance():
    """The cosine schedule's small beta near t0 makes the flow in `t` stiff there (2.7e-3 nats
    at the default tolerances, measured); in the noise level it is not (2.2e-5 at the default
    tolerances, 7e-6 at 1e-7, measured)."""
    sde = SDES["vp_cosine"]
    g = rotated_gaussian(d=3)
    x = g.sample(jr.key(0), 8)
    true = pushforward_log_prob(g, sde, x)
    lp = sgm.log_likelihood(g.score(sde), sde, x, trace=sgm.Exact())
    np.testing.assert_allclose(lp, true, atol=1e-4, rtol=0)
    lp = sgm.log_likelihood(g.score(sde), sde, x, trace=sgm.Exact(), rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(lp, true, atol=1e-4, rtol=0)


@pytest.mark.parametrize("sde", ["vp", "subvp"])
def test_matches_true_data_density(sde):
    """For zero-mean data the VP/subVP prior N(0, I) is the t1 marginal to within
    exp(-B(1)) = 4e-5, so the model density is the true density log p_t0(x)."""
    sde = SDES[sde]
    g = rotated_gaussian(d=3, mean_scale=0.0)
    x = g.sample(jr.key(1), 8)
    lp = sgm.log_likelihood(g.score(sde), sde, x, trace=sgm.Exact())
    true = jax.vmap(lambda x: g.log_prob(x, sde=sde, t=sde.t0))(x)
    np.testing.assert_allclose(lp, true, atol=1e-3, rtol=0)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(probe):
    """400 independent single-probe estimates average to the exact value within 4 standard
    errors."""
    sde, g = SDES["vp"], rotated_gaussian(d=3)
    x = g.sample(jr.key(2), 1)
    exact = float(sgm.log_likelihood(g.score(sde), sde, x, trace=sgm.Exact())[0])
    hutch = sgm.Hutchinson(probe=probe)
    est = sgm.log_likelihood(g.score(sde), sde, jnp.repeat(x, 400, 0), key=jr.key(3), trace=hutch)
    se = float(est.std()) / math.sqrt(400)
    assert se > 0
    assert abs(float(est.mean()) - exact) < 4 * se, (float(est.mean()), exact, se)


def test_more_probes_reduce_variance():
    sde, g = SDES["vp"], rotated_gaussian(d=3)
    x = jnp.repeat(g.sample(jr.key(2), 1), 200, 0)
    one = sgm.log_likelihood(g.score(sde), sde, x, key=jr.key(4), trace=sgm.Hutchinson(1))
    four = sgm.log_likelihood(g.score(sde), sde, x, key=jr.key(5), trace=sgm.Hutchinson(4))
    # Standard deviation halves with four probes; 0.7 leaves room for sampling noise.
    assert float(four.std()) < 0.7 * float(one.std())


def test_exact_trace_chunking_is_invariant():
    sde, g = SDES["vp"], rotated_gaussian(d=5)
    x = g.sample(jr.key(0), 2)
    a = sgm.log_likelihood(g.score(sde), sde, x, trace=sgm.Exact(chunk_size=2))
    b = sgm.log_likelihood(g.score(sde), sde, x, trace=sgm.Exact(chunk_size=128))
    np.testing.assert_allclose(a, b, rtol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 100])
def test_exact_trace_of_known_matrix(chunk_size):
    mat = jr.normal(jr.key(0), (7, 7))
    tr = sgm.Exact(chunk_size)(lambda v: (mat @ v.reshape(7)).reshape(7), (7,), None)
    assert float(tr) == pytest.approx(float(jnp.trace(mat)), rel=1e-5)


def test_exact_trace_chunks_are_balanced():
    """784 dimensions in chunks of at most 128: 7 of 112, no padding."""
    assert balanced_chunks(784, 128) == (7, 112)
    assert balanced_chunks(785, 128) == (7, 113)
    assert balanced_chunks(5, 128) == (1, 5)


def test_bound_form_batches_and_reports_nfe():
    sde, g = SDES["vp"], rotated_gaussian(d=3)
    x = g.sample(jr.key(0), 5)
    ll = sgm.LogLikelihood(g.score(sde), sde, trace=sgm.Exact())
    lp, nfe = ll(x, batch_size=2, return_nfe=True, progress=False)
    np.testing.assert_array_equal(lp, sgm.log_likelihood(g.score(sde), sde, x, trace=sgm.Exact()))
    assert nfe.shape == (5,) and bool(jnp.all(nfe > 10))


def analytic_bpd(images, sde, std, low, high):
    """Expected bits/dim of integer `images` under the model N(0, std^2 I) at t0 (in model
    scale), with x = low + (high - low) (v + u) / 256 and u uniform: E[-log N(x)] is closed form
    from the mean and variance of a uniform, and the change of variables adds
    d log(high - low) - d log 256."""
    d = images.shape[1]
    m, s = sde.marginal(sde.t0)
    var = m**2 * std**2 + s**2
    width = high - low
    centre = low + width * (images + 0.5) / 256
    second_moment = centre**2 + (width / 256) ** 2 / 12
    nll = 0.5 * jnp.sum(jnp.log(2 * math.pi * var) + second_moment / var, axis=1)
    return (nll - d * math.log(width) + d * math.log(256)) / (d * math.log(2))


@pytest.mark.parametrize("low,high", [(-1.0, 1.0), (-0.5, 0.5)])
def test_bits_per_dim_matches_analytic_value(low, high):
    """Model N(0, 0.3^2 I) under the VP SDE. Each image repeated 128 times, each copy with its
    own dequantization (and two draws each): the mean is within 4 standard errors of the
    analytic expectation (one draw's spread is about 0.01 bits). The second scaler checks that
    the log-determinant comes from the scaler."""
    sde, d, copies = SDES["vp"], 4, 128
    g = sgm.Gaussian(jnp.zeros(d), jnp.full((d,), 0.3**2))
    images = jnp.array([[10, 128, 200, 90], [140, 100, 60, 170]], dtype=jnp.uint8)
    bpd = sgm.bits_per_dim(
        g.score(sde),
        sde,
        jnp.repeat(images, copies, 0),
        key=jr.key(0),
        n_dequant=2,
        trace=sgm.Exact(),
        scaler=sgm.AffineScaler(low, high),
    ).reshape(2, copies)
    se = bpd.std(1) / math.sqrt(copies)
    assert bool(jnp.all(se < 2e-3)), se
    err = jnp.abs(bpd.mean(1) - analytic_bpd(images, sde, 0.3, low, high))
    assert bool(jnp.all(err < 4 * se)), (err, se)


def test_bad_input_raises_clear_errors():
    sde, g = SDES["vp"], rotated_gaussian(d=3)
    score, exact = g.score(sde), sgm.Exact()
    with pytest.raises(ValueError, match=r"batch shaped \(n, \*data_shape\)"):
        sgm.log_likelihood(score, sde, jnp.zeros(3), trace=exact)
    with pytest.raises(ValueError, match="NaN"):
        sgm.log_likelihood(score, sde, jnp.array([[0.0, jnp.nan, 1.0]]), trace=exact)
    with pytest.raises(ValueError, match="needs a key"):
        sgm.log_likelihood(score, sde, jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match="probe must be one of"):
        sgm.Hutchinson(probe="sphere")
    with pytest.raises(ValueError, match="n_probes must be"):
        sgm.Hutchinson(n_probes=0)
    with pytest.raises(ValueError, match="multiple of 3"):
        sgm.HutchPlusPlus(n_probes=4)
    with pytest.raises(ValueError, match="one example of shape"):
        sgm.log_likelihood(score, sde, jnp.zeros((1, 4)), trace=exact)
    with pytest.raises(ValueError, match="batch_size must be"):
        sgm.log_likelihood(score, sde, jnp.zeros((2, 3)), trace=exact, batch_size=0)
    with pytest.raises(ValueError, match="floats in model scale"):
        sgm.log_likelihood(score, sde, jnp.zeros((2, 3), jnp.int32), trace=exact)
    with pytest.raises(ValueError, match="y must have one entry per example"):
        sgm.log_likelihood(score, sde, jnp.zeros((2, 3)), trace=exact, y=jnp.zeros(3))
    with pytest.raises(ValueError, match="trace must be a trace estimator"):
        sgm.log_likelihood(score, sde, jnp.zeros((2, 3)), trace="exact")
    with pytest.raises(ValueError, match="not both"):
        sgm.log_likelihood(score, sde, jnp.zeros((2, 3)), trace=exact, exact=True)
    with pytest.raises(ValueError, match="n >= 1"):
        sgm.bits_per_dim(score, sde, jnp.zeros((0, 3), jnp.uint8), key=jr.key(0))
    with pytest.raises(ValueError, match="not booleans"):
        sgm.bits_per_dim(score, sde, jnp.zeros((1, 3), bool), key=jr.key(0))
    with pytest.raises(ValueError, match="integer values"):
        sgm.bits_per_dim(score, sde, jnp.full((1, 3), 0.5), key=jr.key(0))
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        sgm.bits_per_dim(score, sde, jnp.full((1, 3), 256), key=jr.key(0))


VARIABLES = {"default": sgm.ODEVariables(), "t": sgm.ODEVariables(time="t", state="x")}


@pytest.mark.parametrize("variables", list(VARIABLES))
@pytest.mark.parametrize("sde", ["vp", "subvp", "ve"])
def test_16d_gaussian_within_2e3_nats_in_every_coordinates(sde, variables):
    """A rotated 16-D Gaussian (variances 0.05 to 6), exact trace, default tolerances: within
    2e-3 nats of the closed form whatever the coordinates of the solve (the change of
    variables' log-determinant is carried exactly)."""
    sde, g = SDES[sde], rotated_gaussian(d=16)
    x = g.sample(jr.key(0), 4)
    lp = sgm.log_likelihood(g.score(sde), sde, x, trace=sgm.Exact(), variables=VARIABLES[variables])
    np.testing.assert_allclose(lp, pushforward_log_prob(g, sde, x), atol=2e-3, rtol=0)


@pytest.mark.parametrize("sde", ["vp", pytest.param("ve", marks=pytest.mark.slow)])
def test_image_shaped_gaussian_with_a_steep_spectrum(sde):
    """(1, 28, 28) images from a Gaussian rotated by the 2-D DCT, variances 1 down to 1e-5 (the
    scale of MNIST's dequantized saturated pixels); exact trace of 784 dimensions at the
    default tolerances. The log-density is about 3000 nats; the bound is 1e-4 nats per
    dimension (1.4e-4 bits/dim)."""
    sde, g = SDES[sde], ImageGaussian()
    x = g.sample(jr.key(0), 2)
    lp = sgm.log_likelihood(g.score(sde), sde, x, trace=sgm.Exact())
    true = jax.vmap(lambda x: g.model_log_prob(sde, x))(x)
    np.testing.assert_allclose(lp, true, atol=784e-4, rtol=0)


def test_each_example_is_independent_of_its_companions():
    """Solved one at a time, an example's value does not depend on the batch it comes in, on
    `batch_size`, or (for Hutchinson) on how many examples share the key: bit for bit."""
    sde, g = SDES["vp"], rotated_gaussian(d=3)
    x = g.sample(jr.key(0), 5)
    score = g.score(sde)
    for trace in (sgm.Exact(), sgm.Hutchinson()):
        ll = sgm.LogLikelihood(score, sde, trace=trace, one_at_a_time=True)
        full = ll(x, key=jr.key(1))
        np.testing.assert_array_equal(ll(x[:2], key=jr.key(1)), full[:2])
        np.testing.assert_array_equal(ll(x, key=jr.key(1), batch_size=2), full)
    one = dict(trace=sgm.Exact(), one_at_a_time=True)
    alone = sgm.log_likelihood(score, sde, x[3:4], **one)
    np.testing.assert_array_equal(alone, sgm.log_likelihood(score, sde, x, **one)[3:4])


@pytest.mark.parametrize("trace", [sgm.Exact(), sgm.Hutchinson()])
def test_batched_solves_match_one_at_a_time(trace):
    """Batched solves (the default) keep each example's own step control: on a 2-D Gaussian
    mixture the examples of one batch stop at different NFE, and a value differs from the
    one-at-a-time value only through rounding, within 1e-4 nats at rtol = atol = 1e-5
    (5e-5 measured); the one-at-a-time values match the closed form within 3e-3 nats."""
    sde = SDES["vp"]
    mix = sgm.GaussianMixture(
        jnp.array([0.3, 0.5, 0.2]),
        jnp.array([[-0.6, 0.2], [0.5, -0.3], [0.1, 0.7]]),
        jnp.array([[0.02, 0.09], [0.06, 0.01], [0.04, 0.04]]),
    )
    x = mix.sample(jr.key(0), 12)
    score = mix.score(sde)
    one, nfe_one = sgm.log_likelihood(
        score, sde, x, key=jr.key(1), trace=trace, one_at_a_time=True, return_nfe=True
    )
    for batch_size in (None, 5):
        lp, nfe = sgm.log_likelihood(
            score, sde, x, key=jr.key(1), trace=trace, batch_size=batch_size, return_nfe=True
        )
        # each example its own steps, not the slowest one's; most the steps it takes alone
        # (rounding can tip a step's acceptance, and the sequence after it)
        assert np.asarray(nfe).min() < np.asarray(nfe).max()
        assert np.mean(np.asarray(nfe) == np.asarray(nfe_one)) >= 0.5
        np.testing.assert_allclose(lp, one, atol=1e-4, rtol=0)
    if isinstance(trace, sgm.Exact):
        true = jax.vmap(lambda x: mix.log_prob(x, sde=sde, t=sde.t0))(x)
        np.testing.assert_allclose(one, true, atol=3e-3, rtol=0)


_TWO_DEVICES = textwrap.dedent(
    """
    import sys, jax, jax.random as jr, numpy as np, sgm
    sys.path.insert(0, sys.argv[2])
    from helpers import SDES, rotated_gaussian
    assert jax.local_device_count() == 2, jax.devices()
    sde, g = SDES["vp"], rotated_gaussian(d=3)
    x = g.sample(jr.key(0), 3)
    kw = dict(rtol=1e-5, atol=1e-5, one_at_a_time=True)
    lp = sgm.log_likelihood(g.score(sde), sde, x, key=jr.key(1), **kw)
    np.save(sys.argv[1], np.asarray(lp))
    """
)


def test_two_devices_give_the_values_of_one(tmp_path):
    """Two simulated devices (3 examples padded to 4, sharded) against one: solved one at a
    time, each example's solve is the same program on any device, so the values agree bit for
    bit."""
    script = tmp_path / "two.py"
    script.write_text(_TWO_DEVICES)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = tmp_path / "lp.npy"
    helpers = str(os.path.dirname(__file__))
    subprocess.run(
        [sys.executable, str(script), str(out), helpers], env=env, check=True, timeout=300
    )
    sde, g = SDES["vp"], rotated_gaussian(d=3)
    x = g.sample(jr.key(0), 3)
    kw = dict(rtol=1e-5, atol=1e-5, one_at_a_time=True)
    lp = sgm.log_likelihood(g.score(sde), sde, x, key=jr.key(1), **kw)
    np.testing.assert_array_equal(np.load(out), lp)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutch_plus_plus_captures_a_low_rank_matrix(probe):
    """A rotated rank-2 matrix plus 0.01 I in 16-D: Hutch++ with 6 products (2 sketch vectors)
    has under a tenth of Hutchinson's variance with 6 probes; both are unbiased (within 4
    standard errors over 2000 draws)."""
    q, _ = jnp.linalg.qr(jr.normal(jr.key(0), (16, 16)))
    mat = (q[:, :2] * jnp.array([3.0, 2.0])) @ q[:, :2].T + 0.01 * jnp.eye(16)
    keys = jr.split(jr.key(1), 2000)

    def draws(est):
        return jax.vmap(lambda k: est(lambda v: mat @ v, (16,), est.draw(k, (16,))))(keys)

    pp, hutch = draws(sgm.HutchPlusPlus(6, probe)), draws(sgm.Hutchinson(6, probe))
    for d in (pp, hutch):
        se = float(d.std()) / math.sqrt(len(d))
        assert abs(float(d.mean()) - float(jnp.trace(mat))) < 4 * se + 1e-5
    assert float(pp.var()) < float(hutch.var()) / 10, (float(pp.var()), float(hutch.var()))


def test_hutch_plus_plus_likelihood_is_unbiased():
    """Through the ODE: 200 solves with Hutch++ (3 products) average to the exact value within
    4 standard errors."""
    sde, g = SDES["vp"], rotated_gaussian(d=3)
    x = g.sample(jr.key(2), 1)
    exact = float(sgm.log_likelihood(g.score(sde), sde, x, trace=sgm.Exact())[0])
    xs = jnp.repeat(x, 200, 0)
    est = sgm.log_likelihood(g.score(sde), sde, xs, key=jr.key(3), trace=sgm.HutchPlusPlus(3))
    se = float(est.std()) / math.sqrt(200)
    assert abs(float(est.mean()) - exact) < 4 * se + 1e-4, (float(est.mean()), exact, se)


def test_deprecated_flags_map_onto_the_estimators():
    sde, g = SDES["vp"], rotated_gaussian(d=3)
    x = g.sample(jr.key(0), 2)
    score = g.score(sde)
    with pytest.warns(DeprecationWarning, match="deprecated; removed in sgm") as caught:
        old = sgm.log_likelihood(score, sde, x, exact=True, chunk_size=2)
    assert caught[0].filename == __file__  # the warning names the caller's line
    np.testing.assert_array_equal(old, sgm.log_likelihood(score, sde, x, trace=sgm.Exact(2)))
    with pytest.warns(DeprecationWarning) as caught:
        old = sgm.LogLikelihood(score, sde, n_probes=2, probe="gaussian")(x, key=jr.key(1))
    assert caught[0].filename == __file__
    with pytest.raises(TypeError, match="unexpected keyword"):
        sgm.LogLikelihood(score, sde, n_probe=2)
    new = sgm.log_likelihood(score, sde, x, key=jr.key(1), trace=sgm.Hutchinson(2, "gaussian"))
    np.testing.assert_array_equal(old, new)


def test_function_and_bound_forms_share_their_options():
    """`max_steps` (and every other option) reaches the solve in both forms."""
    sde, g = SDES["vp"], rotated_gaussian(d=3)
    x = g.sample(jr.key(0), 1)
    with pytest.raises(Exception, match="max_steps"):
        sgm.log_likelihood(g.score(sde), sde, x, trace=sgm.Exact(), max_steps=2)
    with pytest.raises(Exception, match="max_steps"):
        sgm.LogLikelihood(g.score(sde), sde, trace=sgm.Exact(), max_steps=2)(x)


@pytest.mark.parametrize("precision", ["highest", None])
def test_products_in_the_solve_run_in_float32(precision):
    """Every matrix product and convolution of the likelihood's program asks for float32
    (`precision="highest"`, the default): a GPU's TF32 default puts its rounding into the
    adaptive solve (measured on an H200: 452 NFE instead of 224). None leaves JAX's default."""
    from sgm._likelihood import _loglik_batch

    net = sgm.nets.UNet(
        (1, 8, 8),
        channels=8,
        channel_mults=(1,),
        attention_levels=(0,),
        num_groups=4,
        key=jr.key(0),
    )
    sde = sgm.VPSDE()
    ll = sgm.LogLikelihood(sgm.ScoreModel(net, sde), sde, precision=precision)
    x, keys = jnp.zeros((2, 1, 8, 8)), jr.split(jr.key(0), 2)
    text = _loglik_batch.lower(ll, x, keys, None).as_text()
    ops = [
        line
        for line in text.splitlines()
        if "stablehlo.dot_general" in line or "stablehlo.convolution" in line
    ]
    assert len(ops) > 10
    highest = ["HIGHEST" in line for line in ops]
    assert all(highest) if precision == "highest" else not all(highest)
    with pytest.raises(ValueError, match="precision must be one of"):
        sgm.LogLikelihood(sgm.ScoreModel(net, sde), sde, precision="tf32")
