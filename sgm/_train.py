"""Training: one jitted, data-parallel step; a loop with EMA, evaluation and checkpoints."""

import signal
import threading
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jaxtyping import Array, Int, PRNGKeyArray
from tqdm.auto import tqdm

from ._checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from ._losses import DSMLoss
from ._optim import adam
from ._score import ScoreModel
from ._sde import AbstractSDE


def default_optimizer(
    lr: float = 2e-4, *, warmup: int = 5000, grad_clip: float = 1.0
) -> optax.GradientTransformation:
    """Adam with linear warm-up and global-norm gradient clipping (Song et al. 2021,
    appendix H: lr 2e-4, 5000 warm-up steps, clip 1); `sgm.adam` adds a decay."""
    return adam(lr, warmup=warmup, grad_clip=grad_clip)


class TrainState(eqx.Module):
    """Everything a checkpoint holds: the model, its EMA, the optimizer state, the step and
    the raw key data, so that a resumed run continues exactly."""

    model: ScoreModel
    ema: ScoreModel
    opt_state: optax.OptState
    step: Int[Array, ""]
    key: Array
    nonfinite: Int[Array, ""]


def init_state(model: ScoreModel, optimizer, *, key: PRNGKeyArray) -> TrainState:
    params = eqx.filter(model, eqx.is_inexact_array)
    return TrainState(
        model=model,
        ema=jax.tree.map(lambda a: jnp.copy(a) if eqx.is_array(a) else a, model),
        opt_state=optimizer.init(params),
        step=jnp.zeros((), jnp.int32),
        key=jr.key_data(key),
        nonfinite=jnp.zeros((), jnp.int32),
    )


def ema_warmup(ema_decay: float, step):
    """The EMA decay used at `step`: `min(ema_decay, (1 + step) / (10 + step))`, the warm-up
    of TensorFlow's `ExponentialMovingAverage(num_updates=step)`. Without it the average of a
    short run keeps `ema_decay**steps` of the random initial weights (22% after 1500 steps at
    0.999)."""
    return jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))


@eqx.filter_jit(donate="all-except-first")
def train_step(batch, state: TrainState, labels, loss: DSMLoss, optimizer, ema_decay: float):
    """One step: loss and gradients, optax update, EMA update. A non-finite loss leaves the
    state as it was and counts the event, so the last good state survives. With the batch
    sharded over the `'data'` axis and the state replicated, jit inserts the gradient
    all-reduce: the pmap pattern, written with shardings."""
    key = jr.fold_in(jr.wrap_key_data(state.key), state.step)
    params, static = eqx.partition(state.model, eqx.is_inexact_array)

    def objective(params):
        return loss.batch_loss(eqx.combine(params, static), batch, key=key, y=labels)

    value, grads = jax.value_and_grad(objective)(params)
    updates, opt_state = optimizer.update(grads, state.opt_state, params)
    new_params = eqx.apply_updates(params, updates)
    ema_params = eqx.filter(state.ema, eqx.is_inexact_array)
    decay = ema_warmup(ema_decay, state.step)
    new_ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema_params, new_params)
    ok = jnp.isfinite(value)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
    new_state = TrainState(
        model=eqx.combine(keep(new_params, params), static),
        ema=eqx.combine(keep(new_ema, ema_params), static),
        opt_state=keep(opt_state, state.opt_state),
        step=state.step + 1,
        key=state.key,
        nonfinite=state.nonfinite + jnp.where(ok, 0, 1),
    )
    return new_state, value


@eqx.filter_jit
def eval_loss(model: ScoreModel, batch, labels, loss: DSMLoss, key) -> Array:
    """Held-out loss with a fixed key, so that values are comparable over training."""
    return loss.batch_loss(model, batch, key=key, y=labels)


class _Batches:
    """Deterministic batches: epoch `e` is the permutation `default_rng([seed, e])` of this
    process's examples, so the batch at any step is known from the step alone (exact resume).
    Each batch becomes one global array sharded over the `'data'` mesh axis."""

    def __init__(self, x, labels, batch_size: int, seed: list[int], mesh: Mesh):
        n_proc, rank = jax.process_count(), jax.process_index()
        self.x = np.asarray(x)[rank::n_proc]
        self.labels = None if labels is None else np.asarray(labels)[rank::n_proc]
        self.local = batch_size // n_proc
        self.seed = seed
        self.sharding = NamedSharding(mesh, P("data"))

    def __call__(self, step: int):
        n = len(self.x)
        start = step * self.local
        epoch, offset = divmod(start, n)
        idx = np.random.default_rng([*self.seed, epoch]).permutation(n)
        if offset + self.local > n:  # wrap into the next epoch's permutation
            nxt = np.random.default_rng([*self.seed, epoch + 1]).permutation(n)
            idx = np.concatenate([idx[offset:], nxt[: offset + self.local - n]])
        else:
            idx = idx[offset : offset + self.local]
        put = lambda a: jax.make_array_from_process_local_data(self.sharding, a[idx])  # noqa: E731
        return put(self.x), None if self.labels is None else put(self.labels)


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag checked between steps, so that an interrupted run
    saves the state of a completed step (a signal inside a step would hit donated buffers)."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _as_arrays(data, labels):
    if isinstance(data, np.ndarray | jax.Array):
        return data, labels
    from .data import Dataset

    if isinstance(data, Dataset):
        return data.train, labels  # labels only when asked for: conditional models
    raise ValueError(
        f"data must be an array (N, *data_shape) or an sgm.data.Dataset, got {type(data).__name__}."
    )


