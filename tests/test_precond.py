"""The network parametrisations of `ScoreModel` and the EDM loss options, against closed forms.

For data `x_0 ~ N(0, sigma_data^2 I)` Karras et al.'s preconditioning gives the network a
unit-variance input and a unit-variance target at every noise level (their appendix B.6); for VP
with `sigma_data = 1` its target is minus the v of Salimans & Ho (2022).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import SDES, rotated_gaussian
from jax.scipy.special import ndtr

import sgm
from sgm._losses import DSMLoss, log_inverse_snr, sample_uniforms

TIMES = (1e-3, 0.05, 0.3, 1.0)


def target(pre, sde, t, x0, eps):
    """The network output `F` that makes `eps_hat` equal to `eps` at `x_t`."""
    m, s = sde.marginal(t)
    c_in, c_skip, c_out, _ = pre.coefficients(sde, t)
    return (eps - c_skip * c_in * (m * x0 + s * eps)) / c_out, c_in * (m * x0 + s * eps)


@pytest.mark.parametrize("sde", ["vp", "subvp", "ve", "vp_cosine"])
@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
def test_edm_input_and_target_have_unit_variance(sde, sigma_data):
    sde, pre = SDES[sde], sgm.EDMPreconditioning(sigma_data=sigma_data)
    x0 = sigma_data * jr.normal(jr.key(0), (200_000,))
    eps = jr.normal(jr.key(1), (200_000,))
    for t in TIMES:
        f, z = target(pre, sde, t, x0, eps)
        assert float(jnp.var(z)) == pytest.approx(1.0, abs=0.02), ("input", t)
        assert float(jnp.var(f)) == pytest.approx(1.0, abs=0.02), ("target", t)


def test_edm_on_vp_is_v_prediction():
    sde, pre = sgm.VPSDE(), sgm.EDMPreconditioning(sigma_data=1.0)
    x0, eps = jr.normal(jr.key(0), (5,)), jr.normal(jr.key(1), (5,))
    for t in TIMES:
        m, s = sde.marginal(t)
        f, _ = target(pre, sde, t, x0, eps)
        np.testing.assert_allclose(f, -(m * eps - s * x0), rtol=1e-4, atol=1e-5)


class ExactTarget(eqx.Module):
    """A 'network' returning the exact `F` for the closed-form score of a Gaussian: inverts
    `c_noise = log(sigma) / 4` to find `t`."""

    g: sgm.Gaussian
    sde: sgm.AbstractSDE
    pre: sgm.EDMPreconditioning

    def __call__(self, c, z, *, y=None, key=None):
        ts = jnp.linspace(self.sde.t0, self.sde.t1, 200_001)
        sig = jax.vmap(lambda t: 0.5 * log_inverse_snr(self.sde, t))(ts)
        t = jnp.interp(4 * c, sig, ts)
        c_in, c_skip, c_out, _ = self.pre.coefficients(self.sde, t)
        x = z / c_in
        eps = -self.sde.marginal(t)[1] * self.g.score(self.sde)(t, x)
        return (eps - c_skip * z) / c_out


@pytest.mark.parametrize("sde", ["vp", "ve"])
def test_score_model_with_edm_reproduces_the_exact_score(sde):
    sde, g = SDES[sde], rotated_gaussian(d=2)
    pre = sgm.EDMPreconditioning(sigma_data=0.7)
    model = sgm.ScoreModel(ExactTarget(g, sde, pre), sde, preconditioning=pre)
    x = jnp.array([0.3, -0.4])
    for t in (0.05, 0.5, 1.0):
        np.testing.assert_allclose(model(t, x), g.score(sde)(t, x), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("sde", ["vp", "ve"])
def test_lognormal_times_follow_the_truncated_normal(sde):
    """`log sigma(t)` of the drawn times has the truncated normal CDF."""
    sde = SDES[sde]
    loss = DSMLoss(time_density="lognormal", eps=1e-4, p_mean=-0.8, p_std=1.5)
    t, w = loss.times(sde, sample_uniforms(jr.key(0), 50_000, "stratified"))
    assert float(t.min()) >= 1e-4 * (1 - 1e-3) and float(t.max()) <= sde.t1
    np.testing.assert_allclose(w, 1.0)
    log_sigma = jax.vmap(lambda t: 0.5 * log_inverse_snr(sde, t))(t)
    lo, hi = (0.5 * float(log_inverse_snr(sde, e)) for e in (1e-4, sde.t1))
    cdf = lambda v: float(ndtr((v - loss.p_mean) / loss.p_std))  # noqa: E731
    for c in (-3.0, -1.0, 0.0, 1.5):
        expected = (cdf(c) - cdf(lo)) / (cdf(hi) - cdf(lo))
        assert float(jnp.mean(log_sigma <= c)) == pytest.approx(expected, abs=0.005)


def test_edm_weighting_of_the_exact_model_matches_quadrature():
    """With `weighting="edm"` the loss of the exact model is `E_t[r(t) / c_out(t)^2]`, `r` the
    per-coordinate residual variance `m^2 v / (m^2 v + s^2)` of Gaussian data."""
    sde, v = sgm.VPSDE(), np.array([0.3, 0.6])
    g = sgm.Gaussian(jnp.array([0.2, -0.4]), jnp.asarray(v))
    pre = sgm.EDMPreconditioning(sigma_data=0.5)
    model = sgm.ScoreModel(ExactTarget(g, sde, pre), sde, preconditioning=pre)
    loss = DSMLoss(weighting="edm", time_density="uniform", eps=1e-3)
    n = 20_000
    tkey, ekey = jr.split(jr.key(1))
    t, w = loss.times(sde, sample_uniforms(tkey, n, "stratified"))
    x0 = g.sample(jr.key(0), n)
    values = jax.vmap(lambda t, w, x, k: loss(model, t, w, x, key=k))(t, w, x0, jr.split(ekey, n))
    ts = np.linspace(1e-3, 1.0, 200_001)
    m, s = (np.asarray(a, np.float64) for a in jax.vmap(sde.marginal)(jnp.asarray(ts)))
    r = np.mean(m[:, None] ** 2 * v / (m[:, None] ** 2 * v + s[:, None] ** 2), axis=1)
    sigma2 = (s / m) ** 2
    c_out2 = 0.25 / (sigma2 + 0.25)
    expected = np.trapezoid(r / c_out2, ts) / (1 - 1e-3)
    se = float(np.std(values)) / math.sqrt(n)
    assert abs(float(np.mean(values)) - expected) < 4 * se, (float(np.mean(values)), expected, se)


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="sigma_data"):
        sgm.EDMPreconditioning(sigma_data=0.0)
    with pytest.raises(ValueError, match="time_density"):
        DSMLoss(time_density="beta")
    with pytest.raises(ValueError, match="importance_sampling"):
        DSMLoss(weighting="likelihood", importance_sampling=True, time_density="lognormal")


def test_each_weighting_has_its_time_density():
    assert DSMLoss().weighting == "edm" and DSMLoss().density == "lognormal"
    assert DSMLoss(weighting="sigma2").density == "uniform"
    assert DSMLoss(weighting="likelihood").density == "uniform"
    assert DSMLoss(weighting="sigma2", time_density="lognormal").density == "lognormal"
    assert DSMLoss(time_density="uniform").density == "uniform"
