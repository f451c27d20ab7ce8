"""`sgm.train`: the loop around the jitted step, with resume, loss readings and the stopping
rules, held-out evaluation, checkpoints and stop requests. In a job of several processes a
stop request is decided by all at the same step, the resume step is checked across processes,
and process 0 alone writes (`_writer`)."""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import PRNGKeyArray

from .. import _compat
from .._checks import check_int, check_key, check_probability
from .._io import remove_temporaries
from .._learned_schedule import same_sde
from .._losses import AbstractLoss, DSMLoss
from .._optimizer import Adam
from .._progress import progress
from .._score import ScoreModel
from .._sde import AbstractSDE
from .._sharding import replicated
from ..distributed import allgather, broadcast, global_mesh, is_main, to_local
from ._batches import Batches
from ._checkpoint import CheckpointError, has_checkpoint, load_checkpoint
from ._fsdp import check_fsdp, fsdp_mesh, place_state
from ._inputs import (
    as_arrays,
    check_accumulate,
    check_class_labels,
    check_data,
    check_random_flip,
)
from ._options import BATCH_SIZE, EMA_DECAY, Checkpoints, Evaluation, Monitor
from ._posthoc import PostHocEMA, check_fresh, init_averages, resolved, save_snapshot
from ._precision import check_float32_parameters, check_precision
from ._state import TrainState, bound_inputs, eval_bound, eval_loss, init_state, train_step
from ._stopping import (
    StopRequest,
    diverged,
    diverged_error,
    interrupted,
    stop_requested,
)
from ._writer import CheckpointWriter


class _Record:
    """What a checkpoint carries besides the state: the history of the readings, the losses
    since the last reading, the untrained model's loss, and the newest checkpoint's step."""

    def __init__(self, extra_keys: tuple[str, ...] = ()):
        self.history = {"step": [], "loss": [], "eval_step": [], "eval_loss": [], "steps_per_s": []}
        self.history.update({k: [] for k in extra_keys})
        self.pending: list = []
        self.initial_loss: float | None = None
        self.last_good: int | None = None

    def restore(self, meta: dict) -> None:
        fresh = self.history
        self.history = {k: list(v) for k, v in meta.get("history", fresh).items()}
        for k in fresh:
            self.history.setdefault(k, [])
        self.pending = [np.float32(v) for v in meta.get("pending_losses", [])]
        self.initial_loss = meta.get("initial_loss")

    def meta(self, step: int, fingerprint: str | None) -> dict:
        return {
            "step": step,
            "history": self.history,
            "fingerprint": fingerprint,
            "initial_loss": self.initial_loss,
            "pending_losses": [float(v) for v in self.pending],
        }


def _resume(state: TrainState, checkpoints: Checkpoints | None, record: _Record) -> TrainState:
    """The newest good checkpoint's state (and `record` restored from it) when resuming; the
    fresh `state` otherwise. A directory holding a checkpoint is never overwritten silently."""
    if checkpoints is None:
        return state
    directory = checkpoints.directory
    if is_main():
        remove_temporaries(directory)
    if not has_checkpoint(directory):
        if checkpoints.resume:
            raise CheckpointError(f"resume=True, but {directory} holds no checkpoint to resume.")
        return state
    if not checkpoints.resume:
        raise ValueError(
            f"{directory} already holds a checkpoint; pass resume=True to continue it, or use "
            "another directory."
        )
    state, meta = load_checkpoint(directory, like=state, verify=checkpoints.verify)
    fingerprint = checkpoints.fingerprint
    if fingerprint and meta.get("fingerprint") not in (None, fingerprint):
        raise CheckpointError(
            f"the checkpoint in {directory} was written by another configuration (fingerprint "
            f"{meta['fingerprint']}, now {fingerprint}); resume with the run's own settings."
        )
    record.restore(meta)
    return state


def _replicated_copy(state: TrainState, mesh) -> TrainState:
    """The state replicated over `mesh`, in arrays of its own: the step donates its input
    buffers, which must not be the caller's arrays. The arrays go through host memory: a
    restored checkpoint's arrays are committed to a device of this process, which a job of
    several processes cannot put onto the global mesh directly."""
    arrays, static = eqx.partition(state, eqx.is_array)
    host = jax.tree.map(lambda a: np.array(a, copy=True), arrays)
    return eqx.combine(jax.device_put(host, replicated(mesh)), static)


