"""SDEs against their own forward dynamics and against hand-derived closed forms."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import SDES

import sgm


@pytest.mark.parametrize("name", list(SDES))
def test_marginal_matches_forward_simulation(name):
    """Euler-Maruyama paths of dx = f x dt + g dw from x0 have mean m(t) x0 and std s(t)."""
    sde = SDES[name]
    n_paths, steps, x0 = 20_000, 2000, 0.7
    ts = jnp.linspace(0.0, 1.0, steps + 1)

    def step(x, inputs):
        t, t_next, key = inputs
        dt = t_next - t
        z = jr.normal(key, x.shape)
        return x + sde.drift(t, x) * dt + sde.diffusion(t) * jnp.sqrt(dt) * z, x

    keys = jr.split(jr.key(0), steps)
    _, path = jax.lax.scan(step, jnp.full((n_paths,), x0), (ts[:-1], ts[1:], keys))
    for i in (steps // 4, steps - 1):
        t = ts[i]
        m, s = sde.marginal(t)
        se_mean = s / math.sqrt(n_paths)
        assert abs(float(path[i].mean() - m * x0)) < 5 * se_mean + 2e-3 * abs(m * x0)
        # Relative SE of a sample std is 1/sqrt(2n) = 0.5%; Euler's bias is below 1%.
        assert float(path[i].std() / s) == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("name", list(SDES))
def test_marginal_solves_moment_odes(name):
    """d log m / dt = f(t) and d s^2 / dt = 2 f(t) s^2 + g(t)^2, checked by autodiff."""
    sde = SDES[name]
    for t in (1e-3, 0.1, 0.5, 0.95):
        dlogm = jax.grad(lambda t: jnp.log(sde.marginal(t)[0]))(t)
        dvar = jax.grad(lambda t: sde.marginal(t)[1] ** 2)(t)
        var = sde.marginal(t)[1] ** 2
        expected = 2 * sde.drift_coeff(t) * var + sde.diffusion(t) ** 2
        assert float(dlogm) == pytest.approx(float(sde.drift_coeff(t)), rel=1e-4, abs=1e-6)
        assert float(dvar) == pytest.approx(float(expected), rel=1e-3)


def test_subvp_std_is_one_minus_exp():
    """The subVP std is 1 - exp(-B), not sqrt(1 - exp(-B)) (the variance is its square)."""
    sde = sgm.SubVPSDE(beta_min=0.1, beta_max=20.0)
    t = 0.3
    big_b = 0.1 * t + 0.5 * t**2 * (20.0 - 0.1)
    m, s = sde.marginal(t)
    assert float(s) == pytest.approx(1 - math.exp(-big_b), rel=1e-6)
    assert float(m) == pytest.approx(math.exp(-0.5 * big_b), rel=1e-6)


@pytest.mark.parametrize("name", list(SDES))
def test_small_t_keeps_float32_precision(name):
    """expm1/log1p forms: s(t) at t = 1e-6 in float32 matches a float64 evaluation."""
    sde = SDES[name]
    t = 1e-6
    if name == "ve":
        exact = 0.01 * math.sqrt(math.expm1(2 * t * math.log(10.0 / 0.01)))
    elif name == "vp_cosine":
        f = lambda u: math.cos(0.5 * math.pi * (u + 0.008) / 1.008) ** 2  # noqa: E731
        big_b = -math.log(f(t) / f(0.0))
        exact = math.sqrt(-math.expm1(-big_b))
    else:
        big_b = 0.1 * t + 0.5 * t**2 * 19.9
        exact = -math.expm1(-big_b) if name == "subvp" else math.sqrt(-math.expm1(-big_b))
    s = sde.marginal(jnp.float32(t))[1]
    assert s.dtype == jnp.float32
    assert float(s) == pytest.approx(exact, rel=2e-4)


def test_cosine_schedule_matches_nichol_dhariwal():
    sde = sgm.VPSDE(schedule="cosine", beta_max=20.0)
    f = lambda u: math.cos(0.5 * math.pi * (u + 0.008) / 1.008) ** 2  # noqa: E731
    for t in (0.01, 0.3, 0.6, 0.85):
        alpha_bar = f(t) / f(0.0)
        assert float(sde.marginal(t)[0] ** 2) == pytest.approx(alpha_bar, rel=1e-4)
    # beta is capped at beta_max near t = 1 (where the cosine schedule's beta diverges).
    assert float(sde.diffusion(0.99) ** 2) == pytest.approx(20.0, rel=1e-5)
    assert float(sde.diffusion(0.5) ** 2) < 20.0


@pytest.mark.parametrize("name", list(SDES))
def test_transition_composes_with_marginal(name):
    sde = SDES[name]
    s_time, t_time = 0.2, 0.7
    a, b = sde.transition(s_time, t_time)
    ms, ss = sde.marginal(s_time)
    mt, st = sde.marginal(t_time)
    assert float(a * ms) == pytest.approx(float(mt), rel=1e-5)
    assert float(a**2 * ss**2 + b**2) == pytest.approx(float(st**2), rel=1e-4)


@pytest.mark.parametrize("name", list(SDES))
def test_prior_matches_marginal_at_t1(name):
    sde = SDES[name]
    x = sde.prior_sample(jr.key(0), (20_000,))
    assert float(x.std()) == pytest.approx(sde.prior_std(), rel=0.02)
    # N(0, s^2) log-density, summed over the example.
    s = sde.prior_std()
    v = jnp.array([0.3, -1.2])
    expected = float(jnp.sum(-0.5 * v**2 / s**2 - 0.5 * math.log(2 * math.pi * s**2)))
    assert float(sde.prior_log_prob(v)) == pytest.approx(expected, rel=1e-6)


def test_reverse_and_ode_drifts_derive_from_score():
    sde = sgm.VPSDE()
    score = lambda t, x: -x  # noqa: E731
    t, x = 0.4, jnp.array([1.0, -2.0])
    g2 = sde.diffusion(t) ** 2
    np.testing.assert_allclose(sde.reverse_drift(score, t, x), sde.drift(t, x) + g2 * x)
    np.testing.assert_allclose(sde.ode_drift(score, t, x), sde.drift(t, x) + 0.5 * g2 * x)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="schedule"):
        sgm.VPSDE(schedule="quadratic")
    with pytest.raises(ValueError, match="beta_min < beta_max"):
        sgm.VPSDE(beta_min=5.0, beta_max=1.0)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        sgm.VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="t0 < t1"):
        sgm.SubVPSDE(t0=0.5, t1=0.1)
    with pytest.raises(ValueError, match="scalar"):
        sgm.VPSDE().marginal(jnp.ones(3))
    with pytest.raises(ValueError, match=r"t must lie in \[0, t1"):
        sgm.VPSDE().marginal(1.5)
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"t must lie in \[0, t1"):
        eqx.filter_jit(sgm.VESDE().diffusion)(-0.1)


CLOSED_FORM_INVERSES = {
    **SDES,
    "subvp_cosine": sgm.SubVPSDE(schedule="cosine"),
    "vp_beta_min_0": sgm.VPSDE(beta_min=0.0),
    "ve_default": sgm.VESDE(),
}


@pytest.mark.parametrize("name", list(CLOSED_FORM_INVERSES))
def test_time_at_log_snr_inverts_log_snr(name):
    """The closed-form inverse returns t to float32 precision from 1e-6 to t1 (float32: 4 of
    its last bits), where the generic bisection of `AbstractSDE` is as accurate."""
    sde = CLOSED_FORM_INVERSES[name]
    ts = jnp.array([1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9, 0.99, 1.0])
    lam = jax.vmap(sde.log_snr)(ts)
    assert bool(jnp.all(jnp.diff(lam) < 0))
    closed = jax.vmap(sde.time_at_log_snr)(lam)
    bisected = jax.vmap(lambda lam: sgm.AbstractSDE.time_at_log_snr(sde, lam))(lam)
    np.testing.assert_allclose(closed, ts, rtol=2e-6)
    np.testing.assert_allclose(bisected, ts, rtol=4e-6)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_log_snr_and_denoiser_match_closed_forms(name):
    """`log_snr = log(m^2 / s^2)`; Tweedie's denoiser of a Gaussian N(mu, v I) at x is the
    posterior mean `mu + m v (x - m mu) / (m^2 v + s^2)`."""
    sde = SDES[name]
    mu, v = jnp.array([0.3, -0.2]), 0.4
    g = sgm.Gaussian(mu, jnp.full(2, v))
    x = jnp.array([0.5, 1.5])
    for t in (1e-3, 0.3, 1.0):
        m, s = sde.marginal(t)
        assert float(sde.log_snr(t)) == pytest.approx(float(jnp.log(m**2 / s**2)), rel=1e-5)
        expected = mu + m * v * (x - m * mu) / (m**2 * v + s**2)
        np.testing.assert_allclose(sde.denoise(g.score(sde), t, x), expected, rtol=1e-4)


def test_noise_conditioning_is_an_sde_method():
    """`t` for VP and subVP, `log s(t)` for VE (whose noise spans decades)."""
    assert float(SDES["vp"].noise_conditioning(0.25)) == 0.25
    assert float(SDES["subvp"].noise_conditioning(0.25)) == 0.25
    ve = SDES["ve"]
    assert float(ve.noise_conditioning(0.25)) == pytest.approx(float(jnp.log(ve.marginal(0.25)[1])))
