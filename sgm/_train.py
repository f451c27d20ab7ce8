"""Training: one jitted, data-parallel step; a loop with EMA, evaluation and checkpoints."""

import signal
import threading
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.experimental.multihost_utils
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jaxtyping import PRNGKeyArray
from tqdm.auto import tqdm

from ._checkpoint import CheckpointError, has_checkpoint, load_checkpoint, save_checkpoint
from ._io import remove_temporaries
from ._learned_schedule import same_sde
from ._losses import DSMLoss
from ._optimizer import Adam
from ._score import ScoreModel
from ._sde import AbstractSDE
from ._train_step import TrainState as TrainState, eval_loss, init_state, train_step
from .distributed import allgather, any_process, global_mesh, is_main, to_local


def default_optimizer(lr: float = Adam.lr, **kwargs) -> optax.GradientTransformation:
    """`sgm.Adam(lr, **kwargs).transform()`: Adam with linear warm-up and global-norm gradient
    clipping (Song et al. 2021, appendix H: lr 2e-4, 5000 warm-up steps, clip 1)."""
    return Adam(lr, **kwargs).transform()


class _Batches:
    """Deterministic batches: epoch `e` is the permutation `default_rng([seed, e])` of this
    process's examples, so the batch at any step is known from the step alone (exact resume).
    Each batch becomes one global array sharded over the `'data'` mesh axis."""

    def __init__(
        self, x, labels, batch_size, seed, mesh: Mesh, *, rank=None, n_proc=None, sharded=False
    ):
        rank = jax.process_index() if rank is None else rank
        n_proc = jax.process_count() if n_proc is None else n_proc
        mine = slice(None) if sharded else slice(rank, None, n_proc)  # rows rank::n_proc
        self.x = np.asarray(x)[mine]
        self.labels = None if labels is None else np.asarray(labels)[mine]
        self.local = batch_size // n_proc
        self.seed = seed
        self.sharding = NamedSharding(mesh, P("data"))

    def indices(self, step: int) -> np.ndarray:
        """The rows of this process's examples in its part of the batch of `step`."""
        n = len(self.x)
        start = step * self.local
        epoch, offset = divmod(start, n)
        idx = np.random.default_rng([*self.seed, epoch]).permutation(n)
        if offset + self.local > n:  # wrap into the next epoch's permutation
            nxt = np.random.default_rng([*self.seed, epoch + 1]).permutation(n)
            idx = np.concatenate([idx[offset:], nxt[: offset + self.local - n]])
        else:
            idx = idx[offset : offset + self.local]
        return idx

    def __call__(self, step: int):
        idx = self.indices(step)
        put = lambda a: jax.make_array_from_process_local_data(self.sharding, a[idx])  # noqa: E731
        return put(self.x), None if self.labels is None else put(self.labels)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint at `step` (in
    `checkpoint_dir`, None when there was none)."""

    def __init__(self, message: str, step: int, checkpoint_dir: Path | None):
        super().__init__(message)
        self.step, self.checkpoint_dir = step, checkpoint_dir


class TrainingDiverged(FloatingPointError):
    """The loss or the parameters became non-finite, or the loss rose far above its running
    median; `last_good_step` is the newest checkpoint's step (None without one)."""

    def __init__(self, message: str, last_good_step: int | None):
        super().__init__(message)
        self.last_good_step = last_good_step


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
    """`(x, labels, sharded)`: the training examples, and whether they are this process's
    share already (a `Dataset` from `sharded`)."""
    if isinstance(data, np.ndarray | jax.Array):
        return data, labels, False
    from .data import Dataset

    if isinstance(data, Dataset):
        here = (jax.process_index(), jax.process_count())
        if data.shard is not None and tuple(data.shard) != here:
            raise ValueError(
                f"the data are the share of process {data.shard[0]} of {data.shard[1]}, but this "
                f"is process {here[0]} of {here[1]}: shard with dataset.sharded{here}."
            )
        # labels only when asked for: conditional models
        return data.train, labels, data.shard is not None
    raise ValueError(
        f"data must be an array (N, *data_shape) or an sgm.data.Dataset, got {type(data).__name__}."
    )