def _held_out(evaluation: Evaluation, batch_size: int, mesh) -> tuple:
    """The fixed held-out batch `(x, labels)`, its first `batch_size` rows, replicated like
    the state, and the inputs of the bound (None without one)."""
    put = lambda a: jax.device_put(np.asarray(a)[:batch_size], replicated(mesh))  # noqa: E731
    labels = evaluation.labels
    bound = evaluation.bound
    bound_xy = None if bound is None else bound_inputs(bound, evaluation.data, labels)
    return put(evaluation.data), None if labels is None else put(labels), bound_xy


def _read_held_out(state: TrainState, record: _Record, evaluation: Evaluation, held_out, loss):
    """The held-out loss and, with a bound, its reading: host values, process 0's on every
    process. Returns the bound's reading (None without one)."""
    eval_x, eval_y, bound_xy = held_out
    value = float(eval_loss(state.ema, eval_x, eval_y, loss, jr.key(0)))
    record.history["eval_loss"].append(value)
    if evaluation.bound is None:
        return None
    # every process computes the bound on its own devices from the same inputs
    mean, se = eval_bound(to_local(state.ema), evaluation.bound, *bound_xy)
    mean, se = (float(v) for v in broadcast(np.array([mean, se])))
    key, se_key = evaluation.bound.keys
    record.history[key].append(mean)
    record.history[se_key].append(se)
    return mean


def _check_same_start(start: int, checkpoints: Checkpoints | None) -> None:
    """Every process must continue from the same checkpoint."""
    if jax.process_count() == 1:
        return
    starts = allgather(start)
    if len(set(starts.tolist())) > 1:
        where = None if checkpoints is None else checkpoints.directory
        raise CheckpointError(
            f"the processes found checkpoints of different steps {starts.tolist()} in "
            f"{where}; every process must see the same checkpoint directory."
        )


def _save(writer: CheckpointWriter, state: TrainState, record: _Record, step: int):
    """Checkpoints the state of `step` (process 0 writes, in the background with
    `Checkpoints(asynchronous=True)`)."""
    checkpoints = writer.checkpoints
    if checkpoints is None:
        return
    writer.save(state, record.meta(step, checkpoints.fingerprint), step)
    record.last_good = step


def _read_losses(state, record: _Record, monitor: Monitor, done: int, elapsed: float, checkpoints):
    """One loss reading: the mean of the losses since the last, appended to the history, then
    judged by the stopping rules (non-finite steps, divergence)."""
    values = np.asarray(jnp.stack(record.pending), np.float64)
    record.pending = []
    if int(state.nonfinite) > 0:
        raise diverged_error(
            f"the loss or the parameters became non-finite by step {done} "
            f"({int(state.nonfinite)} steps skipped); lower the learning rate or check the data",
            record.last_good,
            checkpoints,
        )
    history = record.history
    history["step"].append(done)
    history["loss"].append(float(values.mean()))
    history["steps_per_s"].append(len(values) / elapsed)
    if diverged(history["loss"], record.initial_loss, monitor.divergence_factor):
        raise diverged_error(
            f"the loss diverged: {history['loss'][-1]:.4g} at step {done}, more than "
            f"{monitor.divergence_factor:g} times the initial loss {record.initial_loss:.4g} or "
            "the median of the earlier readings; lower the learning rate",
            record.last_good,
            checkpoints,
        )
    return values.mean()


def _due(done: int, every: int, steps: int) -> bool:
    """Whether a cadence of `every` steps falls on step `done` (the last step always does)."""
    return done % every == 0 or done == steps


