"""The learned noise schedule (`LearnedVPSDE`) against closed forms: its SDE matches its
marginals, a Gaussian's likelihood does not depend on the schedule, every sampler accepts it,
and training it lowers the variance of the bound's estimate without moving its mean."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import four_gaussians, rotated_gaussian

import sgm
from sgm._losses import variance_objective
from sgm.experiment import from_json, to_json


def random_schedule(seed: int, hidden: int = 16) -> sgm.LearnedVPSDE:
    """A schedule far from the initial one (knees anywhere, weights of several scales)."""
    k1, k2, k3 = jr.split(jr.key(seed), 3)
    return sgm.LearnedVPSDE(
        hidden=hidden,
        raw_a=2 * jr.normal(k1, (hidden,)),
        raw_w=2 + 2 * jr.normal(k2, (hidden,)),
        b=3 * jr.normal(k3, (hidden,)),
    )


SCHEDULES = {"initial": sgm.LearnedVPSDE(hidden=16), "random": random_schedule(0)}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_sde_matches_its_marginals(name):
    """`dm/dt = f m` and `ds^2/dt = 2 f s^2 + g^2` (the moments of a linear SDE), the log-SNR
    is monotone with its end points where they were set, the transition composes the
    marginals, and the inverse of the log-SNR is one."""
    sde = SCHEDULES[name]
    ts = jnp.linspace(sde.t0, sde.t1, 41)
    for t in ts:
        m, s = sde.marginal(t)
        dm = jax.jvp(lambda t: sde.marginal(t)[0], (t,), (jnp.ones(()),))[1]
        dv = jax.jvp(lambda t: sde.marginal(t)[1] ** 2, (t,), (jnp.ones(()),))[1]
        f, g = sde.drift_coeff(t), sde.diffusion(t)
        np.testing.assert_allclose(dm, f * m, rtol=1e-4, atol=1e-6)
        # near t1 the two terms cancel to 1e-4 of their size: float32 rounding of each counts
        scale = float(abs(2 * f * s**2) + g**2)
        np.testing.assert_allclose(dv, 2 * f * s**2 + g**2, rtol=1e-4, atol=1e-6 * scale)
    lam = jax.vmap(sde.log_snr)(ts)
    assert bool(jnp.all(jnp.diff(lam) < 0))
    np.testing.assert_allclose([lam[0], lam[-1]], [sde.log_snr_max, sde.log_snr_min], atol=1e-4)
    a, b = sde.transition(0.2, 0.7)
    (ms, ss), (mt, st) = sde.marginal(0.2), sde.marginal(0.7)
    np.testing.assert_allclose([a, b**2], [mt / ms, st**2 - (mt / ms * ss) ** 2], rtol=1e-5)
    back = jax.vmap(sde.time_at_log_snr)(lam[1:-1])
    np.testing.assert_allclose(back, ts[1:-1], atol=1e-5)


def test_forward_sde_simulation_reaches_the_marginal():
    """Euler-Maruyama on `dx = f x dt + g dw` from a point mass at `x0 = 1.5` (20,000 paths,
    2,000 steps) ends at mean `m(t) x0` and variance `s(t)^2` of the schedule, within 4
    standard errors and the O(dt) bias."""
    sde, x0, n, steps, t_end = SCHEDULES["random"], 1.5, 20_000, 2_000, 0.6
    dt = (t_end - sde.t0) / steps

    def step(x, i):
        t = sde.t0 + i * dt
        dw = jr.normal(jr.fold_in(jr.key(0), i), (n,)) * math.sqrt(dt)
        return x + sde.drift_coeff(t) * x * dt + sde.diffusion(t) * dw, None

    x, _ = jax.lax.scan(step, jnp.full((n,), x0), jnp.arange(steps))
    m, s = sde.marginal(t_end)
    assert abs(float(x.mean()) - float(m) * x0) < 4 * float(s) / math.sqrt(n) + 2e-3
    assert abs(float(x.var()) / float(s) ** 2 - 1) < 4 * math.sqrt(2 / n) + 2e-3


def test_gaussian_likelihood_does_not_depend_on_the_schedule():
    """A rotated 16-D Gaussian, exact score, exact trace: the log-likelihood is the closed
    form under the initial and a random schedule alike, and equals the VP SDE's with the same
    end points (the flow's end points fix it; only the path between them differs)."""
    g = rotated_gaussian(d=16)
    x = g.sample(jr.key(0), 4)
    vp = sgm.VPSDE()
    values = {}
    for name, sde in [*SCHEDULES.items(), ("vp", vp)]:
        values[name] = sgm.log_likelihood(g.score(sde), sde, x, trace=sgm.Exact())
        flow = jax.vmap(lambda x, sde=sde: g.flow(sde, sde.t0, sde.t1, x))(x)
        true = jax.vmap(sde.prior_log_prob)(flow) + g.flow_log_det(sde, sde.t0, sde.t1)
        np.testing.assert_allclose(values[name], true, atol=2e-3, rtol=0)
    np.testing.assert_allclose(values["initial"], values["random"], atol=2e-3, rtol=0)
    np.testing.assert_allclose(values["random"], values["vp"], atol=2e-3, rtol=0)


@pytest.mark.parametrize(
    "sampler",
    [
        sgm.EulerMaruyama(),
        sgm.PredictorCorrector(),
        sgm.ProbabilityFlowODE(),
        sgm.DPMSolver(steps=19),
        sgm.UniPC(steps=20),
        sgm.HeunSampler(steps=35),
    ],
    ids=["em", "pc", "ode", "dpm", "unipc", "heun"],
)
def test_every_sampler_accepts_it(sampler):
    """Under a random learned schedule with the exact score, each sampler reproduces the
    four-Gaussian mixture: mode weights within 0.03, mean log-density within 0.08 nats of the
    data's (Heun with 18 steps is -0.081 under the VP SDE and under any schedule alike: it
    steps in the noise level)."""
    mix, sde, n = four_gaussians(), SCHEDULES["random"], 4000
    x = sgm.sample(mix.score(sde), sde, sampler, key=jr.key(0), shape=(n, 2))
    weights = jnp.bincount(jax.vmap(mix.assign)(x), length=4) / n
    np.testing.assert_allclose(weights, mix.weights, atol=0.03)
    data_lp = float(jax.vmap(mix.log_prob)(mix.sample(jr.key(1), 50_000)).mean())
    assert abs(float(jax.vmap(mix.log_prob)(x).mean()) - data_lp) < 0.08


class GaussianDenoiser(eqx.Module):
    """The exact network of a diagonal Gaussian `N(mu, diag(var))` under `EDMPreconditioning`:
    a function of the noise level alone (`c_noise = log(sigma) / 4`), as VDM's invariance
    needs, and without parameters, so that training moves only the schedule."""

    mu: tuple = eqx.field(static=True)
    var: tuple = eqx.field(static=True)

    def __call__(self, c, z, *, y=None, key=None):
        mu, var = jnp.asarray(self.mu), jnp.asarray(self.var)
        sigma = jnp.exp(4 * c)
        norm = jnp.sqrt(sigma**2 + 1)
        eps = sigma * (z * norm - mu) / (var + sigma**2)  # x/m = z norm ~ N(mu, var + sigma^2)
        return sigma * z - norm * eps  # eps_hat = (sigma z - F) / norm


def expected_bound(var, lam_max, lam_min, span):
    """`E_t[gamma' mean_i E||eps_i - eps*_i||^2]` for the exact denoiser, `t` uniform on a
    window of length `span`: `E[(eps - eps*)^2] = v / (v + e^gamma)`, whose integral over
    `gamma` is `log(1 + v e^-gamma)` between the end points."""
    v = np.asarray(var)
    total = np.log1p(v * np.exp(lam_max)) - np.log1p(v * np.exp(lam_min))
    return float(total.mean()) / span


def bound_samples(model, loss, x, key):
    tkey, ekey = jr.split(key)
    t, w = loss.times(model.sde, jr.uniform(tkey, (len(x),)))
    keys = jr.split(ekey, len(x))
    return jax.vmap(lambda t, w, x, k: loss(model, t, w, x, key=k))(t, w, x, keys)


def test_variance_objective_differentiates_mean_and_square():
    """The network gets the gradient of the batch mean, the schedule that of the mean square."""
    sde = SCHEDULES["random"]
    model = sgm.ScoreModel(sgm.nets.MLP((2,), width=16, depth=2, key=jr.key(1)), sde)
    loss = sgm.DSMLoss(weighting="likelihood")
    x = jr.normal(jr.key(2), (32, 2))
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def per(p):
        return bound_samples(eqx.combine(p, static), loss, x, jr.key(3))

    got = jax.grad(lambda p: variance_objective(per, eqx.combine(p, static)))(params)
    of_mean = jax.grad(lambda p: jnp.mean(per(p)))(params)
    of_square = jax.grad(lambda p: jnp.mean(per(p) ** 2))(params)
    for a, b in zip(jax.tree.leaves(got.net), jax.tree.leaves(of_mean.net), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree.leaves(got.sde), jax.tree.leaves(of_square.sde), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_training_the_schedule_lowers_the_variance_and_keeps_the_bound():
    """With the exact denoiser of a Gaussian (a function of the noise level only) the bound's
    expectation is the closed form whatever the schedule; `sgm.train` moves only the
    schedule, and the variance of the estimate falls (measured: std per example 14.7 -> 9.8
    after 400 steps)."""
    mu, var = (0.5, -0.3, 0.0, 1.0), (0.3, 0.05, 1e-3, 1.0)
    g = sgm.Gaussian(jnp.asarray(mu), jnp.asarray(var))
    sde = sgm.LearnedVPSDE(hidden=16)
    model = sgm.ScoreModel(GaussianDenoiser(mu, var), sde)
    loss = sgm.DSMLoss(weighting="likelihood")
    data = np.asarray(g.sample(jr.key(0), 4096))
    trained = sgm.train(
        model,
        sde,
        data,
        sgm.Adam(3e-2, warmup=0),
        steps=400,
        key=jr.key(1),
        batch_size=256,
        loss=loss,
        ema_decay=0.0,
        monitor=sgm.Monitor(progress=False),
    )
    assert not np.allclose(trained.sde.raw_a, sde.raw_a)
    x = g.sample(jr.key(2), 65_536)
    span = sde.t1 - max(loss.eps, sde.t0)
    expected = expected_bound(var, sde.log_snr_max, sde.log_snr_min, span)
    stds = []
    for m in (model, trained):
        per = bound_samples(m, loss, x, jr.key(3))
        stderr = float(per.std()) / math.sqrt(len(per))
        assert abs(float(per.mean()) - expected) < 4 * stderr, (float(per.mean()), expected)
        stds.append(float(per.std()))
    assert stds[1] < 0.8 * stds[0], stds


def test_losses_other_than_the_bound_are_refused():
    model = sgm.ScoreModel(
        sgm.nets.MLP((2,), width=8, depth=1, key=jr.key(0)), sgm.LearnedVPSDE(hidden=4)
    )
    x = jnp.zeros((4, 2))
    for loss in (
        sgm.DSMLoss(),
        sgm.DSMLoss(weighting="sigma2"),
        sgm.DSMLoss(weighting="likelihood", importance_sampling=True),
    ):
        with pytest.raises(ValueError, match="learned noise schedule"):
            loss.batch_loss(model, x, key=jr.key(0))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="log_snr_min < log_snr_max"):
        sgm.LearnedVPSDE(log_snr_max=-1.0, log_snr_min=2.0)
    with pytest.raises(ValueError, match="hidden"):
        sgm.LearnedVPSDE(hidden=0)
    with pytest.raises(ValueError, match="0 < t0 < t1"):
        sgm.LearnedVPSDE(t0=0.0)
    with pytest.raises(ValueError, match="shape"):
        sgm.LearnedVPSDE(hidden=4, b=jnp.zeros(3))


def test_configuration_holds_the_fields_not_the_arrays():
    """The configuration rebuilds the initial schedule; the trained one comes from the model."""
    sde = random_schedule(1, hidden=8)
    data = to_json(sde)
    assert set(data) == {"__class__", "log_snr_max", "log_snr_min", "hidden", "t0", "t1"}
    back = from_json(data)
    assert isinstance(back, sgm.LearnedVPSDE) and back.hidden == 8
    np.testing.assert_array_equal(back.raw_a, sgm.LearnedVPSDE(hidden=8).raw_a)
