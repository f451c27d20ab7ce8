"""The checkpoint writer of a training run: every process takes part in gathering the state
(sharded with `sgm.train(fsdp=...)`), process 0 writes, and with
`Checkpoints(asynchronous=True)` it copies the state to host memory at the step and writes,
hashes and renames it on a background thread while training goes on. Each save, and the end
of training, first waits for the write before it; a failed write is raised there on every
process, so that no process goes on alone."""

import threading
import warnings

from ..distributed import any_process, is_main, to_local
from ._checkpoint import Prepared, prepare_checkpoint, write_checkpoint
from ._options import Checkpoints


class CheckpointWriter:
    """Writes the checkpoints of one run, one at a time. Every process calls `save` and `wait`
    at the same points; as a context manager it waits for the pending write on the way out
    (on an exception, this process's write only, with a warning if it failed).

    **Arguments:**

    - `checkpoints`: where and how to write (`None`: `save` does nothing).
    """

    def __init__(self, checkpoints: Checkpoints | None):
        self.checkpoints = checkpoints
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._step: int | None = None

    def save(self, state, meta: dict, step: int) -> None:
        """Writes `state` with `meta` as the checkpoint of `step`, after waiting for the
        previous write; returns once the state is in host memory (asynchronous) or on disk."""
        if self.checkpoints is None:
            return
        self.wait()
        self._step = step
        whole = to_local(state)  # a collective where the state is sharded over processes
        if is_main():
            try:
                prepared = prepare_checkpoint(whole, meta)
            except Exception as e:  # raised in `wait`, on every process
                self._error = e
            else:
                if self.checkpoints.asynchronous:
                    self._thread = threading.Thread(
                        target=self._write, args=(prepared,), name=f"checkpoint-{step}"
                    )
                    self._thread.start()
                else:
                    self._write(prepared)
        if not self.checkpoints.asynchronous:
            self.wait()

    def _write(self, prepared: Prepared) -> None:
        assert self.checkpoints is not None
        try:
            write_checkpoint(self.checkpoints.directory, prepared, keep=self.checkpoints.keep)
        except BaseException as e:  # raised in `wait`
            self._error = e

    def _join(self) -> BaseException | None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        return error

    def wait(self) -> None:
        """Waits until the pending checkpoint is on disk (a collective in a job of several
        processes); raises its write's error, on process 0 as it was, on the others as an
        OSError naming the step."""
        if self._step is None:
            return
        step, self._step = self._step, None
        error = self._join()
        if any_process(error is not None) and error is None:
            raise OSError(f"process 0 could not write the checkpoint of step {step}.")
        if error is not None:
            raise error

    def __enter__(self) -> "CheckpointWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.wait()
            return
        step, self._step = self._step, None
        error = self._join()
        if error is not None:
            warnings.warn(
                f"the checkpoint of step {step} could not be written: {error}", stacklevel=2
            )