def _run(
    state,
    batches,
    record,
    *,
    steps,
    loss,
    step_options,
    writer,
    monitor,
    held_out,
    posthoc_ema=None,
):
    """The step loop from `state.step` to `steps`: each step's batch, the jitted step, and at
    their cadences the loss readings, the held-out loss and the checkpoints (`writer`)."""
    checkpoints = writer.checkpoints
    start = int(state.step)
    tick = time.perf_counter()
    bar = progress(
        total=steps, initial=start, disable=not monitor.progress, desc="train", unit="step"
    )
    postfix = {}
    with StopRequest() as stop, bar:
        for s in range(start, steps):
            if stop_requested(stop):
                _save(writer, state, record, s)
                writer.wait()
                raise interrupted(s, checkpoints)
            batch, batch_labels = batches(s)
            state, value = train_step(batch, state, batch_labels, loss, *step_options)
            record.pending.append(value)
            if s == 0:  # the untrained model's loss: the scale divergence is judged against
                record.initial_loss = float(value)
            done = s + 1
            if _due(done, monitor.every, steps):
                now = time.perf_counter()
                mean = _read_losses(state, record, monitor, done, now - tick, checkpoints)
                tick = now
                postfix["loss"] = f"{mean:.4f}"
                bar.set_postfix(postfix, refresh=False)  # shown at the next update
            evaluation = monitor.evaluation
            if evaluation is not None and _due(done, evaluation.every, steps):
                record.history["eval_step"].append(done)
                reading = _read_held_out(state, record, evaluation, held_out, loss)
                if reading is not None:
                    unit = evaluation.bound.unit.replace("_per_", "/")
                    postfix["bound"] = f"{reading:.4g} {unit}"
                    bar.set_postfix(postfix, refresh=False)
            if checkpoints is not None and _due(done, checkpoints.every, steps):
                if int(state.nonfinite) == 0:
                    _save(writer, state, record, done)
            if posthoc_ema is not None and _due(done, posthoc_ema.snapshot_every, steps):
                if int(state.nonfinite) == 0:
                    save_snapshot(posthoc_ema, state.posthoc_ema, done)
            bar.update(1)
    return state