def _check_class_labels(model: ScoreModel, name: str, y) -> None:
    """Class labels must lie in `[0, num_classes]` (`num_classes` is the null label); checked
    here on the host because the training step is traced without checks."""
    num_classes = getattr(getattr(model.net, "cond", None), "num_classes", None)
    if y is None or num_classes is None or getattr(model.net.cond, "label_table", None) is None:
        return
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer) or y.size and (y.min() < 0 or y.max() > num_classes):
        raise ValueError(
            f"{name} must be integer class labels in [0, {num_classes}] ({num_classes}: no "
            f"label), got {y.dtype} values in [{y.min()}, {y.max()}]."
        )


def _check_options(
    x,
    labels,
    steps,
    batch_size,
    ema_decay,
    log_every,
    eval_every,
    checkpoint_every,
    keep_checkpoints,
    divergence_factor,
):
    def positive(name, value):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")

    for name, value in (
        ("steps", steps),
        ("batch_size", batch_size),
        ("log_every", log_every),
        ("checkpoint_every", checkpoint_every),
        ("keep_checkpoints", keep_checkpoints),
    ):
        positive(name, value)
    if eval_every is not None:
        positive("eval_every", eval_every)
    if not 0 <= ema_decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay!r}.")
    if divergence_factor is not None and not divergence_factor > 1:
        raise ValueError(f"divergence_factor must be > 1 or None, got {divergence_factor!r}.")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"data must be floats in model scale, got dtype {x.dtype}: integer images go "
            "through a scaler first (sgm.AffineScaler()(images / 255), or an sgm.data Dataset's "
            "`train`)."
        )
    if x.ndim < 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"data must be a finite array (N, *data_shape), got shape {x.shape}.")
    if labels is not None and len(labels) != len(x):
        raise ValueError(
            f"labels must have one entry per example: {len(labels)} labels for {len(x)} examples."
        )


def _diverged(losses: list[float], initial: float | None, factor: float | None) -> bool:
    """Whether the newest logged loss is more than `factor` times the smaller of the initial
    model's loss and the median of the earlier readings. The median ignores isolated spikes;
    the initial loss catches a run that diverges before its first reading (a learning rate
    far too high without warm-up)."""
    if factor is None or not losses:
        return False
    references = [initial] if initial is not None else []
    if len(losses) >= 2:
        references.append(float(np.median(losses[:-1])))
    reference = min(references, default=0.0)
    return reference > 0 and not losses[-1] <= factor * reference


