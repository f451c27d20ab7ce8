"""The options of `sgm.train`, one small frozen object per concern (as diffrax's `SaveAt`):
where and how often to checkpoint, what to watch while training, the held-out evaluation.
Each validates its fields once, when it is built."""

import os
from pathlib import Path

import equinox as eqx
import numpy as np
from jaxtyping import ArrayLike

from .._checks import check_float, check_int

BATCH_SIZE = 128
"""`sgm.train`'s default global batch."""

EMA_DECAY = 0.999
"""`sgm.train`'s default decay of the exponential moving average of the weights, the model
that Song et al. (2021, appendix H) sample from."""


def _as_path(value) -> Path:
    if not isinstance(value, str | os.PathLike):
        raise ValueError(f"Checkpoints.directory must be a path, got {type(value).__name__}.")
    return Path(value)


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r}.")


class Checkpoints(eqx.Module):
    """Checkpoints of the full train state (model, EMA, optimizer state, step, key), with the
    loss history so far: every `every` steps, at the end, and on SIGINT/SIGTERM. Each is
    written atomically and checksummed (`sgm.save_checkpoint`); the newest `keep` are kept.

    **Arguments:**

    - `directory`: the folder of the checkpoints (`directory/step_00001000/...`).
    - `every`: steps between checkpoints.
    - `keep`: how many of the newest checkpoints are kept.
    - `resume`: continue from the newest good checkpoint in `directory` (it must hold one);
      without, `directory` must hold none, so that no run is overwritten.
    - `fingerprint`: a hash of the run's configuration, recorded in each checkpoint; resuming
      from a checkpoint with another fingerprint is a `CheckpointError`.
    - `verify`: resume only from a checkpoint whose state file and metadata match their
      checksums (a `CheckpointError` otherwise); `False` accepts one without checksums, such
      as one written by an earlier version, as it is.
    """

    directory: Path = eqx.field(converter=_as_path)
    every: int = eqx.field(default=500, kw_only=True)
    keep: int = eqx.field(default=2, kw_only=True)
    resume: bool = eqx.field(default=False, kw_only=True)
    fingerprint: str | None = eqx.field(default=None, kw_only=True)
    verify: bool = eqx.field(default=True, kw_only=True)

    def __check_init__(self):
        check_int("Checkpoints.every", self.every)
        check_int("Checkpoints.keep", self.keep)
        _check_bool("Checkpoints.resume", self.resume)
        _check_bool("Checkpoints.verify", self.verify)
        if self.fingerprint is not None and not isinstance(self.fingerprint, str):
            raise ValueError(
                f"Checkpoints.fingerprint must be a string or None, got {self.fingerprint!r}."
            )


class Evaluation(eqx.Module):
    """The held-out loss of the EMA model on one fixed batch (the first `batch_size` rows of
    `data`, with a fixed key, so that readings are comparable over training), every `every`
    steps and at the end; recorded in the history as `eval_step` and `eval_loss`.

    **Arguments:**

    - `data`: held-out examples `(N, *data_shape)` in model scale.
    - `labels`: their labels, one per example, for conditional models.
    - `every`: steps between readings.
    """

    data: ArrayLike
    labels: ArrayLike | None = eqx.field(default=None, kw_only=True)
    every: int = eqx.field(default=500, kw_only=True)

    def __check_init__(self):
        check_int("Evaluation.every", self.every)
        shape = np.shape(self.data)
        if len(shape) < 2 or shape[0] < 1:
            raise ValueError(f"Evaluation.data must be a batch (N, *data_shape), got {shape}.")
        n_labels = None if self.labels is None else np.shape(self.labels)[0]
        if n_labels is not None and n_labels != shape[0]:
            raise ValueError(
                f"Evaluation.labels must have one entry per example: {n_labels} labels "
                f"for {shape[0]} examples."
            )


class Monitor(eqx.Module):
    """What training watches and reports. The mean training loss is read every `every` steps
    (the only host synchronisation of the loop); each reading is judged by the stopping rules
    and shown on the progress bar.

    Stopping rules: a non-finite loss or update is skipped (the state stays as it was) and
    stops the run at the next reading with `TrainingDiverged`; so does a reading more than
    `divergence_factor` times the smaller of the untrained model's loss and the median of the
    earlier readings. A SIGINT/SIGTERM stops the run at the next step boundary with
    `TrainingInterrupted`, after a checkpoint.

    **Arguments:**

    - `every`: steps between loss readings.
    - `divergence_factor`: the divergence rule's factor, > 1 (`None`: no divergence rule).
    - `evaluation`: an `sgm.Evaluation`, the held-out loss (`None`: none).
    - `progress`: show a progress bar.
    - `history`: `sgm.train` also returns the history of the readings,
      `{"step", "loss", "eval_step", "eval_loss", "steps_per_s"}`, continuous across resumes.
    """

    every: int = eqx.field(default=50, kw_only=True)
    divergence_factor: float | None = eqx.field(default=100.0, kw_only=True)
    evaluation: Evaluation | None = eqx.field(default=None, kw_only=True)
    progress: bool = eqx.field(default=True, kw_only=True)
    history: bool = eqx.field(default=False, kw_only=True)

    def __check_init__(self):
        check_int("Monitor.every", self.every)
        check_float("Monitor.divergence_factor", self.divergence_factor, above=1.0, none=True)
        if self.evaluation is not None and not isinstance(self.evaluation, Evaluation):
            raise ValueError(
                "Monitor.evaluation must be an sgm.Evaluation or None, got "
                f"{type(self.evaluation).__name__}."
            )
        _check_bool("Monitor.progress", self.progress)
        _check_bool("Monitor.history", self.history)