@_compat.train_keywords
def train(
    model: ScoreModel,
    sde: AbstractSDE,
    data,
    optimizer: optax.GradientTransformation | Adam | None = None,
    *,
    steps: int,
    key: PRNGKeyArray,
    batch_size: int = BATCH_SIZE,
    loss: AbstractLoss = DSMLoss(),
    ema_decay: float = EMA_DECAY,
    labels=None,
    checkpoints: Checkpoints | None = None,
    monitor: Monitor = Monitor(),
    random_flip: bool = False,
    posthoc_ema: PostHocEMA | None = None,
    precision: str = "float32",
    accumulate: int = 1,
    fsdp: int = 1,
):
    """Trains `model` by denoising score matching and returns it. With `ema_decay > 0` the
    weights returned are the exponential moving average of the trained ones, the model that
    Song et al. (2021, appendix H) sample from; its decay warms up as
    `min(ema_decay, (1 + n) / (10 + n))` at step `n`.

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
    - `loss`: a `DSMLoss` or a `FlowMatchingLoss`.
    - `ema_decay`: the EMA's decay in `[0, 1)` (0: no average, the trained weights).
    - `labels`: one per example, for conditional models; required for a class-conditional
      one (to train only its null label `num_classes`, pass labels all equal to it).
    - `checkpoints`: an `sgm.Checkpoints`, where and how often to checkpoint and whether to
      resume (`None`: no checkpoints). `TrainingInterrupted` is raised after a stop request's
      checkpoint.
    - `monitor`: an `sgm.Monitor`: loss readings, the stopping rules (`TrainingDiverged`),
      held-out evaluation, progress bar, and whether the history is returned.
    - `random_flip`: mirror each training image left-right with probability 1/2 at every
      step (images `(N, C, H, W)` only; a conditioning map is mirrored with its image), as
      Song et al. (2021) train on CIFAR-10; the flips of a step are fixed by the key and the
      step, so a resumed run repeats them. Held-out evaluation is never flipped.
    - `posthoc_ema`: an `sgm.PostHocEMA`: also track power-function EMAs and write their
      snapshots, from which `sgm.reconstruct_ema` rebuilds any EMA length after training
      (`None`: none; the model returned is the `ema_decay` average either way).
    - `precision`: what the network's forward and backward passes compute in, `"float32"`
      or `"bfloat16"` (mixed precision: the parameters, optimizer state, EMA, loss and
      returned model stay float32). `"float16"` is refused: it needs loss scaling.
    - `accumulate`: micro-batches per step, `K >= 1`: the global batch is split into `K`
      micro-batches of `batch_size / K` inside the jitted step (one `lax.scan`), their
      gradients averaged, then one optimizer update; `batch_size` must be a multiple of
      the device count times `K`. Micro-batch `j` draws its noise and times from the step's
      key folded with `j`, and joint draws (stratified or antithetic times, couplings) are
      joint within a micro-batch.
    - `fsdp`: parameter shards, `F >= 1` dividing the device count: with `F > 1` the
      devices form a `(devices / F, F)` mesh `('data', 'fsdp')`, the batch is split over all
      of them as before, and each floating-point array of the train state (parameters, EMA,
      optimizer moments, post-hoc averages) is split along its largest dimension that `F`
      divides, so a device stores about `1 / F` of the state (fully sharded data
      parallelism; arrays `F` divides no dimension of stay whole). The parameters are
      gathered for the network's passes, so the result is the data-parallel one up to float
      rounding. The returned model is whole on this process's default device.

    **Returns:** the trained model, or `(model, history)` with `Monitor(history=True)`.
    """
    if not isinstance(model, ScoreModel):
        raise ValueError(f"model must be an sgm.ScoreModel, got {type(model).__name__}.")
    if not same_sde(model.sde, sde):
        raise ValueError(f"model.sde is {model.sde}, but train was given {sde}.")
    if checkpoints is not None and not isinstance(checkpoints, Checkpoints):
        raise ValueError(
            f"checkpoints must be an sgm.Checkpoints or None, got {type(checkpoints).__name__}."
        )
    if not isinstance(monitor, Monitor):
        raise ValueError(f"monitor must be an sgm.Monitor, got {type(monitor).__name__}.")
    posthoc_ema = resolved(posthoc_ema, checkpoints)
    x, labels, sharded = as_arrays(data, labels)
    x = np.asarray(x)
    labels = None if labels is None else np.asarray(labels)
    check_int("steps", steps)
    key = check_key(key)
    check_int("batch_size", batch_size)
    check_probability("ema_decay", ema_decay)
    check_precision("precision", precision)
    check_float32_parameters("model", model)
    params = eqx.filter(model, eqx.is_inexact_array)
    fsdp = check_fsdp(fsdp, jax.device_count(), params)
    mesh = global_mesh() if fsdp == 1 else fsdp_mesh(fsdp)
    check_data(x, labels, batch_size, mesh, sharded)
    check_random_flip(random_flip, x.shape[1:])
    accumulate = check_accumulate(accumulate, batch_size, mesh)
    evaluation = monitor.evaluation
    check_class_labels(model, "labels", labels, len(x))
    if evaluation is not None:
        check_class_labels(
            model, "Evaluation.labels", evaluation.labels, int(np.shape(evaluation.data)[0])
        )
        if np.shape(evaluation.data)[1:] != x.shape[1:]:
            raise ValueError(
                f"Evaluation.data must have the training data's example shape {x.shape[1:]}, "
                f"got {np.shape(evaluation.data)[1:]}."
            )
    if optimizer is None or isinstance(optimizer, Adam):
        optimizer = (optimizer or Adam()).transform(steps)
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jr.wrap_key_data(key)  # a legacy uint32 key from jr.PRNGKey
    record = _Record(
        () if evaluation is None or evaluation.bound is None else evaluation.bound.keys
    )
    averages = init_averages(model, posthoc_ema)
    state = _resume(
        init_state(model, optimizer, key=key, posthoc_ema=averages), checkpoints, record
    )
    check_fresh(posthoc_ema, resuming=checkpoints is not None and checkpoints.resume)
    state = _replicated_copy(state, mesh) if fsdp == 1 else place_state(state, mesh)
    seed = [int(v) for v in np.asarray(jr.key_data(key)).ravel()]
    batches = Batches(x, labels, batch_size, seed, mesh, sharded=sharded, random_flip=random_flip)
    held_out = None if evaluation is None else _held_out(evaluation, batch_size, mesh)
    _check_same_start(int(state.step), checkpoints)
    if checkpoints is not None and has_checkpoint(checkpoints.directory):
        record.last_good = int(state.step)
    with CheckpointWriter(checkpoints) as writer:
        state = _run(
            state,
            batches,
            record,
            steps=steps,
            loss=loss,
            step_options=(optimizer, ema_decay, precision, accumulate, None if fsdp == 1 else mesh),
            writer=writer,
            monitor=monitor,
            held_out=held_out,
            posthoc_ema=posthoc_ema,
        )
    result = to_local(state.ema if ema_decay > 0 else state.model)
    return (result, record.history) if monitor.history else result
