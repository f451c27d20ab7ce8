"""Log-likelihoods against closed-form densities and flows."""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import SDES, rotated_gaussian

import sgm


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
    lp = sgm.log_likelihood(g.score(sde), sde, x, exact=True)
    assert lp.shape == (8,)
    np.testing.assert_allclose(lp, pushforward_log_prob(g, sde, x), atol=1e-3, rtol=0)


def test_cosine_schedule_likelihood_converges_with_tolerance():
    """The cosine schedule's small beta near t0 makes the flow stiff there: at the default
    tolerances the error is about 2e-3 nats, at 1e-7 about 2e-5 (measured)."""
    sde = SDES["vp_cosine"]
    g = rotated_gaussian(d=3)
    x = g.sample(jr.key(0), 8)
    lp = sgm.log_likelihood(g.score(sde), sde, x, exact=True, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(lp, pushforward_log_prob(g, sde, x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("sde", ["vp", "subvp"])
def test_matches_true_data_density(sde):
    """For zero-mean data the VP/subVP prior N(0, I) is the t1 marginal to within
    exp(-B(1)) = 4e-5, so the model density is the true density log p_t0(x)."""
    sde = SDES[sde]
    g = rotated_gaussian(d=3, mean_scale=0.0)
    x = g.sample(jr.key(1), 8)
    lp = sgm.log_likelihood(g.score(sde), sde, x, exact=True)
    true = jax.vmap(lambda x: g.log_prob(x, sde=sde, t=sde.t0))(x)
    np.testing.assert_allclose(lp, true, atol=1e-3, rtol=0)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(probe):
    """400 independent single-probe estimates average to the exact value within 4 standard
    errors."""
    sde, g = SDES["vp"], rotated_gaussian(d=3)
    x = g.sample(jr.key(2), 1)
    exact = float(sgm.log_likelihood(g.score(sde), sde, x, exact=True)[0])
    est = sgm.log_likelihood(g.score(sde), sde, jnp.repeat(x, 400, 0), key=jr.key(3), probe=probe)
    se = float(est.std()) / math.sqrt(400)
    assert se > 0
    assert abs(float(est.mean()) - exact) < 4 * se, (float(est.mean()), exact, se)


def test_more_probes_reduce_variance():
    sde, g = SDES["vp"], rotated_gaussian(d=3)
    x = jnp.repeat(g.sample(jr.key(2), 1), 200, 0)
    one = sgm.log_likelihood(g.score(sde), sde, x, key=jr.key(4), n_probes=1)
    four = sgm.log_likelihood(g.score(sde), sde, x, key=jr.key(5), n_probes=4)
    # Standard deviation halves with four probes; 0.7 leaves room for sampling noise.
    assert float(four.std()) < 0.7 * float(one.std())


def test_exact_trace_chunking_is_invariant():
    sde, g = SDES["vp"], rotated_gaussian(d=5)
    x = g.sample(jr.key(0), 2)
    a = sgm.log_likelihood(g.score(sde), sde, x, exact=True, chunk_size=2)
    b = sgm.log_likelihood(g.score(sde), sde, x, exact=True, chunk_size=128)
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_exact_trace_of_known_matrix():
    mat = jr.normal(jr.key(0), (7, 7))
    tr = sgm._likelihood.exact_trace(lambda v: (mat @ v.reshape(7)).reshape(7), (7,), 3)
    assert float(tr) == pytest.approx(float(jnp.trace(mat)), rel=1e-5)


def test_bound_form_batches_and_reports_nfe():
    sde, g = SDES["vp"], rotated_gaussian(d=3)
    x = g.sample(jr.key(0), 5)
    ll = sgm.LogLikelihood(g.score(sde), sde, exact=True)
    lp, nfe = ll(x, batch_size=2, return_nfe=True, progress=False)
    np.testing.assert_allclose(lp, sgm.log_likelihood(g.score(sde), sde, x, exact=True), rtol=1e-5)
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
    """Model N(0, 0.3^2 I) under the VP SDE; 16 dequantization draws leave a Monte-Carlo error
    below 1e-3 bits. The second scaler checks that the log-determinant comes from the scaler."""
    sde, d = SDES["vp"], 4
    g = sgm.Gaussian(jnp.zeros(d), jnp.full((d,), 0.3**2))
    images = jnp.array([[10, 128, 200, 90], [140, 100, 60, 170]], dtype=jnp.uint8)
    bpd = sgm.bits_per_dim(
        g.score(sde), sde, images, key=jr.key(0), n_dequant=16, exact=True,
        scaler=sgm.AffineScaler(low, high),
    )  # fmt: skip
    np.testing.assert_allclose(bpd, analytic_bpd(images, sde, 0.3, low, high), atol=2e-3, rtol=0)


def test_bad_input_raises_clear_errors():
    sde, g = SDES["vp"], rotated_gaussian(d=3)
    score = g.score(sde)
    with pytest.raises(ValueError, match=r"batch shaped \(n, \*data_shape\)"):
        sgm.log_likelihood(score, sde, jnp.zeros(3), exact=True)
    with pytest.raises(ValueError, match="NaN"):
        sgm.log_likelihood(score, sde, jnp.array([[0.0, jnp.nan, 1.0]]), exact=True)
    with pytest.raises(ValueError, match="needs a key"):
        sgm.log_likelihood(score, sde, jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match="probe must be one of"):
        sgm.log_likelihood(score, sde, jnp.zeros((1, 3)), key=jr.key(0), probe="sphere")
    with pytest.raises(ValueError, match="one example of shape"):
        sgm.log_likelihood(score, sde, jnp.zeros((1, 4)), exact=True)
    with pytest.raises(ValueError, match="integer values"):
        sgm.bits_per_dim(score, sde, jnp.full((1, 3), 0.5), key=jr.key(0))
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        sgm.bits_per_dim(score, sde, jnp.full((1, 3), 256), key=jr.key(0))
