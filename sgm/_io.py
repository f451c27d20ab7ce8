"""Files that are either whole or absent: every write goes through a temporary file in the
same directory, is flushed to disk, then renamed over the target."""

import json
import os
import secrets
from pathlib import Path

import equinox as eqx


def write_new(path: str | os.PathLike, write) -> None:
    """Creates `path`, which must not exist, calls `write(f)` on it and flushes it to disk.
    The file's mode follows the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode & ~umask
    with os.fdopen(fd, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def atomic_write(path: str | os.PathLike, write) -> None:
    """Calls `write(f)` on a new temporary file beside `path`, then renames it to `path`: a
    crash leaves the old file or the new one, never half a file, and a failed write (a full
    disk) leaves the old file and no temporary. The file's mode follows the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        write_new(tmp, write)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Makes a rename in `directory` durable (where the platform allows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike, obj) -> None:
    """Writes `obj` as indented JSON, atomically."""
    text = json.dumps(obj, indent=1)
    atomic_write(path, lambda f: f.write(text.encode()))


def save_model(path: str | os.PathLike, model) -> None:
    """Writes a model's arrays (`eqx.tree_serialise_leaves`), atomically."""
    atomic_write(path, lambda f: eqx.tree_serialise_leaves(f, model))


def remove_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Deletes what interrupted writes left in `directory` (`.*.tmp` files and `.tmp-*`
    folders) and returns their paths."""
    import shutil

    directory = Path(directory)
    if not directory.is_dir():
        return []
    names = lambda p: p.name.startswith(".tmp-") or (p.name[:1] == "." and p.suffix == ".tmp")  # noqa: E731
    found = [p for p in directory.iterdir() if names(p)]
    for p in found:
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    return found
