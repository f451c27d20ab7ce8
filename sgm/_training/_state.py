"""One training step: the train state, the jitted data-parallel update with EMA, and the
held-out loss and bound."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Int, PRNGKeyArray

from .._bits import bits_per_dim
from .._likelihood import variational_bound
from .._losses import AbstractLoss
from .._score import ScoreModel
from .._traced_checks import inputs_checked_by_caller
from ._accumulate import value_and_grad
from ._fsdp import constrain_state, gathered
from ._options import HeldOutBound
from ._posthoc import PowerEMAs, update_averages
from ._precision import in_precision


class TrainState(eqx.Module):
    """Everything a checkpoint holds: the model, its EMA, the optimizer state, the step and
    the raw key data, so that a resumed run continues exactly; with `sgm.PostHocEMA`, its
    power-function averages too (`None` without)."""

    model: ScoreModel
    ema: ScoreModel
    opt_state: optax.OptState
    step: Int[Array, ""]
    key: Array
    nonfinite: Int[Array, ""]
    posthoc_ema: PowerEMAs | None = None


def init_state(
    model: ScoreModel, optimizer, *, key: PRNGKeyArray, posthoc_ema: PowerEMAs | None = None
) -> TrainState:
    params = eqx.filter(model, eqx.is_inexact_array)
    return TrainState(
        model=model,
        ema=jax.tree.map(lambda a: jnp.copy(a) if eqx.is_array(a) else a, model),
        opt_state=optimizer.init(params),
        step=jnp.zeros((), jnp.int32),
        key=jr.key_data(key),
        nonfinite=jnp.zeros((), jnp.int32),
        posthoc_ema=posthoc_ema,
    )


def ema_warmup(ema_decay: float, step):
    """The EMA decay used at `step`: `min(ema_decay, (1 + step) / (10 + step))`, the warm-up
    of TensorFlow's `ExponentialMovingAverage(num_updates=step)`. Without it the average of a
    short run keeps `ema_decay**steps` of the random initial weights (22% after 1500 steps at
    0.999)."""
    return jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))


@eqx.filter_jit(donate="all-except-first")
def train_step(
    batch,
    state: TrainState,
    labels,
    loss: AbstractLoss,
    optimizer,
    ema_decay: float,
    precision: str = "float32",
    accumulate: int = 1,
    fsdp_mesh=None,
):
    """One step: loss and gradients (the network computed in `precision`, the batch in
    `accumulate` micro-batches), optax update, EMA update (and the post-hoc EMA's
    power-function averages, when the state has them). With an `('data', 'fsdp')` mesh
    `fsdp_mesh` (`sgm.train(fsdp=...)`), the parameters are gathered before the network runs,
    the gradients reduce-scattered onto the parameter shards, and the new state keeps the
    sharding of `_fsdp.leaf_sharding`. A non-finite loss or update
    leaves the state as it was and counts the event, so the last good state survives. With the batch
    sharded over the `'data'` axis and the state replicated, jit inserts the gradient
    all-reduce: the pmap pattern, written with shardings."""
    key = jr.fold_in(jr.wrap_key_data(state.key), state.step)
    params, static = eqx.partition(state.model, eqx.is_inexact_array)

    def objective(params, x, y, key):
        if fsdp_mesh is not None:
            params = gathered(params, fsdp_mesh)
        model = in_precision(eqx.combine(params, static), precision)
        return loss.batch_loss(model, x, key=key, y=y)

    # times are drawn in [eps, t1] and `train` checked the labels: no traced checks, so that
    # the step can be stored in the persistent compilation cache
    with inputs_checked_by_caller():
        value, grads = value_and_grad(objective, params, batch, labels, key, accumulate)
    if fsdp_mesh is not None:
        grads = constrain_state(grads, fsdp_mesh)
    updates, opt_state = optimizer.update(grads, state.opt_state, params)
    new_params = eqx.apply_updates(params, updates)
    ema_params = eqx.filter(state.ema, eqx.is_inexact_array)
    decay = ema_warmup(ema_decay, state.step)
    new_ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema_params, new_params)
    # A finite loss can still give non-finite parameters (an overflowing update): both count.
    finite = jax.tree.leaves(jax.tree.map(lambda a: jnp.all(jnp.isfinite(a)), new_params))
    ok = jnp.isfinite(value) & jnp.all(jnp.stack(finite))
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
    new_state = TrainState(
        model=eqx.combine(keep(new_params, params), static),
        ema=eqx.combine(keep(new_ema, ema_params), static),
        opt_state=keep(opt_state, state.opt_state),
        step=state.step + 1,
        key=state.key,
        nonfinite=state.nonfinite + jnp.where(ok, 0, 1),
        posthoc_ema=update_averages(state.posthoc_ema, new_params, state.step + 1, ok),
    )
    if fsdp_mesh is not None:
        new_state = constrain_state(new_state, fsdp_mesh)
    return new_state, value


@eqx.filter_jit
def eval_loss(model: ScoreModel, batch, labels, loss: AbstractLoss, key) -> Array:
    """Held-out loss with a fixed key, so that values are comparable over training."""
    with inputs_checked_by_caller():
        return loss.batch_loss(model, batch, key=key, y=labels)


def bound_inputs(bound: HeldOutBound, data, labels) -> tuple:
    """The fixed inputs of the held-out bound: the first `n_examples` images (or model-scale
    examples without images) and their labels, as arrays of this process."""
    n = bound.n_examples
    x = np.asarray(data if bound.images is None else bound.images)[:n]
    return jnp.asarray(x), None if labels is None else jnp.asarray(np.asarray(labels)[:n])


def eval_bound(model: ScoreModel, bound: HeldOutBound, x, y) -> tuple[float, float]:
    """`(mean, standard error)` of the variational bound on the held-out examples `x`
    (`bound_inputs`) with the key `jr.key(bound.seed)`: in bits/dim of dequantized images
    (`sgm.bits_per_dim(..., method="bound")`) or, without images, in nats/dim."""
    key = jr.key(bound.seed)
    if bound.images is not None:
        _, info = bits_per_dim(
            model,
            model.sde,
            x,
            key=key,
            num_bits=bound.num_bits,
            scaler=bound.scaler,  # pyright: ignore[reportArgumentType]  (any elementwise map)
            method="bound",
            estimator="mean",
            n_times=bound.n_times,
            return_info=True,
            progress=False,
            y=y,
        )
        return info.bits_per_dim, info.sem
    nats = variational_bound(
        model, model.sde, x, key=key, n_times=bound.n_times, y=y, progress=False
    )[0]
    per_dim = np.asarray(nats, np.float64) / math.prod(x.shape[1:])
    return float(per_dim.mean()), float(per_dim.std(ddof=1) / math.sqrt(len(per_dim)))
