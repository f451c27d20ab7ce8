"""Post-hoc EMA (Karras et al. 2024, section 3 and appendix C): the power-function profiles
and their inner products against numerical integration, the tracked average against its
closed-form weights, the reconstruction of a tracked length from two others on a synthetic
trajectory and on a trained MLP, resume, and the errors."""

import hashlib
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from helpers import TinyNet, four_gaussians

import sgm
from sgm._training._phema import (
    SIGMA_REL_MAX,
    gamma_to_sigma_rel,
    one_minus_beta,
    posthoc_weights,
    profile_inner,
    sigma_rel_to_gamma,
    step_weights,
)
from sgm._training._posthoc import PowerEMAs, init_averages, update_averages
from sgm._training._state import init_state

SDE = sgm.VPSDE()
QUIET = sgm.Monitor(progress=False)
LENGTHS = (0.01, 0.03, 0.05, 0.1, 0.2, 0.25, 0.29, 0.3)


def gauss_legendre(f, a, b, n=4000, pieces=64):
    """`integral_a^b f` by Gauss-Legendre on `pieces` equal intervals (exact to float64 for
    the smooth profiles here)."""
    nodes, weights = np.polynomial.legendre.leggauss(n // pieces)
    edges = np.linspace(a, b, pieces + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        x = (hi - lo) / 2 * nodes + (hi + lo) / 2
        total += (hi - lo) / 2 * np.sum(weights * f(x))
    return total


def profile(t, gamma):
    return lambda tau: np.where(tau <= t, (gamma + 1) * tau**gamma / t ** (gamma + 1), 0.0)


@pytest.mark.parametrize("sigma_rel", LENGTHS)
def test_sigma_rel_gamma_round_trip_and_the_profiles_relative_std(sigma_rel):
    gamma = sigma_rel_to_gamma(sigma_rel)
    assert gamma_to_sigma_rel(gamma) == pytest.approx(sigma_rel, rel=1e-12)
    # the profile at t = 1 is a density whose standard deviation is sigma_rel (eq. 3),
    # integrated in log tau (tau**gamma is singular at 0 where gamma < 0)
    p = profile(1.0, gamma)
    moment = lambda n: gauss_legendre(lambda s: np.exp(s) ** (n + 1) * p(np.exp(s)), -60.0, 0.0)  # noqa: E731
    mass, mean, second = moment(0), moment(1), moment(2)
    assert mass == pytest.approx(1.0, abs=1e-10)
    assert math.sqrt(second - mean**2) == pytest.approx(sigma_rel, rel=1e-8)


def test_longest_profile_and_out_of_range_lengths():
    # the largest sigma_rel of a power function: sigma_rel(gamma) is smaller on either side
    assert SIGMA_REL_MAX == pytest.approx(0.30028, abs=1e-5)
    for g in np.linspace(-0.9, 50, 2001):
        assert gamma_to_sigma_rel(g) <= SIGMA_REL_MAX + 1e-15
    assert gamma_to_sigma_rel(sigma_rel_to_gamma(SIGMA_REL_MAX)) == pytest.approx(SIGMA_REL_MAX)
    for bad in (0.0, -0.1, 0.31):
        with pytest.raises(ValueError, match=r"sigma_rel must be in \(0, 0.3003\]"):
            sigma_rel_to_gamma(bad)


@pytest.mark.parametrize(
    "t_a, s_a, t_b, s_b", [(100, 0.05, 100, 0.1), (40, 0.05, 100, 0.2), (100, 0.02, 30, 0.15)]
)
def test_inner_products_of_profiles_are_their_integrals(t_a, s_a, t_b, s_b):
    g_a, g_b = sigma_rel_to_gamma(s_a), sigma_rel_to_gamma(s_b)
    p_a, p_b = profile(t_a, g_a), profile(t_b, g_b)
    numeric = gauss_legendre(lambda x: p_a(x) * p_b(x), 0.0, min(t_a, t_b))
    assert float(profile_inner(t_a, g_a, t_b, g_b)) == pytest.approx(numeric, rel=1e-9)
    assert float(profile_inner(t_b, g_b, t_a, g_a)) == pytest.approx(numeric, rel=1e-9)


@pytest.mark.parametrize("sigma_rel", [0.05, 0.2])
def test_step_weights_are_the_products_of_the_betas(sigma_rel):
    gamma, t = sigma_rel_to_gamma(sigma_rel), 50
    beta = [(1 - 1 / k) ** (gamma + 1) for k in range(1, t + 1)]
    direct = [(1 - beta[k - 1]) * math.prod(beta[k:]) for k in range(1, t + 1)]
    np.testing.assert_allclose(step_weights(gamma, t), direct, rtol=1e-12, atol=1e-300)
    assert float(one_minus_beta(gamma, 1)) == 1.0  # the average starts at the first iterate
    # float32 keeps 1 - beta to its precision at a million steps
    exact = -math.expm1((gamma + 1) * math.log1p(-1e-6))
    assert float(one_minus_beta(gamma, 10**6)) == pytest.approx(exact, rel=1e-6)


def test_tracked_average_of_a_sequence_is_its_closed_form_average():
    """The jitted update run over T iterates in float32 equals the float64 average with the
    weights (k^(gamma+1) - (k-1)^(gamma+1)) / T^(gamma+1), to T float32 roundings."""
    T = 400
    rng = np.random.default_rng(0)
    theta = np.cumsum(rng.normal(size=(T, 3)), axis=0) + 5.0  # a drifting "parameter"
    gammas = tuple(sigma_rel_to_gamma(s) for s in (0.05, 0.2))
    emas = PowerEMAs((jnp.zeros(3), jnp.zeros(3)), gammas)
    step = jax.jit(lambda e, p, t: update_averages(e, p, t, jnp.bool_(True)))
    for k in range(T):
        emas = step(emas, jnp.asarray(theta[k], jnp.float32), jnp.int32(k + 1))
    for average, gamma in zip(emas.averages, gammas, strict=True):
        k = np.arange(T + 1, dtype=np.float64)
        w = np.diff(k ** (gamma + 1)) / T ** (gamma + 1)
        expected = w @ theta
        np.testing.assert_allclose(np.asarray(average), expected, rtol=T * 2**-23)
    # a skipped step (ok false) leaves the averages as they were
    same = update_averages(emas, jnp.full(3, 1e3), jnp.int32(T + 1), jnp.bool_(False))
    assert all(np.array_equal(a, b) for a, b in zip(same.averages, emas.averages, strict=True))


def test_reconstructing_a_stored_profile_returns_it():
    steps = np.arange(20, 301, 20)
    gammas = [sigma_rel_to_gamma(s) for s in (0.05, 0.1)]
    t_in, g_in = np.repeat(steps, 2), np.tile(gammas, len(steps))
    for index in (len(t_in) - 1, len(t_in) - 2, 13):  # the newest of each, and an older one
        x, error = posthoc_weights(t_in, g_in, t_in[index], g_in[index])
        np.testing.assert_allclose(x, np.eye(len(t_in))[index], atol=1e-6)
        assert error < 1e-6


def track(theta, lengths, every):
    """Power-function EMAs of `theta` (T, D) in float64 (eq. 4), with their snapshots every
    `every` steps: `{sigma_rel: [(step, average), ...]}`."""
    out = {s: [] for s in lengths}
    averages = {s: np.zeros(theta.shape[1]) for s in lengths}
    for k in range(1, len(theta) + 1):
        for s in lengths:
            w = 1 - (1 - 1 / k) ** (sigma_rel_to_gamma(s) + 1)
            averages[s] = averages[s] + w * (theta[k - 1] - averages[s])
            if k % every == 0:
                out[s].append((k, averages[s].copy()))
    return out


def test_reconstruction_from_two_other_lengths_matches_a_tracked_one_on_a_trajectory():
    """An SGD-like trajectory (a random start, a decaying drift to an optimum, noise): the
    EMA of length 0.10 rebuilt from snapshots of 0.05 and 0.15 is the tracked one."""
    rng = np.random.default_rng(1)
    T, D = 600, 64
    optimum = rng.normal(size=D)
    theta = np.empty((T, D))
    x = rng.normal(size=D) * 2
    for k in range(T):
        x = x + 0.02 * (optimum - x) + 0.05 * rng.normal(size=D)
        theta[k] = x
    snaps = track(theta, (0.05, 0.10, 0.15), every=20)
    sources = [(k, s, a) for s in (0.05, 0.15) for k, a in snaps[s]]
    t_in = [k for k, _, _ in sources]
    g_in = [sigma_rel_to_gamma(s) for _, s, _ in sources]
    weights, _ = posthoc_weights(t_in, g_in, T, sigma_rel_to_gamma(0.10))
    rebuilt = sum(w * a for w, (_, _, a) in zip(weights, sources, strict=True))
    direct = snaps[0.10][-1][1]
    error = np.linalg.norm(rebuilt - direct)
    assert error <= 1e-3 * np.linalg.norm(direct)
    # and it resolves the difference between the lengths, not just their common part
    spread = np.linalg.norm(snaps[0.05][-1][1] - snaps[0.15][-1][1])
    assert error <= 0.05 * spread


def tiny_model(seed=0, width=32):
    return sgm.ScoreModel(TinyNet(2, key=jr.key(seed), width=width), SDE)


def data(n=512):
    return np.asarray(four_gaussians().sample(jr.key(7), n))


def params(model):
    return [np.asarray(a) for a in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))]


