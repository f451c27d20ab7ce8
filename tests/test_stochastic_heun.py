"""EDM's stochastic Heun sampler (Karras et al. 2022, algorithm 2: `HeunSampler` with churn)
against closed forms, its deterministic limit, its checks and warnings."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import SDES, four_gaussians, rotated_gaussian

import sgm

N = 4000


@pytest.fixture(scope="module")
def mixture_reference():
    mix = four_gaussians()
    lp = jax.vmap(mix.log_prob)(mix.sample(jr.key(123), 50_000))
    return mix, float(lp.mean())


@pytest.mark.parametrize("sde", ["vp", "subvp", "ve"])
def test_churn_reproduces_gaussian_mixture(sde, mixture_reference):
    """With churn = 5 at 64 levels (the `heun_churn` preset) the samples' mode weights are
    within 0.03 of the mixture's and their mean log-density within 0.05 nats of the data's own
    (measured: -0.004 under VP, +0.025 under VE; standard error of the difference ~0.013)."""
    mix, ref = mixture_reference
    sde = SDES[sde]
    sampler = sgm.HeunSampler(steps=64, churn=5.0)
    x, nfe = sgm.sample(mix.score(sde), sde, sampler, key=jr.key(0), shape=(N, 2), return_nfe=True)
    assert bool(jnp.all(jnp.isfinite(x))) and bool(jnp.all(nfe == 2 * 64 - 1))
    weights = jnp.bincount(jax.vmap(mix.assign)(x), length=4) / N
    np.testing.assert_allclose(weights, mix.weights, atol=0.03)
    lp = float(jax.vmap(mix.log_prob)(x).mean())
    assert abs(lp - ref) < 0.05, (lp, ref)


def test_churn_under_vp_reproduces_gaussian_moments():
    """A rotated 3-D Gaussian under VP with churn at every level (gamma = 0.16): the whitened
    samples have mean 0 (within 5 standard errors) and unit variances within 0.1 (standard
    error 0.022). The churn's noise is added to the scaled state `x / m` in units of sigma;
    added in units of `x` instead it would be `m` times too small at large noise."""
    sde, g = SDES["vp"], rotated_gaussian(d=3)
    sampler = sgm.HeunSampler(steps=64, churn=10.0)
    x = sgm.sample(g.score(sde), sde, sampler, key=jr.key(1), shape=(N, 3))
    z = ((x - g.mean) @ g.eigvecs) / jnp.sqrt(g.eigvals)
    assert float(jnp.abs(z.mean(0)).max()) < 5 / math.sqrt(N)
    np.testing.assert_allclose(z.var(0), 1.0, atol=0.1)


@pytest.mark.parametrize("sde", ["vp", "ve"])
def test_zero_churn_is_the_deterministic_sampler(sde):
    """`churn = 0` whatever the other churn settings gives the deterministic sampler's samples
    bit for bit; churn whose window excludes every level runs the churn step with no noise and
    agrees to float32 rounding (a different program: Tweedie's formula at sigma_max ~ 150
    under VP divides rounding of ~6e-8 by m^2 ~ 5e-5, so about 1e-3 is rounding there)."""
    sde, g = SDES[sde], rotated_gaussian(d=3)
    x1 = sde.prior_sample(jr.key(0), (3,))
    run = lambda s, k: eqx.filter_jit(s.sample_one)(g.score(sde), sde, x1, key=jr.key(k))  # noqa: E731
    ref, nfe = run(sgm.HeunSampler(steps=18), 0)
    zero = sgm.HeunSampler(steps=18, churn=0.0, churn_tmin=0.05, churn_tmax=50.0, churn_noise=1.007)
    x, nfe0 = run(zero, 3)
    np.testing.assert_array_equal(x, ref)
    x, nfe1 = run(sgm.HeunSampler(steps=18, churn=20.0, churn_tmin=1e6, churn_tmax=1e7), 3)
    np.testing.assert_allclose(x, ref, atol=1e-3)
    assert int(nfe0) == int(nfe1) == int(nfe) == 2 * 18 - 1
    # with churn the sample depends on the key, and only on it
    churned = sgm.HeunSampler(steps=18, churn=10.0)
    a, b, c = run(churned, 1), run(churned, 1), run(churned, 2)
    np.testing.assert_array_equal(a[0], b[0])
    assert float(jnp.abs(a[0] - c[0]).max()) > 1e-3
    assert float(jnp.abs(a[0] - ref).max()) > 1e-3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"churn": -1.0}, "churn"),
        ({"churn": float("nan")}, "churn"),
        ({"churn_noise": 0.0}, "churn_noise"),
        ({"churn_tmin": -0.1}, "churn_tmin"),
        ({"churn_tmin": 1.0, "churn_tmax": 0.5}, "churn_tmax must be a number above"),
        ({"churn_tmax": "big"}, "churn_tmax"),
    ],
)
def test_bad_churn_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        sgm.HeunSampler(**kwargs)
    assert "\n" not in str(info.value)


def test_poor_churn_settings_warn():
    """`sgm.sample` warns with `poor_combination` (tested for every sampler in
    `test_fast_samplers.py`); here its reasons for churn."""
    vp, ve = SDES["vp"], SDES["ve"]
    for sde, sampler, match in [
        (vp, sgm.HeunSampler(steps=32, churn=5.0), "64 or more steps"),
        (ve, sgm.HeunSampler(steps=64, churn=40.0), "capped at sqrt"),
    ]:
        reason = sampler.poor_combination(sde)
        assert reason is not None and match in reason
    for sde in (vp, ve):
        assert sgm.HeunSampler(steps=64, churn=5.0).poor_combination(sde) is None


def test_experiment_layer_offers_the_stochastic_heun():
    from sgm.experiment import SAMPLERS

    sampler = SAMPLERS["heun_churn"]()
    assert isinstance(sampler, sgm.HeunSampler)
    assert sampler.churn > 0 and sampler.steps == 64
