"""Controllable generation against closed forms: conditional Gaussians and mixture classes."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import SDES, four_gaussians

import sgm

COV = 0.5 * np.array(
    [[1.0, 0.8, 0.6, 0.5], [0.8, 1.0, 0.7, 0.6], [0.6, 0.7, 1.0, 0.8], [0.5, 0.6, 0.8, 1.0]]
)
MU = np.array([0.2, -0.1, 0.3, 0.0])
KNOWN = np.array([True, True, False, False])
X_KNOWN = np.array([1.0, 0.9])
N = 2000


def conditional():
    s_kk, s_uk, s_uu = COV[:2, :2], COV[2:, :2], COV[2:, 2:]
    mean = MU[2:] + s_uk @ np.linalg.solve(s_kk, X_KNOWN - MU[:2])
    return mean, s_uu - s_uk @ np.linalg.solve(s_kk, s_uk.T)


def inpainted(sde, method, **kw):
    g = sgm.Gaussian(MU, COV)
    x = jnp.tile(jnp.array([*X_KNOWN, jnp.nan, jnp.nan]), (N, 1))
    out = sgm.inpaint(
        g.score(sde),
        sde,
        sgm.EulerMaruyama(steps=200),
        key=jr.key(0),
        x=x,
        mask=jnp.asarray(KNOWN),
        method=method,
        **kw,
    )
    np.testing.assert_array_equal(out[:, :2], np.tile(X_KNOWN, (N, 1)).astype(np.float32))
    return np.asarray(out[:, 2:], np.float64)


@pytest.mark.parametrize("sde", ["vp", "ve"])
def test_default_inpainting_reproduces_the_conditional_gaussian(sde):
    """SMC (the default, 16 particles here): the conditional mean within 0.12 conditional
    standard deviations (its standard error at n = 2000 is 0.022) and the covariance within
    0.05 (entries 0.19-0.32, standard error about 0.01). Measured: 0.02-0.04 and 0.03."""
    mean, cov = conditional()
    u = inpainted(SDES[sde], "smc", n_particles=16)
    err = np.abs(u.mean(0) - mean) / np.sqrt(np.diag(cov))
    assert err.max() < 0.12, err
    np.testing.assert_allclose(np.cov(u.T), cov, atol=0.05)


def test_replacement_is_biased_on_correlated_data():
    """Song et al.'s replacement misses the conditional mean by about half a standard
    deviation here (measured 0.52): the reason it is not the default."""
    mean, cov = conditional()
    u = inpainted(SDES["vp"], "replace")
    assert (np.abs(u.mean(0) - mean) / np.sqrt(np.diag(cov))).min() > 0.3


def test_colorization_conditions_on_the_grey_level():
    """RGB pixels from a correlated Gaussian: given grey = mean(R, G, B) = c, the colour is
    Gaussian with mean mu + S a (c - a.mu) / (a.S a), a = (1, 1, 1) / 3."""
    cov = 0.1 * np.array([[1.0, 0.6, 0.3], [0.6, 1.0, 0.5], [0.3, 0.5, 1.0]])
    mu = np.array([0.3, 0.0, -0.2])
    g, sde = sgm.Gaussian(mu, cov), sgm.VPSDE()
    exact = g.score(sde)

    def score(t, x):
        return exact(t, x.reshape(3)).reshape(3, 1, 1)

    c = 0.25
    rgb = sgm.colorize(
        score,
        sde,
        sgm.EulerMaruyama(steps=200),
        key=jr.key(0),
        grey=jnp.full((N, 1, 1, 1), c),
        n_particles=16,
    )
    rgb = np.asarray(rgb).reshape(N, 3)
    np.testing.assert_allclose(rgb.mean(1), c, atol=1e-5)
    a = np.ones(3) / 3
    expected = mu + cov @ a * (c - a @ mu) / (a @ cov @ a)
    np.testing.assert_allclose(rgb.mean(0), expected, atol=0.03)


def mixture_class_score(mix, sde):
    """Closed-form conditional score: class k is component k; label K means unconditional."""

    def score(t, x, *, y):
        comp = jax.tree.map(lambda leaf: leaf[jnp.minimum(y, 3)], mix.components)
        return jnp.where(y < 4, comp.score(sde)(t, x), mix.score(sde)(t, x))

    return score


def test_classifier_free_guidance_with_exact_scores():
    mix, sde = four_gaussians(), SDES["vp"]
    score = mixture_class_score(mix, sde)
    sampler = sgm.EulerMaruyama(steps=300)
    y = jnp.full((1000,), 2)
    cond = sgm.ClassifierFreeGuidance(score, guidance_scale=1.0, null_label=4)
    x = sgm.sample(cond, sde, sampler, key=jr.key(0), shape=(1000, 2), y=y)
    assert float(jnp.mean(jax.vmap(mix.assign)(x) == 2)) > 0.995
    uncond = sgm.ClassifierFreeGuidance(score, guidance_scale=0.0, null_label=4)
    x = sgm.sample(uncond, sde, sampler, key=jr.key(1), shape=(4000, 2), y=jnp.zeros(4000, int))
    weights = jnp.bincount(jax.vmap(mix.assign)(x), length=4) / 4000
    np.testing.assert_allclose(weights, mix.weights, atol=0.03)


def test_classifier_guidance_with_the_exact_classifier():
    """grad log p_t(y | x) from the mixture's own posterior: with scale 1 the guided score is
    the exact score of component y, so every sample lands in that component."""
    mix, sde = four_gaussians(), SDES["vp"]

    def log_prob_y(t, x, y):
        return jax.nn.log_softmax(mix.component_log_probs(x, sde=sde, t=t))[y]

    guided = sgm.ClassifierGuidance(mix.score(sde), log_prob_y, guidance_scale=1.0)
    x = sgm.sample(
        guided,
        sde,
        sgm.EulerMaruyama(steps=300),
        key=jr.key(0),
        shape=(1000, 2),
        y=jnp.full((1000,), 0),
    )
    assert float(jnp.mean(jax.vmap(mix.assign)(x) == 0)) > 0.995
    comp = mix.component(0)
    np.testing.assert_allclose(x.mean(0), comp.mean, atol=0.03)


def test_trained_time_dependent_classifier_matches_the_exact_posterior():
    """`train_classifier` on the 4-component mixture (labels = components): at every t the
    learned p_t(y | x_t) is within 0.05 nats (KL) of the exact posterior (measured 0.001-0.019),
    and it guides the exact unconditional score into the requested component (the least
    likely one, weight 0.1): measured 96.8% of the samples (the exact classifier: over 99.5%,
    unguided: 10%); asserted above 95%."""
    import optax

    mix, sde = four_gaussians(), SDES["vp"]
    n = 8192
    labels = jr.categorical(jr.key(0), mix.log_weights, shape=(n,))
    noise = 0.15 * jr.normal(jr.key(1), (n, 2))
    x = mix.components.mean[labels] + noise
    net = sgm.nets.Classifier((2,), 4, key=jr.key(2), width=64, depth=3)
    clf, losses = sgm.train_classifier(
        sgm.NoisyClassifier(net, sde),
        x,
        labels,
        optax.adam(2e-3),
        steps=1500,
        batch_size=256,
        key=jr.key(3),
    )
    assert np.mean(losses[-100:]) < np.mean(losses[:100])
    for t in (0.01, 0.2, 0.5, 1.0):
        m, s = sde.marginal(t)
        xt = m * x[:4000] + s * jr.normal(jr.key(4), (4000, 2))
        exact = jax.nn.log_softmax(
            jax.vmap(lambda z, t=t: mix.component_log_probs(z, sde=sde, t=t))(xt), axis=1
        )
        model = jax.nn.log_softmax(jax.vmap(lambda z, t=t: clf.logits(t, z))(xt), axis=1)
        assert float(jnp.sum(jnp.exp(exact) * (exact - model), 1).mean()) < 0.05, t
    guided = sgm.ClassifierGuidance(mix.score(sde), clf, guidance_scale=1.0)
    out = sgm.sample(
        guided,
        sde,
        sgm.EulerMaruyama(steps=300),
        key=jr.key(5),
        shape=(1000, 2),
        y=jnp.zeros(1000, int),
    )
    assert float(jnp.mean(jax.vmap(mix.assign)(out) == 0)) > 0.95
    with pytest.raises(ValueError, match="labels must be"):
        sgm.train_classifier(
            clf, x, np.zeros(3, int), optax.adam(1e-3), steps=1, batch_size=2, key=jr.key(0)
        )


def test_bad_input_raises():
    g, sde = sgm.Gaussian(MU, COV), sgm.VPSDE()
    x = jnp.zeros((2, 4))
    with pytest.raises(ValueError, match="mask must be boolean"):
        sgm.inpaint(g.score(sde), sde, sgm.EulerMaruyama(), key=jr.key(0), x=x, mask=jnp.ones(4))
    with pytest.raises(ValueError, match="mask must have shape"):
        sgm.inpaint(
            g.score(sde), sde, sgm.EulerMaruyama(), key=jr.key(0), x=x, mask=jnp.ones(3, bool)
        )
    with pytest.raises(ValueError, match="EulerMaruyama"):
        sgm.inpaint(
            g.score(sde), sde, sgm.ProbabilityFlowODE(), key=jr.key(0), x=x, mask=jnp.ones(4, bool)
        )
    with pytest.raises(ValueError, match="method"):
        sgm.inpaint(
            g.score(sde),
            sde,
            sgm.EulerMaruyama(),
            key=jr.key(0),
            x=x,
            mask=jnp.ones(4, bool),
            method="repaint",
        )
    with pytest.raises(ValueError, match=r"\(n, 1, H, W\)"):
        sgm.colorize(g.score(sde), sde, sgm.EulerMaruyama(), key=jr.key(0), grey=jnp.zeros((2, 3)))


def test_model_conditioned_on_a_parameter_vector():
    """A physics-emulator-style conditional model: x | theta ~ N((theta, -theta), 0.2^2 I) with
    theta ~ U[-1, 1], an MLP conditioned on the vector (theta,) and trained for 1500 steps.
    Samples at theta = -0.7 and 0.7 must sit at their own means (within 0.1; the spread between
    the two is 2.0) with the conditional std (within 25%). Measured when written: mean errors
    at most 0.032, stds 0.20-0.21."""
    import optax

    sde = sgm.VPSDE()
    theta = np.asarray(jr.uniform(jr.key(0), (8192, 1), minval=-1.0, maxval=1.0))
    x = np.concatenate([theta, -theta], 1) + 0.2 * np.asarray(jr.normal(jr.key(1), (8192, 2)))
    net = sgm.nets.MLP((2,), key=jr.key(2), width=128, depth=3, cond_dim=1)
    model = sgm.train(
        sgm.ScoreModel(net, sde),
        sde,
        x.astype(np.float32),
        optax.adam(2e-3),
        steps=1500,
        batch_size=256,
        key=jr.key(3),
        labels=theta.astype(np.float32),
        monitor=sgm.Monitor(progress=False),
        ema_decay=0.99,
    )
    for value in (-0.7, 0.7):
        y = jnp.full((1000, 1), value)
        out = np.asarray(
            sgm.sample(
                model, sde, sgm.EulerMaruyama(steps=300), key=jr.key(4), shape=(1000, 2), y=y
            )
        )
        np.testing.assert_allclose(out.mean(0), [value, -value], atol=0.1)
        np.testing.assert_allclose(out.std(0), [0.2, 0.2], rtol=0.25)
