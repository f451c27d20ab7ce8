"""One writer per run directory: an exclusive OS file lock (`flock`) on `DIR/lock`, held by
every invocation that writes into the run for its whole life and released by the operating
system on any exit, `kill -9` included. The lock file says who holds it (pid, command line,
since when), so that a second writer is refused with that in one line, before any work.
Readers take no lock."""

import fcntl
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

LOCK = "lock"


class RunLocked(ValueError):
    """Another process holds the run's lock."""


class RunLock:
    """The held lock of one run directory; `release()` (or the end of the process) frees it."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd

    @classmethod
    def acquire(cls, run_dir: str | os.PathLike) -> "RunLock":
        """Takes the lock of `run_dir` without waiting: `RunLocked` naming the holder when
        another process has it, `PermissionError`/`OSError` when the directory is not
        writable."""
        path = Path(run_dir) / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLocked(
                f"{run_dir} is being written by another process ({holder(run_dir)}); wait "
                "until it ends or stop it. Only one invocation at a time may write into a run."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        record = {
            "pid": os.getpid(),
            "command": " ".join(sys.argv) or sys.executable,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def holder(run_dir: str | os.PathLike) -> str:
    """Who holds (or last held) the lock of `run_dir`, as words."""
    try:
        record = json.loads((Path(run_dir) / LOCK).read_text())
        return f"pid {record['pid']}, `{record['command']}`, since {record['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet said who it is"