def train(
    model: ScoreModel,
    sde: AbstractSDE,
    data,
    optimizer: optax.GradientTransformation | Adam | None = None,
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
    log_every: int = 50,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 500,
    keep_checkpoints: int = 2,
    resume: bool = False,
    divergence_factor: float | None = 100.0,
    fingerprint: str | None = None,
    progress: bool = True,
    return_history: bool = False,
):
    """Trains `model` by denoising score matching and returns it (the EMA weights when
    `ema_decay > 0`; the decay warms up as `min(ema_decay, (1 + n) / (10 + n))` at step `n`).

    **Arguments:**

    - `model`: a `ScoreModel` whose `sde` is `sde`.
    - `data`: a float array `(N, *data_shape)` in model scale, or an `sgm.data.Dataset`. In a
      job of several processes each process trains on the rows `rank::count`: give every
      process the whole array, or each its own `dataset.sharded(rank, count)` (then it never
      holds the others' examples).
    - `optimizer`: an optax transformation or an `sgm.Adam`; default `sgm.Adam()`.
    - `steps`: the total number of steps (a resumed run continues up to it).
    - `key`: seeds the batches, times, noise and dropout of every step.
    - `batch_size`: global batch, a multiple of the device count, split over all devices.
    - `loss`: a `DSMLoss`; `labels`: one per example for conditional models.
    - `eval_data`, `eval_labels`, `eval_every`: held-out loss of the EMA model on one fixed
      batch every `eval_every` steps.
    - `log_every`: steps between loss readings (the only host synchronisation).
    - `checkpoint_dir`, `checkpoint_every`, `keep_checkpoints`, `resume`: checkpoints of the
      full state (with the loss history so far) every `checkpoint_every` steps, at the end and
      on SIGINT/SIGTERM, the newest `keep_checkpoints` kept; `resume=True` continues from the
      newest good one (`TrainingInterrupted` is raised after a stop request's save).
    - `divergence_factor`: stop with `TrainingDiverged` when a logged loss exceeds this many
      times the smaller of the untrained model's loss and the median of the earlier readings
      (`None`: off). Non-finite losses or updates are
      skipped, and stop the run at the next reading.
    - `fingerprint`: a hash of the configuration, recorded in checkpoints; resuming checks it.
    - `return_history`: also return `{"step", "loss", "eval_step", "eval_loss", "steps_per_s"}`,
      continuous across resumes.
    """
    if not isinstance(model, ScoreModel):
        raise ValueError(f"model must be an sgm.ScoreModel, got {type(model).__name__}.")
    if not same_sde(model.sde, sde):
        raise ValueError(f"model.sde is {model.sde}, but train was given {sde}.")
    x, labels, sharded = _as_arrays(data, labels)
    x = np.asarray(x)
    labels = None if labels is None else np.asarray(labels)
    _check_options(
        x,
        labels,
        steps,
        batch_size,
        ema_decay,
        log_every,
        eval_every,
        checkpoint_every,
        keep_checkpoints,
        divergence_factor,
    )
    for name, y in (("labels", labels), ("eval_labels", eval_labels)):
        _check_class_labels(model, name, y)
    mesh = global_mesh()
    n_proc = jax.process_count()
    n_local = len(x) if sharded else len(x) // n_proc  # this process's examples
    if batch_size % mesh.devices.size or batch_size // n_proc > n_local:
        raise ValueError(
            f"batch_size={batch_size} must be a multiple of the {mesh.devices.size} devices and "
            f"at most the {n_local * n_proc} examples."
        )
    if optimizer is None or isinstance(optimizer, Adam):
        optimizer = (optimizer or Adam()).transform(steps)
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jr.wrap_key_data(key)  # a legacy uint32 key from jr.PRNGKey
    state = init_state(model, optimizer, key=key)
    ckpt = None if checkpoint_dir is None else Path(checkpoint_dir)
    history = {"step": [], "loss": [], "eval_step": [], "eval_loss": [], "steps_per_s": []}
    pending, initial_loss = [], None
    if ckpt is not None and is_main():
        remove_temporaries(ckpt)
    if ckpt is not None and has_checkpoint(ckpt):
        if not resume:
            raise ValueError(
                f"{ckpt} already holds a checkpoint; pass resume=True to continue it, or use "
                "another directory."
            )
        state, meta = load_checkpoint(ckpt, like=state)
        if fingerprint and meta.get("fingerprint") not in (None, fingerprint):
            raise CheckpointError(
                f"the checkpoint in {ckpt} was written by another configuration (fingerprint "
                f"{meta['fingerprint']}, now {fingerprint}); resume with the run's own settings."
            )
        history = {k: list(v) for k, v in meta.get("history", history).items()}
        pending = [np.float32(v) for v in meta.get("pending_losses", [])]
        initial_loss = meta.get("initial_loss")
    elif resume and ckpt is not None:
        raise CheckpointError(f"resume=True, but {ckpt} holds no checkpoint to resume.")
    # Own copies: the step donates its input buffers, which must not be the caller's arrays.
    arrays, static = eqx.partition(state, eqx.is_array)
    arrays = jax.device_put(jax.tree.map(jnp.copy, arrays), NamedSharding(mesh, P()))
    state = eqx.combine(arrays, static)
    seed = [int(v) for v in np.asarray(jr.key_data(key)).ravel()]
    batches = _Batches(x, labels, batch_size, seed, mesh, sharded=sharded)
    evaluate = eval_data is not None and eval_every
    if evaluate:  # one fixed held-out batch, replicated like the state
        put = lambda a: jax.device_put(np.asarray(a)[:batch_size], NamedSharding(mesh, P()))  # noqa: E731
        eval_x = put(eval_data)
        eval_y = None if eval_labels is None else put(eval_labels)
    start = int(state.step)
    if n_proc > 1:  # every process must continue from the same checkpoint
        starts = allgather(start)
        if len(set(starts.tolist())) > 1:
            raise CheckpointError(
                f"the processes found checkpoints of different steps {starts.tolist()} in "
                f"{ckpt}; every process must see the same checkpoint directory."
            )
    tick = time.perf_counter()
    last_good = start if ckpt is not None and has_checkpoint(ckpt) else None

    def checkpoint(step):
        nonlocal last_good
        if ckpt is None:
            return
        meta = {
            "step": step,
            "history": history,
            "fingerprint": fingerprint,
            "initial_loss": initial_loss,
            "pending_losses": [float(v) for v in pending],
        }
        if is_main():  # the state is replicated: one process writes it
            save_checkpoint(ckpt, to_local(state), meta, keep=keep_checkpoints)
        if n_proc > 1:
            jax.experimental.multihost_utils.sync_global_devices(f"checkpoint {step}")
        last_good = step

    def diverged(message):
        where = (
            f"; the last good checkpoint (step {last_good}) is kept in {ckpt}"
            if last_good is not None
            else "; no checkpoint was saved"
        )
        return TrainingDiverged(message + where, last_good)

    with (
        _StopRequest() as stop,
        tqdm(total=steps, initial=start, disable=not progress, desc="train", unit="step") as bar,
    ):
        for s in range(start, steps):
            # A stop request on any process is decided by all, at the same step boundary.
            if any_process(stop.requested) if n_proc > 1 else stop.requested:
                checkpoint(s)
                raise TrainingInterrupted(
                    f"training interrupted at step {s}"
                    + (f"; checkpoint saved in {ckpt}, continue with resume=True" if ckpt else ""),
                    s,
                    ckpt,
                )
            batch, batch_labels = batches(s)
            state, value = train_step(batch, state, batch_labels, loss, optimizer, ema_decay)
            pending.append(value)
            if s == 0:  # the untrained model's loss: the scale divergence is judged against
                initial_loss = float(value)
            done = s + 1
            if done % log_every == 0 or done == steps:
                values = np.asarray(jnp.stack(pending), np.float64)
                pending = []
                if int(state.nonfinite) > 0:
                    raise diverged(
                        f"the loss or the parameters became non-finite by step {done} "
                        f"({int(state.nonfinite)} steps skipped); lower the learning rate or "
                        "check the data"
                    )
                now = time.perf_counter()
                history["step"].append(done)
                history["loss"].append(float(values.mean()))
                history["steps_per_s"].append(len(values) / (now - tick))
                tick = now
                bar.set_postfix(loss=f"{values.mean():.4f}")
                if _diverged(history["loss"], initial_loss, divergence_factor):
                    raise diverged(
                        f"the loss diverged: {history['loss'][-1]:.4g} at step {done}, more than "
                        f"{divergence_factor:g} times the initial loss {initial_loss:.4g} or the "
                        "median of the earlier readings; lower the learning rate"
                    )
            if evaluate and (done % eval_every == 0 or done == steps):
                ev = eval_loss(state.ema, eval_x, eval_y, loss, jr.key(0))
                history["eval_step"].append(done)
                history["eval_loss"].append(float(ev))
            if ckpt is not None and (done % checkpoint_every == 0 or done == steps):
                if int(state.nonfinite) == 0:
                    checkpoint(done)
            bar.update(1)
    result = to_local(state.ema if ema_decay > 0 else state.model)
    return (result, history) if return_history else result