def train(
    model: ScoreModel,
    sde: AbstractSDE,
    data,
    optimizer: optax.GradientTransformation | None = None,
    *,
    steps: int,
    key: PRNGKeyArray,
    batch_size: int = 128,
    loss: DSMLoss = DSMLoss(),
    ema_decay: float = 0.999,
    labels=None,
    eval_data=None,
    eval_labels=None,
    eval_every: int | None = None,
    log_every: int = 100,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1000,
    resume: bool = False,
    progress: bool = True,
    return_history: bool = False,
):
    """Trains `model` by denoising score matching and returns it (the EMA weights when
    `ema_decay > 0`; the decay warms up as `min(ema_decay, (1 + n) / (10 + n))` at step `n`).

    **Arguments:**

    - `model`: a `ScoreModel` whose `sde` is `sde`.
    - `data`: an array `(N, *data_shape)` in model scale, or an `sgm.data.Dataset`.
    - `optimizer`: an optax transformation; default `default_optimizer()` (Adam, warm-up, clip).
    - `steps`: the total number of steps (a resumed run continues up to it).
    - `key`: seeds the batches, times, noise and dropout of every step.
    - `batch_size`: global batch, a multiple of the device count, split over all devices.
    - `loss`: a `DSMLoss`; `labels`: one per example for conditional models.
    - `eval_data`, `eval_labels`, `eval_every`: held-out loss of the EMA model on one fixed
      batch every `eval_every` steps.
    - `log_every`: steps between loss readings (the only host synchronisation).
    - `checkpoint_dir`, `checkpoint_every`, `resume`: atomic checkpoints of the full state every
      `checkpoint_every` steps, at the end, and on SIGINT/SIGTERM; `resume=True` continues from
      the one in `checkpoint_dir`.
    - `return_history`: also return `{"step", "loss", "eval_step", "eval_loss", "steps_per_s"}`.
    """
    if not isinstance(model, ScoreModel):
        raise ValueError(f"model must be an sgm.ScoreModel, got {type(model).__name__}.")
    if model.sde != sde:
        raise ValueError(f"model.sde is {model.sde}, but train was given {sde}.")
    x, labels = _as_arrays(data, labels)
    x = np.asarray(x)
    if x.ndim < 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"data must be a finite array (N, *data_shape), got shape {x.shape}.")
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    if batch_size % mesh.devices.size or batch_size > len(x) * jax.process_count():
        raise ValueError(
            f"batch_size={batch_size} must be a multiple of the {mesh.devices.size} devices and "
            f"at most the {len(x)} examples."
        )
    optimizer = default_optimizer() if optimizer is None else optimizer
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jr.wrap_key_data(key)  # a legacy uint32 key from jr.PRNGKey
    state = init_state(model, optimizer, key=key)
    ckpt = None if checkpoint_dir is None else Path(checkpoint_dir)
    if ckpt is not None and has_checkpoint(ckpt):
        if not resume:
            raise ValueError(
                f"{ckpt} already holds a checkpoint; pass resume=True to continue it, or use "
                "another directory."
            )
        state, _ = load_checkpoint(ckpt, like=state)
    # Own copies: the step donates its input buffers, which must not be the caller's arrays.
    arrays, static = eqx.partition(state, eqx.is_array)
    arrays = jax.device_put(jax.tree.map(jnp.copy, arrays), NamedSharding(mesh, P()))
    state = eqx.combine(arrays, static)
    seed = [int(v) for v in np.asarray(jr.key_data(key)).ravel()]
    batches = _Batches(x, labels, batch_size, seed, mesh)
    evaluate = eval_data is not None and eval_every
    if evaluate:
        eval_x = jnp.asarray(np.asarray(eval_data)[:batch_size])
        eval_y = None if eval_labels is None else jnp.asarray(np.asarray(eval_labels)[:batch_size])
    history = {"step": [], "loss": [], "eval_step": [], "eval_loss": [], "steps_per_s": []}
    start = int(state.step)
    pending, tick, last_good = [], time.perf_counter(), start

    def checkpoint(meta_step):
        if ckpt is not None:
            save_checkpoint(ckpt, state, {"step": meta_step})

    with (
        _StopRequest() as stop,
        tqdm(total=steps, initial=start, disable=not progress, desc="train", unit="step") as bar,
    ):
        for s in range(start, steps):
            if stop.requested:
                checkpoint(s)
                raise KeyboardInterrupt(
                    f"training interrupted at step {s}"
                    + (f"; checkpoint saved in {ckpt}, continue with resume=True" if ckpt else "")
                )
            batch, batch_labels = batches(s)
            state, value = train_step(batch, state, batch_labels, loss, optimizer, ema_decay)
            pending.append(value)
            done = s + 1
            if done % log_every == 0 or done == steps:
                values = np.asarray(jnp.stack(pending))
                pending = []
                if int(state.nonfinite) > 0:
                    where = f"; the last good checkpoint (step {last_good}) is kept in {ckpt}"
                    raise FloatingPointError(
                        f"the loss became non-finite by step {done} ({int(state.nonfinite)} "
                        "steps skipped); lower the learning rate or check the data"
                        + (where if ckpt else "")
                    )
                now = time.perf_counter()
                history["step"].append(done)
                history["loss"].append(float(values.mean()))
                history["steps_per_s"].append(len(values) / (now - tick))
                tick = now
                bar.set_postfix(loss=f"{values.mean():.4f}")
            if evaluate and (done % eval_every == 0 or done == steps):
                ev = eval_loss(state.ema, eval_x, eval_y, loss, jr.key(0))
                history["eval_step"].append(done)
                history["eval_loss"].append(float(ev))
            if ckpt is not None and (done % checkpoint_every == 0 or done == steps):
                if int(state.nonfinite) == 0:
                    checkpoint(done)
                    last_good = done
            bar.update(1)
    result = state.ema if ema_decay > 0 else state.model
    return (result, history) if return_history else result