def relative_error(a, b):
    num = math.sqrt(sum(float(np.sum((x - y) ** 2)) for x, y in zip(a, b, strict=True)))
    return num / math.sqrt(sum(float(np.sum(y**2)) for y in b))


KW = dict(batch_size=64, key=jr.key(1), monitor=QUIET, ema_decay=0.99)


def test_a_trained_mlp_reconstructs_a_tracked_length_from_two_others(tmp_path):
    option = sgm.PostHocEMA((0.05, 0.10, 0.15), snapshot_every=20, directory=tmp_path / "ema")
    returned = sgm.train(
        tiny_model(), SDE, data(), optax.adam(3e-3), steps=400, posthoc_ema=option, **KW
    )
    baseline = sgm.train(tiny_model(), SDE, data(), optax.adam(3e-3), steps=400, **KW)
    assert all(
        np.array_equal(a, b) for a, b in zip(params(returned), params(baseline), strict=True)
    )
    like = tiny_model()
    final = tmp_path / "ema" / "step_00000400" / "state.eqx"
    stored = eqx.tree_deserialise_leaves(final, (like, like, like))
    rebuilt, info = sgm.reconstruct_ema(
        tmp_path / "ema", 0.10, like=like, sigma_rels=(0.05, 0.15), return_info=True
    )
    assert info.step == 400 and {r for _, r in info.sources} == {0.05, 0.15}
    assert sum(info.weights) == pytest.approx(1.0)
    error = relative_error(params(rebuilt), params(stored[1]))
    assert error <= 1e-3
    spread = relative_error(params(stored[0]), params(stored[2]))
    assert error <= 0.05 * spread
    # a stored length comes back as it was stored
    same = sgm.reconstruct_ema(tmp_path / "ema", 0.05, like=like)
    assert relative_error(params(same), params(stored[0])) < 1e-6


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_averages_resume_bit_for_bit(tmp_path):
    opt = optax.adam(3e-3)
    option = sgm.PostHocEMA((0.05, 0.1), snapshot_every=10)
    full = tmp_path / "full"
    sgm.train(
        tiny_model(),
        SDE,
        data(),
        opt,
        steps=60,
        checkpoints=sgm.Checkpoints(full, every=25),
        posthoc_ema=option,
        **KW,
    )
    part = tmp_path / "part"
    sgm.train(
        tiny_model(),
        SDE,
        data(),
        opt,
        steps=25,
        checkpoints=sgm.Checkpoints(part, every=25),
        posthoc_ema=option,
        **KW,
    )
    sgm.train(
        tiny_model(),
        SDE,
        data(),
        opt,
        steps=60,
        checkpoints=sgm.Checkpoints(part, every=25, resume=True),
        posthoc_ema=option,
        **KW,
    )
    names = sorted(p.name for p in (full / "ema").iterdir())
    assert names == [f"step_{k:08d}" for k in (10, 20, 30, 40, 50, 60)]
    assert sorted(p.name for p in (part / "ema").iterdir()) == [
        *names[:2],
        "step_00000025",
        *names[2:],
    ]
    for name in names:
        assert digest(full / "ema" / name / "state.eqx") == digest(
            part / "ema" / name / "state.eqx"
        )
    # the checkpoint holds the averages that the last snapshot wrote
    like = init_state(
        tiny_model(), opt, key=jr.key(1), posthoc_ema=init_averages(tiny_model(), option)
    )
    state, _ = sgm.load_checkpoint(full, like)
    assert state.posthoc_ema is not None and int(state.step) == 60
    stored = eqx.tree_deserialise_leaves(
        full / "ema" / names[-1] / "state.eqx", state.posthoc_ema.averages
    )
    for a, b in zip(state.posthoc_ema.averages, stored, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(params(a), params(b), strict=True))


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ema")
    option = sgm.PostHocEMA((0.05, 0.1), snapshot_every=10, directory=directory)
    sgm.train(tiny_model(), SDE, data(), optax.adam(3e-3), steps=100, posthoc_ema=option, **KW)
    return directory


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda d: sgm.reconstruct_ema(d, 0.31, like=tiny_model()),
            r"sigma_rel must be in \(0, 0.3003\]",
        ),
        (
            lambda d: sgm.reconstruct_ema(d, 0.0, like=tiny_model()),
            r"sigma_rel must be in \(0, 0.3003\]",
        ),
        (
            lambda d: sgm.reconstruct_ema(d, 0.002, like=tiny_model()),
            r"profile error 8\d.\d% > max_error 5%\); they represent sigma_rel "
            r"from 0.0[0-4]\d to 0.1\d\d",
        ),
        (
            lambda d: sgm.reconstruct_ema(d, 0.1, like=tiny_model(width=16)),
            r"were written by another model \(saved float32\[32, 3\], like has float32\[16, 3\]\)",
        ),
        (
            lambda d: sgm.reconstruct_ema(d, 0.1, like=tiny_model(), step=15),
            r"step must be one of the snapshots' steps 10 ... 100, got 15",
        ),
        (
            lambda d: sgm.reconstruct_ema(d, 0.1, like=tiny_model(), sigma_rels=(0.2,)),
            r"sigma_rels \[0.2\] are not stored; the snapshots hold \[0.05, 0.1\]",
        ),
        (
            lambda d: sgm.reconstruct_ema(d / "nothing", 0.1, like=tiny_model()),
            r"holds no post-hoc EMA snapshots",
        ),
    ],
)
def test_reconstruction_errors_are_one_line(snapshots, call, message):
    with pytest.raises(ValueError, match=message) as info:
        call(snapshots)
    assert "\n" not in str(info.value)


