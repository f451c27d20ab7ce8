"""The seams between the library's pieces: a model used with another SDE, a class-conditional
model without labels, non-finite scores, images that are not pixel levels, failed checks inside
compiled code and the inputs that used to fail with a raw error. Each gets a one-line error (or,
for non-finite samples, a warning with their number) before any work."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import sgm

SDE = sgm.VPSDE()
GAUSS = sgm.Gaussian(jnp.array([0.5, -0.5]), jnp.array([0.3, 0.2]))
EM = sgm.EulerMaruyama(steps=4)


def _mlp(**kw):
    return sgm.nets.MLP((2,), key=jr.key(0), width=8, depth=1, embed_dim=8, **kw)


MODEL = sgm.ScoreModel(_mlp(), SDE)
CLASSES = sgm.ScoreModel(_mlp(num_classes=3), SDE)
X = jr.normal(jr.key(1), (4, 2))


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def test_a_score_model_is_used_with_its_own_sde_only():
    ve = sgm.VESDE()
    calls = {
        "sample": lambda s: sgm.sample(s, ve, EM, key=jr.key(0), shape=(4, 2)),
        "log_likelihood": lambda s: sgm.log_likelihood(s, ve, X),
        "bits_per_dim": lambda s: sgm.bits_per_dim(
            s, ve, jnp.zeros((2, 2), jnp.uint8), key=jr.key(0)
        ),
        "inpaint": lambda s: sgm.inpaint(
            s, ve, EM, key=jr.key(0), x=X, mask=jnp.array([True, False])
        ),
    }
    for call in calls.values():
        with pytest.raises(ValueError, match=r"built for VPSDE\(\), but sde=VESDE\(\)") as e:
            call(MODEL)
        _one_line(e)
    # a guided score holds the model: it is found inside
    guided = sgm.ClassifierFreeGuidance(CLASSES, 2.0, null_label=3)
    with pytest.raises(ValueError, match="built for VPSDE"):
        sgm.sample(guided, ve, EM, key=jr.key(0), shape=(3, 2), y=jnp.arange(3))
    # a plain callable (a closed form) carries no SDE and is not checked
    x = sgm.sample(GAUSS.score(SDE), SDE, EM, key=jr.key(0), shape=(4, 2))
    assert x.shape == (4, 2)


def test_classifier_free_guidance_needs_the_network_null_label():
    with pytest.raises(ValueError, match="null_label must be the network's null label 3"):
        sgm.ClassifierFreeGuidance(CLASSES, 2.0, null_label=10)


def test_a_class_conditional_model_needs_labels_unless_the_null_label_is_asked_for():
    with pytest.raises(ValueError, match=r"class-conditional \(3 classes\) but no y") as e:
        sgm.sample(CLASSES, SDE, EM, key=jr.key(0), shape=(4, 2))
    assert "y=jnp.full(4, 3)" in _one_line(e)
    with pytest.raises(ValueError, match="no y was given"):
        sgm.log_likelihood(CLASSES, SDE, X)
    # the null label asked for explicitly: the unconditional score
    null = jnp.full(4, 3)
    x = sgm.sample(CLASSES, SDE, EM, key=jr.key(0), shape=(4, 2), y=null)
    assert bool(jnp.all(jnp.isfinite(x)))
    for bad in (jnp.array([0, 1, 2, 4]), jnp.array([0, -1, 2, 1]), jnp.array([0.0, 1, 2, 1])):
        with pytest.raises(ValueError, match=r"y must be integer class labels in \[0, 3\]"):
            sgm.sample(CLASSES, SDE, EM, key=jr.key(0), shape=(4, 2), y=bad)
    # NaN conditions are refused for any conditional score, class labels or vectors
    cond = lambda t, x, y: -x + y  # noqa: E731
    with pytest.raises(ValueError, match="y contains NaN or infinite values"):
        sgm.sample(
            cond, SDE, EM, key=jr.key(0), shape=(2, 2), y=jnp.array([[0.0, 1], [0, jnp.nan]])
        )

    data = np.asarray(jr.normal(jr.key(2), (16, 2)))
    train = lambda labels: sgm.train(  # noqa: E731
        CLASSES,
        SDE,
        data,
        optax.adam(1e-3),
        steps=1,
        batch_size=8,
        key=jr.key(0),
        labels=labels,
        monitor=sgm.Monitor(progress=False),
    )
    with pytest.raises(ValueError, match=r"no labels was given.*labels=jnp.full\(16, 3\)"):
        train(None)


@pytest.mark.slow
def test_the_null_label_alone_can_be_trained_when_asked_for():
    """Compiles a training step (about 30 s on 2 CPU cores)."""
    data = np.asarray(jr.normal(jr.key(2), (16, 2)))
    model = sgm.train(
        CLASSES,
        SDE,
        data,
        optax.adam(1e-3),
        steps=1,
        batch_size=8,
        key=jr.key(0),
        labels=np.full(16, 3),
        monitor=sgm.Monitor(progress=False),
    )
    assert isinstance(model, sgm.ScoreModel)


def test_non_finite_samples_warn_with_their_number():
    # NaN for the examples whose condition is 1: 2 of 4
    score = lambda t, x, y: jnp.where(y[0] > 0, jnp.nan, -x)  # noqa: E731
    y = jnp.array([[0.0], [1.0], [0.0], [1.0]])
    with pytest.warns(RuntimeWarning, match="2 of 4 samples are not finite"):
        x = sgm.sample(score, SDE, EM, key=jr.key(0), shape=(4, 2), y=y)
    assert np.isfinite(np.asarray(x)).all(axis=1).tolist() == [True, False, True, False]


def test_log_likelihood_names_a_non_finite_score_before_solving():
    nan_model = jax.tree.map(lambda a: a * jnp.nan if eqx.is_inexact_array(a) else a, MODEL)
    for score in (nan_model, lambda t, x: GAUSS.score(SDE)(t, x) * jnp.nan):
        with pytest.raises(ValueError, match=r"score is not finite at t=1e-05 on 4 of 4") as e:
            sgm.log_likelihood(score, SDE, X, trace=sgm.Exact(), max_steps=10**6)
        _one_line(e)
    # one example only: its index is named
    bad_at_two = lambda t, x: jnp.where(jnp.all(x == X[2]), jnp.nan, -x)  # noqa: E731
    with pytest.raises(ValueError, match=r"on 1 of 4 examples \(first: index 2\)"):
        sgm.log_likelihood(bad_at_two, SDE, X, trace=sgm.Exact(), batch_size=3)


def test_bits_per_dim_refuses_images_that_are_not_pixel_levels():
    score = GAUSS.score(SDE)
    for images in (jnp.array([[0.0, 1.0], [1.0, 0.0]]), jnp.array([[0.2, 0.9], [0.5, 0.1]])):
        with pytest.raises(ValueError, match=r"np.round\(x \* 255\).astype\(np.uint8\)") as e:
            sgm.bits_per_dim(score, SDE, images, key=jr.key(0))
        _one_line(e)


class _ShiftLabels(eqx.Module):
    """Hands the model labels out of its range inside the compiled program."""

    model: sgm.ScoreModel

    def __call__(self, t, x, *, y):
        return self.model(t, x, y=y + 5)


def test_a_failed_compiled_check_is_one_short_line():
    for _ in range(2):  # the second call reuses the compiled program: still no stale stack
        with pytest.raises(ValueError) as e:
            sgm.sample(_ShiftLabels(CLASSES), SDE, EM, key=jr.key(0), shape=(3, 2), y=jnp.arange(3))
        assert _one_line(e) == "label out of range [0, 3]."
        assert e.value.__suppress_context__
    # concrete values are checked at once, outside any compiled program
    with pytest.raises(ValueError, match=r"^t must lie in \[0, t1=1.0\]\.$"):
        MODEL(2.0, X[0])
    with pytest.raises(ValueError, match=r"^label out of range \[0, 3\]\.$"):
        CLASSES(0.5, X[0], y=4)


def test_inputs_that_used_to_fail_with_a_raw_error():
    data = np.asarray(X)
    with_key = {
        "sample": lambda k: sgm.sample(MODEL, SDE, EM, key=k, shape=(2, 2)),
        "log_likelihood": lambda k: sgm.log_likelihood(MODEL, SDE, X, key=k),
        "bits_per_dim": lambda k: sgm.bits_per_dim(MODEL, SDE, jnp.zeros((2, 2), int), key=k),
        "inpaint": lambda k: sgm.inpaint(MODEL, SDE, EM, key=k, x=X, mask=jnp.array([1, 0]) > 0),
        "train": lambda k: sgm.train(MODEL, SDE, data, steps=1, batch_size=2, key=k),
        "MLP": lambda k: sgm.nets.MLP((2,), key=k),
        "Gaussian.sample": lambda k: GAUSS.sample(k, 3),
    }
    for call in with_key.values():
        with pytest.raises(ValueError, match=r"key must be one JAX PRNG key.*got int 0"):
            call(0)
    # a legacy raw key is still a key
    assert sgm.sample(MODEL, SDE, EM, key=jr.PRNGKey(0), shape=(2, 2)).shape == (2, 2)

    with pytest.raises(ValueError, match=r"x must be an array \(n, \*data_shape\).*got str"):
        sgm.log_likelihood(MODEL, SDE, "abc")

    mix = sgm.GaussianMixture(
        jnp.array([0.3, 0.7]), jnp.array([[1.0, 0], [-1, 0]]), 0.2 * jnp.ones(2)
    )
    for dist in (mix, GAUSS):
        with pytest.raises(ValueError, match=r"one example of shape \(2,\).*jax.vmap"):
            dist.log_prob(X)
        # the same densities, one example at a time
        each = jnp.array([dist.log_prob(x) for x in X])
        np.testing.assert_allclose(jax.vmap(dist.log_prob)(X), each, rtol=1e-6)

    net = sgm.nets.MLP(2, key=jr.key(0), width=8, depth=1)
    assert net.data_shape == (2,) and net(0.1, X[0]).shape == (2,)
    with pytest.raises(ValueError, match="MLP data_shape must be the shape of one example"):
        sgm.nets.MLP("2", key=jr.key(0))

    with pytest.raises(ValueError, match=r"network first, then the SDE: ScoreModel\(net, sde\)"):
        sgm.ScoreModel(SDE, _mlp())  # type: ignore[arg-type]

    series = np.asarray(jr.normal(jr.key(0), (10, 16)))
    with pytest.raises(ValueError, match="n_test=500 must be at least 1 and below the 10"):
        sgm.data.timeseries(series)
    with pytest.raises(ValueError, match="n_test=500 must be at least 1 and below the 10"):
        sgm.data.ou_family(key=jr.key(0), n_series=10, length=8)


def test_inpainting_takes_the_condition_of_a_conditional_model():
    """A class-conditional model needs `y` in `inpaint` (and `colorize`) as in `sample`; the
    condition reaches the score: data `x | y ~ N(y, c^2 I)` in 2-D, the first entry known, fills
    the second from `N(y_1, c^2)` (independent entries: the conditional is that marginal)."""
    mask = jnp.array([True, False])
    with pytest.raises(ValueError, match=r"class-conditional \(3 classes\) but no y") as e:
        sgm.inpaint(CLASSES, SDE, EM, key=jr.key(0), x=X, mask=mask)
    assert "y=jnp.full(4, 3)" in _one_line(e)
    out = sgm.inpaint(CLASSES, SDE, EM, key=jr.key(0), x=X, mask=mask, y=jnp.full(4, 3))
    assert bool(jnp.all(out[:, 0] == X[:, 0])) and bool(jnp.all(jnp.isfinite(out)))

    c = 0.2

    def score(t, x, y):
        m, s = SDE.marginal(t)
        return -(x - m * y) / (m**2 * c**2 + s**2)

    n = 512
    y = jnp.concatenate([jnp.full((n, 2), -1.0), jnp.full((n, 2), 1.5)])
    x = jnp.zeros((2 * n, 2))
    sampler = sgm.EulerMaruyama(steps=200)
    out = sgm.inpaint(score, SDE, sampler, key=jr.key(3), x=x, mask=mask, y=y, method="replace")
    for part, mean in ((out[:n, 1], -1.0), (out[n:, 1], 1.5)):
        assert abs(float(part.mean()) - mean) < 4 * c / np.sqrt(n)
        assert abs(float(part.std()) / c - 1) < 0.15
