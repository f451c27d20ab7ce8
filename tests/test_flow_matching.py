"""Flow-matching paths, the velocity parametrisation, the flow-matching loss and the minibatch
OT coupling, against closed forms."""

import itertools
import math

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import TinyNet, exact_model, four_gaussians, rotated_gaussian

import sgm
from sgm._coupling import _sq_cost
from sgm._losses import dsm_weight, model_velocity
from sgm._paths import prior_mismatch_nats

PATHS = {
    "rectified": sgm.RectifiedFlow(),
    "trigonometric": sgm.VPSDE(schedule="trigonometric", t1=0.995),
}
CLOSED = {  # (m, s, m', s') of each path
    "rectified": lambda t: (1 - t, t, -1.0, 1.0),
    "trigonometric": lambda t: (
        math.cos(math.pi * t / 2),
        math.sin(math.pi * t / 2),
        -math.pi / 2 * math.sin(math.pi * t / 2),
        math.pi / 2 * math.cos(math.pi * t / 2),
    ),
}
TIMES = [1e-4, 0.1, 0.5, 0.9, 0.99]


@pytest.mark.parametrize("path", list(PATHS))
def test_marginals_and_sde_coefficients_match_closed_form(path):
    """`(m, s, m', s')` are the interpolant's; the SDE's `f = m'/m` and
    `g^2 = (s^2)' - 2 f s^2` (Kingma et al. 2021, appendix A.1); the log-SNR inverts."""
    sde = PATHS[path]
    for t in TIMES:
        m, s, dm, ds = CLOSED[path](t)
        np.testing.assert_allclose(sde.marginal(t), (m, s), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(sde.marginal_derivative(t), (dm, ds), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(sde.drift_coeff(t), dm / m, rtol=1e-4)
        np.testing.assert_allclose(sde.diffusion(t) ** 2, 2 * s * ds - 2 * dm / m * s**2, rtol=1e-4)
        np.testing.assert_allclose(sde.time_at_log_snr(sde.log_snr(t)), t, rtol=1e-4, atol=1e-6)


def test_trigonometric_is_the_cosine_schedule_without_offset_and_cap():
    """The cosine VP schedule (offset 0.008, beta capped at 20) is close to, not equal to, the
    trigonometric interpolant: m differs by up to a few 1e-2."""
    cos, trig = sgm.VPSDE(schedule="cosine"), PATHS["trigonometric"]
    gap = max(abs(float(cos.marginal(t)[0] - trig.marginal(t)[0])) for t in TIMES[:-1])
    assert 1e-3 < gap < 0.1, gap


@pytest.mark.parametrize(
    "path", ["rectified", pytest.param("trigonometric", marks=pytest.mark.slow)]
)
def test_velocity_is_the_probability_flow_drift(path):
    """On Gaussian data the exact velocity `E[m' x0 + s' eps | x_t]` (closed form by Gaussian
    conditioning) equals the probability-flow drift `f x - g^2 score / 2`; a velocity-predicting
    `ScoreModel` whose net returns it gives the exact score."""
    sde, g = PATHS[path], rotated_gaussian(d=3)
    cov = g.cov

    class ExactVelocity(sgm.nets.MLP.__base__):  # an eqx.Module
        def __call__(self, c, x, *, y=None, key=None):
            t = sde.time_at_log_snr(-8 * c)  # c = log(s / m) / 4
            m, s = sde.marginal(t)
            return velocity(t, x * jnp.sqrt(m**2 + s**2))

    def velocity(t, x):
        m, s = sde.marginal(t)
        dm, ds = sde.marginal_derivative(t)
        prec = jnp.linalg.inv(m**2 * cov + s**2 * jnp.eye(3))
        r = x - m * g.mean
        e_x0 = g.mean + m * cov @ prec @ r
        e_eps = s * prec @ r
        return dm * e_x0 + ds * e_eps

    model = sgm.ScoreModel(ExactVelocity(), sde, preconditioning=sgm.VelocityPrediction())
    x = g.sample(jr.key(0), 5)

    def check(t):
        v = jax.vmap(lambda x: velocity(t, x))(x)
        drift = jax.vmap(lambda x: sde.ode_drift(g.score(sde), t, x))(x)
        np.testing.assert_allclose(drift, v, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(
            jax.vmap(lambda x: model(t, x))(x),
            jax.vmap(lambda x: g.score(sde)(t, x))(x),
            rtol=1e-4,
            atol=1e-4,
        )
        np.testing.assert_allclose(jax.vmap(lambda x: model_velocity(model, t, x))(x), v, rtol=1e-5)

    for t in [0.05, 0.5, 0.95]:
        check(t)


def test_prior_mismatch_in_closed_form():
    """KL(p_t1 || N(0, I)) at the default t1 = 0.995: about delta^2 (d + |mu|^2 / 2) for
    unit-variance data; the check compares against a Monte Carlo estimate of the KL."""
    sde, d = PATHS["rectified"], 16
    mu = 0.5 * jnp.ones(d)
    kl = prior_mismatch_nats(sde, mu, jnp.eye(d))
    np.testing.assert_allclose(kl, 2.5e-5 * (d + 0.5 * float(mu @ mu)), rtol=0.05)
    g = sgm.Gaussian(mu, jnp.ones(d))
    x = g.sample(jr.key(0), 50_000) * sde.marginal(sde.t1)[0] + sde.marginal(sde.t1)[1] * (
        jr.normal(jr.key(1), (50_000, d))
    )
    mc = jax.vmap(lambda x: g.log_prob(x, sde=sde, t=sde.t1) - sde.prior_log_prob(x))(x)
    assert abs(float(mc.mean()) - kl) < 5 * float(mc.std()) / math.sqrt(x.shape[0]) + 1e-6


def pushforward_log_prob(g, sde, x):
    flow = lambda x: g.flow(sde, sde.t0, sde.t1, x)  # noqa: E731
    return jax.vmap(lambda x: sde.prior_log_prob(flow(x)))(x) + g.flow_log_det(sde, sde.t0, sde.t1)


@pytest.mark.parametrize(
    ("path", "rotated"),
    [
        ("rectified", True),
        pytest.param("rectified", False, marks=pytest.mark.slow),
        pytest.param("trigonometric", True, marks=pytest.mark.slow),
        pytest.param("trigonometric", False, marks=pytest.mark.slow),
    ],
)
def test_16d_log_likelihood_within_2e3_nats(path, rotated):
    """Exact trace, default tolerances: within 2e-3 nats of the model's closed-form density
    (the prior at the exact flow map's image plus its log-determinant)."""
    sde = PATHS[path]
    if rotated:
        g = rotated_gaussian(d=16)
    else:
        g = sgm.Gaussian(0.5 * jnp.sin(jnp.arange(16.0)), jnp.linspace(0.05, 2.0, 16))
    x = g.sample(jr.key(0), 4)
    lp = sgm.log_likelihood(g.score(sde), sde, x, trace=sgm.Exact())
    np.testing.assert_allclose(lp, pushforward_log_prob(g, sde, x), atol=2e-3, rtol=0)


@pytest.mark.slow
def test_bits_per_dim_accepts_the_paths():
    sde, g = PATHS["rectified"], sgm.Gaussian(jnp.zeros(3), jnp.full(3, 0.2))
    images = jnp.array([[100, 128, 150], [30, 200, 90]])
    bpd = sgm.bits_per_dim(g.score(sde), sde, images, key=jr.key(0))
    assert bpd.shape == (2,) and bool(jnp.all(jnp.isfinite(bpd)))


SAMPLERS = {
    "euler_maruyama": sgm.EulerMaruyama(),
    "predictor_corrector": sgm.PredictorCorrector(),
    "ode": sgm.ProbabilityFlowODE(),
    "reverse_sde": sgm.ReverseSDESolver(),
    "dpm_solver_19": sgm.DPMSolver(steps=19),
    "heun_34": sgm.HeunSampler(steps=18),
    "unipc_20": sgm.UniPC(steps=20),
    "euler_ode_100": sgm.ProbabilityFlowODE(solver=diffrax.Euler(), steps=100),
    "ode_heun_19": sgm.ProbabilityFlowODE(solver=diffrax.Heun(), steps=9, sigma_end=0.01),
}
FAST = {("rectified", "dpm_solver_19"), ("rectified", "ode_heun_19")}


@pytest.fixture(scope="module")
def mixture_reference():
    mix = four_gaussians()
    data = mix.sample(jr.key(123), 20_000)
    return mix, float(jax.vmap(mix.log_prob)(data).mean())


@pytest.mark.parametrize(
    ("path", "sampler"),
    [
        p if p in FAST else pytest.param(*p, marks=pytest.mark.slow)
        for p in itertools.product(PATHS, SAMPLERS)
    ],
)
def test_samplers_reproduce_the_mixture(path, sampler, mixture_reference):
    """Exact score of the four-Gaussian mixture: mode weights within 0.03 and the mean
    log-density of 4000 samples under the mixture within TOL nats of the data's."""
    mix, ref = mixture_reference
    sde = PATHS[path]
    x, nfe = sgm.sample(
        mix.score(sde), sde, SAMPLERS[sampler], key=jr.key(0), shape=(4000, 2), return_nfe=True
    )
    if sampler.endswith(("_19", "_20")):
        assert int(nfe.max()) <= 20
    weights = jnp.bincount(jax.vmap(mix.assign)(x), length=4) / 4000
    np.testing.assert_allclose(weights, mix.weights, atol=0.03)
    lp = float(jax.vmap(mix.log_prob)(x).mean())
    assert abs(lp - ref) < TOL[sampler], (lp, ref)


TOL = {s: 0.06 for s in SAMPLERS} | {"heun_34": 0.15, "unipc_20": 0.15, "ode_heun_19": 0.1}


@pytest.mark.slow
def test_inpainting_accepts_the_paths():
    """A correlated 2-D Gaussian (rho = 0.8), the first coordinate known (= 1): SMC inpainting
    under rectified flow draws the second from its conditional N(0.8, 0.36)."""
    sde = PATHS["rectified"]
    g = sgm.Gaussian(jnp.zeros(2), jnp.array([[1.0, 0.8], [0.8, 1.0]]))
    x = jnp.tile(jnp.array([1.0, 0.0]), (1000, 1))
    mask = jnp.array([True, False])
    out = sgm.inpaint(
        g.score(sde), sde, sgm.EulerMaruyama(steps=200), key=jr.key(1), x=x, mask=mask
    )
    np.testing.assert_allclose(out[:, 0], 1.0)
    np.testing.assert_allclose(out[:, 1].mean(), 0.8, atol=0.06)
    np.testing.assert_allclose(out[:, 1].var(), 0.36, atol=0.06)


def test_flow_matching_loss_is_a_weighted_dsm_loss_per_time():
    """For any model, at every `t`, on the same `(x0, eps)`: FM loss = w(t) DSM(sigma2) loss
    with `w = ((m s' - m' s) / m)^2` (`1 / (1 - t)^2` for rectified flow)."""
    x0 = jr.normal(jr.key(0), (3,))
    key = jr.key(1)
    noise = jr.normal(jr.split(key, 3)[0], x0.shape)  # the draw DSMLoss makes from its key
    fm, dsm = sgm.FlowMatchingLoss(), sgm.DSMLoss(weighting="sigma2")
    for path, precond in itertools.product(
        PATHS, [sgm.NoisePrediction(), sgm.VelocityPrediction()]
    ):
        sde = PATHS[path]
        model = sgm.ScoreModel(TinyNet(3, key=jr.key(2)), sde, preconditioning=precond)
        for t in [0.01, 0.3, 0.7, 0.99]:
            t = jnp.asarray(t)
            lhs = fm(model, t, x0, noise, key=jr.key(5))
            rhs = dsm_weight(sde, t) * dsm(model, t, jnp.ones(()), x0, key=key)
            np.testing.assert_allclose(lhs, rhs, rtol=2e-4)
    np.testing.assert_allclose(dsm_weight(PATHS["rectified"], 0.75), 16.0, rtol=1e-6)


@pytest.mark.parametrize(
    "path", ["trigonometric", pytest.param("rectified", marks=pytest.mark.slow)]
)
def test_flow_matching_loss_of_the_exact_model_in_closed_form(path):
    """With the exact velocity of Gaussian data the expected FM loss at `t` is
    `w(t) tr Cov(eps | x_t) / d = w(t) (1 - s^2 tr (m^2 Sigma + s^2 I)^-1 / d)`."""
    sde, g = PATHS[path], rotated_gaussian(d=3)
    model = exact_model(g, sde)
    x0 = g.sample(jr.key(0), 5000)
    noise = jr.normal(jr.key(1), x0.shape)
    loss = sgm.FlowMatchingLoss()
    for t in [0.2, 0.6]:
        tt = jnp.full(x0.shape[0], t)
        per = jax.vmap(lambda t, x, e: loss(model, t, x, e, key=jr.key(0)))(tt, x0, noise)
        m, s = sde.marginal(t)
        prec = jnp.linalg.inv(m**2 * g.cov + s**2 * jnp.eye(3))
        expected = dsm_weight(sde, t) * (1 - s**2 * jnp.trace(prec) / 3)
        se = float(per.std()) / math.sqrt(per.size)
        assert abs(float(per.mean()) - float(expected)) < 4 * se, (per.mean(), expected, se)


def test_logit_normal_times():
    """`t = sigmoid(N(0, 1))` on (0, 1): the median is 1/2 and P(t < sigmoid(1)) = Phi(1)."""
    sde = PATHS["rectified"]
    u = jr.uniform(jr.key(0), (50_000,))
    t = sgm.FlowMatchingLoss(time_density="logit_normal").times(sde, u)
    assert float(t.min()) >= 1e-5 and float(t.max()) <= sde.t1
    np.testing.assert_allclose(jnp.median(t), 0.5, atol=0.01)
    np.testing.assert_allclose(jnp.mean(t < jax.nn.sigmoid(1.0)), 0.8413, atol=0.005)


def test_exact_ot_coupling_is_the_optimal_permutation():
    """Against brute force over all 720 permutations of 6 points."""
    x0, noise = jr.normal(jr.key(0), (6, 2)), jr.normal(jr.key(1), (6, 2))
    perm = jax.jit(lambda a, b: sgm.ExactOTCoupling().pair(a, b, key=jr.key(0)))(x0, noise)
    cost = np.asarray(_sq_cost(x0, noise))
    best = min(itertools.permutations(range(6)), key=lambda p: sum(cost[i, p[i]] for i in range(6)))
    np.testing.assert_array_equal(np.asarray(perm), np.array(best))


def test_sinkhorn_plan_has_uniform_marginals_and_approaches_the_exact_plan():
    x0, noise = jr.normal(jr.key(0), (32, 2)), jr.normal(jr.key(1), (32, 2))
    plan = jnp.exp(sgm.SinkhornCoupling(epsilon=0.01, iterations=500).log_plan(x0, noise))
    np.testing.assert_allclose(plan.sum(0), 1 / 32, rtol=1e-3)
    np.testing.assert_allclose(plan.sum(1), 1 / 32, rtol=1e-2)
    exact = sgm.ExactOTCoupling().pair(x0, noise, key=jr.key(0))
    cost = _sq_cost(x0, noise)
    exact_cost = float(cost[jnp.arange(32), exact].mean())
    entropic = float(jnp.sum(plan * cost))
    assert exact_cost <= entropic < 1.05 * exact_cost, (exact_cost, entropic)
    indep = float(jnp.mean(jnp.diag(cost)))
    assert exact_cost < 0.5 * indep


def test_sinkhorn_defaults_draw_pairs_near_the_exact_plans_cost():
    x0, noise = jr.normal(jr.key(0), (256, 2)), jr.normal(jr.key(1), (256, 2))
    coupling = sgm.SinkhornCoupling()
    plan = jnp.exp(coupling.log_plan(x0, noise))
    np.testing.assert_allclose(256 * plan.sum(1), 1.0, atol=0.03)
    cost = _sq_cost(x0, noise)
    exact = sgm.ExactOTCoupling().pair(x0, noise, key=jr.key(0))
    exact_cost = float(cost[jnp.arange(256), exact].mean())
    drawn = coupling.pair(x0, noise, key=jr.key(2))
    drawn_cost = float(cost[jnp.arange(256), drawn].mean())
    assert exact_cost < drawn_cost < 1.3 * exact_cost, (exact_cost, drawn_cost)


@pytest.mark.parametrize(
    "coupling",
    [
        sgm.IndependentCoupling(),
        pytest.param(sgm.ExactOTCoupling(), marks=pytest.mark.slow),
        pytest.param(sgm.SinkhornCoupling(), marks=pytest.mark.slow),
    ],
    ids=["independent", "exact_ot", "sinkhorn"],
)
def test_train_with_flow_matching(coupling, tmp_path):
    """A few steps through `sgm.train` with each coupling lower the loss; the model samples."""
    data = four_gaussians().sample(jr.key(0), 512)
    sde = PATHS["rectified"]
    model = sgm.ScoreModel(
        TinyNet(2, key=jr.key(1), width=64), sde, preconditioning=sgm.VelocityPrediction()
    )
    loss = sgm.FlowMatchingLoss(coupling=coupling)
    before = float(loss.batch_loss(model, data[:256], key=jr.key(2)))
    opt = sgm.Adam(lr=3e-3, warmup=10)
    trained = sgm.train(
        model, sde, data, opt, key=jr.key(3), steps=200, batch_size=64, loss=loss, ema_decay=0.9
    )
    after = float(loss.batch_loss(trained, data[:256], key=jr.key(2)))
    assert after < 0.8 * before, (before, after)
    x = sgm.sample(trained, sde, sgm.DPMSolver(steps=16), key=jr.key(4), shape=(16, 2))
    assert bool(jnp.all(jnp.isfinite(x)))


def test_experiment_config_round_trips():
    from experiments.moons_fm import EXPERIMENT
    from sgm.experiment import from_json, to_json

    assert from_json(to_json(EXPERIMENT)) == EXPERIMENT


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="t1 < 1"):
        sgm.RectifiedFlow(t1=1.0)
    with pytest.raises(ValueError, match="t1 < 1"):
        sgm.VPSDE(schedule="trigonometric")
    with pytest.raises(ValueError, match="time_density"):
        sgm.FlowMatchingLoss(time_density="lognormal")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="coupling"):
        sgm.FlowMatchingLoss(coupling="ot")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="epsilon"):
        sgm.SinkhornCoupling(epsilon=0.0)
