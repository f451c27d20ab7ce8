"""Time-dependent classifiers `log p_t(y | x_t)` for classifier guidance, and their training."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray, Scalar

from ._sde import AbstractSDE


class NoisyClassifier(eqx.Module):
    """`log p_t(y | x_t)` from a classifier network `net(c, x) -> logits`, with the same noise
    conditioning `c(t)` and input scaling `x / sqrt(m^2 + s^2)` as `ScoreModel`. Pass it as
    the `log_prob_y` of `ClassifierGuidance` (Song et al. 2021, eq. 14 and appendix I)."""

    net: Callable[..., Array]
    sde: AbstractSDE

    def logits(self, t, x: Array) -> Float[Array, " num_classes"]:
        m, s = self.sde.marginal(t)
        return self.net(self.sde.noise_conditioning(t), x / jnp.sqrt(m**2 + s**2))

    def __call__(self, t, x: Array, y) -> Scalar:
        return jax.nn.log_softmax(self.logits(t, x))[y]


def classifier_loss(clf: NoisyClassifier, x0, y, key, eps: float) -> Scalar:
    """Cross-entropy of `y` given `x_t = m(t) x0 + s(t) z`, `t ~ U[eps, t1]`, for one example."""
    tkey, zkey = jr.split(key)
    t = jr.uniform(tkey, minval=eps, maxval=clf.sde.t1)
    m, s = clf.sde.marginal(t)
    xt = m * x0 + s * jr.normal(zkey, x0.shape)
    return -clf(t, xt, y)


def train_classifier(
    clf: NoisyClassifier,
    x: Float[ArrayLike, "n *data_shape"],
    labels: Int[ArrayLike, " n"],
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    batch_size: int,
    key: PRNGKeyArray,
    eps: float = 1e-3,
    progress: bool = False,
) -> tuple[NoisyClassifier, list[float]]:
    """Trains `clf` on noisy data at every time: minibatches of `(x, labels)` drawn with
    replacement, one noise level per example. Returns the classifier and its loss per step.
    Runs on one device (classifiers for guidance are small)."""
    x, labels = np.asarray(x, np.float32), np.asarray(labels)
    if labels.shape != (len(x),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be {len(x)} integers, got {labels.dtype} {labels.shape}.")
    params, static = eqx.partition(clf, eqx.is_inexact_array)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, key, x, labels):
        bkey, lkey = jr.split(key)
        idx = jr.randint(bkey, (batch_size,), 0, len(x))

        def loss_fn(params):
            model = eqx.combine(params, static)
            keys = jr.split(lkey, batch_size)
            per = jax.vmap(lambda x0, y, k: classifier_loss(model, x0, y, k, eps))(
                x[idx], labels[idx], keys
            )
            return per.mean()

        value, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    losses = []
    keys = jr.split(key, steps)
    x, labels = jnp.asarray(x), jnp.asarray(labels)
    it = range(steps)
    if progress:
        from ._progress import progress as bar

        it = bar(it, desc="classifier", unit="step")
    for i in it:
        params, opt_state, value = step(params, opt_state, keys[i], x, labels)
        losses.append(float(value))
    return eqx.combine(params, static), losses
