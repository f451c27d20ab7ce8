"""Checkpoints: the whole train state, written atomically, read back with clear errors."""

import json
import os
import tempfile
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

_STATE = "state.eqx"
_META = "meta.json"


def _signature(tree) -> list[str]:
    """Shapes and dtypes of every array leaf: what a checkpoint must match to be loaded."""
    leaves = jax.tree.leaves(eqx.filter(tree, eqx.is_array))
    return [f"{leaf.dtype}{list(leaf.shape)}" for leaf in leaves]


def _atomic_write(path: Path, write) -> None:
    """Writes through a temporary file in the same directory, then renames: a crash leaves
    either the old file or the new one, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(directory: str | os.PathLike, state, meta: dict | None = None) -> None:
    """Saves `state` (any PyTree of arrays) and JSON `meta` into `directory`. The state file is
    replaced first, the metadata (which records the step) last, each atomically."""
    directory = Path(directory)
    state = jax.device_get(state)
    _atomic_write(directory / _STATE, lambda f: eqx.tree_serialise_leaves(f, state))
    record = {"signature": _signature(state), **(meta or {})}
    _atomic_write(directory / _META, lambda f: f.write(json.dumps(record, indent=1).encode()))


def has_checkpoint(directory: str | os.PathLike) -> bool:
    directory = Path(directory)
    return (directory / _STATE).exists() and (directory / _META).exists()


def load_checkpoint(directory: str | os.PathLike, like):
    """Reads the state saved in `directory` into the structure of `like`; returns
    `(state, meta)`. A missing, corrupt or mismatched checkpoint raises a ValueError saying
    which, never a silent fresh start."""
    directory = Path(directory)
    if not has_checkpoint(directory):
        raise FileNotFoundError(f"no checkpoint in {directory} (expected {_STATE} and {_META}).")
    try:
        meta = json.loads((directory / _META).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"checkpoint metadata {directory / _META} is corrupt: {e}") from e
    expected = _signature(like)
    if meta.get("signature") != expected:
        saved = meta.get("signature") or []
        pairs = zip(saved, expected, strict=False)
        diffs = [f"leaf {i}: saved {a}, model has {b}" for i, (a, b) in enumerate(pairs) if a != b]
        diff = diffs[0] if diffs else f"{len(saved)} saved arrays, model has {len(expected)}"
        raise ValueError(
            f"checkpoint in {directory} does not match this model and optimizer ({diff}); "
            "use the configuration it was trained with, or a fresh output directory."
        )
    try:
        state = eqx.tree_deserialise_leaves(directory / _STATE, like)
    except Exception as e:  # numpy raises several kinds on truncated files
        raise ValueError(f"checkpoint {directory / _STATE} is corrupt or truncated: {e}") from e
    leaves = jax.tree.leaves(eqx.filter(state, eqx.is_inexact_array))
    bad = [x for x in leaves if not np.all(np.isfinite(np.asarray(x)))]
    if bad:
        raise ValueError(f"checkpoint {directory / _STATE} holds non-finite values.")
    return state, meta