def test_a_corrupt_snapshot_is_named(snapshots, tmp_path):
    import shutil

    copy = tmp_path / "ema"
    shutil.copytree(snapshots, copy)
    state = copy / "step_00000050" / "state.eqx"
    state.write_bytes(state.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ValueError, match=r"snapshot .*step_00000050/state.eqx is corrupt"):
        sgm.reconstruct_ema(copy, 0.1, like=tiny_model())


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: sgm.PostHocEMA(()), r"PostHocEMA.sigma_rels must be a tuple of lengths"),
        (lambda: sgm.PostHocEMA((0.05, 0.05)), r"PostHocEMA.sigma_rels must be distinct"),
        (lambda: sgm.PostHocEMA((0.05, 0.4)), r"PostHocEMA.sigma_rels must be in \(0, 0.3003\]"),
        (lambda: sgm.PostHocEMA((0.05, "a")), r"PostHocEMA.sigma_rels must be a number"),
        (
            lambda: sgm.PostHocEMA(snapshot_every=0),
            r"PostHocEMA.snapshot_every must be an integer >= 1",
        ),
        (lambda: sgm.PostHocEMA(directory=3), r"PostHocEMA.directory must be a path or None"),
    ],
)
def test_bad_options_are_one_line_errors(build, message):
    with pytest.raises(ValueError, match=message) as info:
        build()
    assert "\n" not in str(info.value)


def test_train_refuses_no_directory_and_a_used_one(snapshots):
    with pytest.raises(ValueError, match=r"PostHocEMA needs a directory for its snapshots"):
        sgm.train(tiny_model(), SDE, data(), steps=2, posthoc_ema=sgm.PostHocEMA(), **KW)
    with pytest.raises(ValueError, match=r"posthoc_ema must be an sgm.PostHocEMA or None"):
        sgm.train(tiny_model(), SDE, data(), steps=2, posthoc_ema=(0.05, 0.1), **KW)
    used = sgm.PostHocEMA(directory=snapshots)
    with pytest.raises(ValueError, match=r"already holds post-hoc EMA snapshots; resume"):
        sgm.train(tiny_model(), SDE, data(), steps=2, posthoc_ema=used, **KW)
