"""Denoising score matching against closed forms.

For Gaussian data N(mu, diag(v)) the best noise prediction is E[eps | x_t], whose residual
variance per coordinate is r(t) = m^2 v / (m^2 v + s^2). So the expected loss of the exact model
is the integral of lambda(t)/s(t)^2 * mean(r(t)) over t ~ U[eps, t1], computed here by quadrature.
"""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import SDES, exact_model

import sgm
from sgm._losses import DSMLoss, log_inverse_snr, sample_uniforms

V = np.array([0.3, 0.6])


def expected_loss(sde, weighting: str, eps: float) -> float:
    t = np.geomspace(eps, sde.t1, 400_001)
    m, s = (np.asarray(a, dtype=np.float64) for a in jax.vmap(sde.marginal)(jnp.asarray(t)))
    r = np.mean(m[:, None] ** 2 * V / (m[:, None] ** 2 * V + s[:, None] ** 2), axis=1)
    if weighting == "likelihood":
        r = r * np.asarray(jax.vmap(sde.diffusion)(jnp.asarray(t)), np.float64) ** 2 / s**2
    return float(np.trapezoid(r, t) / (sde.t1 - eps))


def per_example_losses(loss: DSMLoss, model, x0, key):
    tkey, ekey = jr.split(key)
    n = x0.shape[0]
    t, w = loss.times(model.sde, sample_uniforms(tkey, n, loss.time_sampling))
    keys = jr.split(ekey, n)
    return jax.vmap(lambda t, w, x, k: loss(model, t, w, x, key=k))(t, w, x0, keys)


@pytest.mark.parametrize("sde", ["vp", "subvp", "ve"])
@pytest.mark.parametrize(
    "loss",
    [
        DSMLoss(weighting="sigma2"),
        DSMLoss(weighting="sigma2", time_sampling="stratified"),
        DSMLoss(weighting="likelihood", eps=1e-3),
        DSMLoss(weighting="likelihood", importance_sampling=True, eps=1e-3),
    ],
    ids=["sigma2", "sigma2-stratified", "likelihood", "likelihood-is"],
)
def test_loss_of_exact_model_matches_quadrature(sde, loss):
    sde = SDES[sde]
    g = sgm.Gaussian(jnp.array([0.2, -0.4]), jnp.asarray(V))
    model = exact_model(g, sde)
    n = 100_000
    x0 = g.sample(jr.key(0), n)
    values = np.asarray(per_example_losses(loss, model, x0, jr.key(1)), np.float64)
    expected = expected_loss(sde, loss.weighting, loss.eps)
    se = values.std() / math.sqrt(n)
    assert abs(values.mean() - expected) < 4 * se + 1e-4 * expected, (values.mean(), expected, se)


def test_importance_sampling_reduces_variance():
    sde = SDES["vp"]
    g = sgm.Gaussian(jnp.zeros(2), jnp.asarray(V))
    model, x0 = exact_model(g, sde), g.sample(jr.key(0), 20_000)
    plain = per_example_losses(DSMLoss(weighting="likelihood", eps=1e-3), model, x0, jr.key(1))
    tuned = DSMLoss(weighting="likelihood", importance_sampling=True, eps=1e-3)
    is_values = per_example_losses(tuned, model, x0, jr.key(1))
    assert float(is_values.std()) < 0.5 * float(plain.std())


def test_importance_sampled_times_follow_g2_over_s2():
    """P(t <= c) = (rho(c) - rho(eps)) / (rho(t1) - rho(eps)) with rho = log(s^2/m^2)."""
    sde, loss = SDES["vp"], DSMLoss(weighting="likelihood", importance_sampling=True, eps=1e-3)
    t, _ = loss.times(sde, jr.uniform(jr.key(0), (20_000,)))
    rho = lambda t: float(log_inverse_snr(sde, t))  # noqa: E731
    for c in (0.01, 0.1, 0.5):
        expected = (rho(c) - rho(1e-3)) / (rho(1.0) - rho(1e-3))
        assert float(jnp.mean(t <= c)) == pytest.approx(expected, abs=0.015)


def test_time_sampling_schemes():
    u = sample_uniforms(jr.key(0), 8, "stratified")
    assert jnp.all(jnp.floor(u * 8) == jnp.arange(8))
    a = sample_uniforms(jr.key(0), 8, "antithetic")
    np.testing.assert_allclose(a[:4] + a[4:], 1.0, rtol=1e-6)


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="weighting"):
        DSMLoss(weighting="l2")
    with pytest.raises(ValueError, match="importance_sampling"):
        DSMLoss(importance_sampling=True)
    with pytest.raises(ValueError, match="null_label"):
        DSMLoss(label_dropout=0.1)
    with pytest.raises(ValueError, match="time_sampling"):
        DSMLoss(time_sampling="sobol")
