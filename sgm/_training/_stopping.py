"""Why a training run stops before its last step: a stop request (SIGINT/SIGTERM, turned into a
flag checked between steps and decided by all processes at once) or divergence of the loss,
and the exceptions that say so with where the last checkpoint is."""

import signal
import threading
from pathlib import Path

import jax
import numpy as np

from ..distributed import any_process
from ._options import Checkpoints


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


class StopRequest:
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


def stop_requested(stop: StopRequest) -> bool:
    """A stop request on any process is decided by all, at the same step boundary."""
    return any_process(stop.requested) if jax.process_count() > 1 else stop.requested


def interrupted(step: int, checkpoints: Checkpoints | None) -> TrainingInterrupted:
    directory = None if checkpoints is None else checkpoints.directory
    where = f"; checkpoint saved in {directory}, continue with resume=True" if directory else ""
    return TrainingInterrupted(f"training interrupted at step {step}" + where, step, directory)


def diverged(losses: list[float], initial: float | None, factor: float | None) -> bool:
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


def diverged_error(message: str, last_good: int | None, checkpoints) -> TrainingDiverged:
    where = (
        f"; the last good checkpoint (step {last_good}) is kept in {checkpoints.directory}"
        if last_good is not None
        else "; no checkpoint was saved"
    )
    return TrainingDiverged(message + where, last_good)
