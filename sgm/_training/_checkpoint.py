"""Checkpoints: the whole train state, the last few kept, each checksummed, written so that a
crash at any moment leaves every complete checkpoint readable.

Layout: `directory/step_00001000/{state.eqx, meta.json}`. A checkpoint is written into a
temporary folder and renamed into place, then the oldest beyond `keep` are removed. `meta.json`
holds the step, the SHA-256 of `state.eqx`, the shapes and dtypes of its arrays, whatever the
trainer adds (the loss history up to the step, the configuration's fingerprint) and `checksum`,
the SHA-256 of the state file's digest and all the other metadata, so that an edited history is
found as surely as a flipped byte of the state. Reading takes the newest checkpoint that
verifies and warns about each newer one that does not; a checkpoint without a checksum (written
by an earlier version, or edited) is used only when asked for with `verify=False`.
"""

import hashlib
import io
import json
import os
import secrets
import shutil
import warnings
from datetime import UTC, datetime
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from .._compat import legacy_checkpoint
from .._io import fsync_dir, remove_temporaries, write_new

_STATE = "state.eqx"
_META = "meta.json"
_PREFIX = "step_"


class CheckpointError(ValueError):
    """No checkpoint in a directory verifies (missing, incomplete, corrupt or mismatched)."""


UNVERIFIED_HINT = (
    "if you trust it as it is, accept it explicitly: sgm.Checkpoints(..., verify=False) or "
    "sgm.load_checkpoint(..., verify=False); python main.py ... --accept-unverified"
)


def meta_checksum(meta: dict) -> str:
    """The SHA-256 of a checkpoint's metadata (its `sha256` of the state file included),
    all of it but the `checksum` entry, as canonical JSON."""
    body = {k: v for k, v in meta.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _signature(tree) -> list[str]:
    """Shapes and dtypes of every array leaf: what a checkpoint must match to be loaded."""
    leaves = jax.tree.leaves(eqx.filter(tree, eqx.is_array))
    return [f"{leaf.dtype}{list(leaf.shape)}" for leaf in leaves]


def _nonfinite(tree) -> bool:
    leaves = jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))
    return any(not np.all(np.isfinite(np.asarray(x))) for x in leaves)


def slots(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """The checkpoint folders in `directory`, newest first (`sgm._compat.legacy_checkpoint`
    reads the single-checkpoint layout of earlier versions)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    out = []
    for p in directory.iterdir():
        if p.is_dir() and p.name.startswith(_PREFIX) and p.name[len(_PREFIX) :].isdigit():
            out.append((int(p.name[len(_PREFIX) :]), p))
    if not out and (single := legacy_checkpoint(directory)) is not None:
        out.append(single)
    return sorted(out, reverse=True)


def save_checkpoint(
    directory: str | os.PathLike, state, meta: dict | None = None, *, keep: int = 2
) -> Path:
    """Saves `state` (a PyTree of arrays) and JSON `meta` as the checkpoint of step
    `meta["step"]` (default `state.step`) in `directory`, keeping the newest `keep`. Refuses a
    state holding NaN or infinity, so that every checkpoint is one to go back to."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}.")
    directory = Path(directory)
    state = jax.device_get(state)
    if _nonfinite(state):
        raise FloatingPointError("refusing to checkpoint a state with non-finite values.")
    meta = dict(meta or {})
    step = int(meta.pop("step")) if "step" in meta else int(state.step)
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, state)
    data = buffer.getvalue()
    record = {
        "step": step,
        "sha256": hashlib.sha256(data).hexdigest(),
        "signature": _signature(state),
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
        **meta,
    }
    # what is checked is what is read back: the metadata after a JSON round trip
    record = json.loads(json.dumps(record))
    record["checksum"] = meta_checksum(record)
    slot = directory / f"{_PREFIX}{step:08d}"
    tmp = directory / f".tmp-{slot.name}-{secrets.token_hex(4)}"
    try:
        tmp.mkdir(parents=True)
        write_new(tmp / _STATE, lambda f: f.write(data))
        write_new(tmp / _META, lambda f: f.write(json.dumps(record, indent=1).encode()))
        fsync_dir(tmp)
        if slot.exists():  # the same step again (a stop request right after a save)
            old = directory / f".tmp-old-{secrets.token_hex(4)}"
            os.rename(slot, old)
            os.rename(tmp, slot)
            shutil.rmtree(old)
        else:
            os.rename(tmp, slot)
        fsync_dir(directory)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = [s for s, p in slots(directory) if p != slot]
        raise OSError(
            e.errno,
            f"could not write the checkpoint of step {step} to {directory}: {e.strerror or e}"
            + (f"; the checkpoint of step {kept[0]} is kept" if kept else ""),
        ) from e
    for _, old in [s for s in slots(directory) if s[1] != directory][keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return slot


def has_checkpoint(directory: str | os.PathLike) -> bool:
    """Whether `directory` holds any checkpoint (valid or not)."""
    return bool(slots(directory))


def _read_meta(slot: Path, verify: bool = True) -> dict:
    """The metadata of one checkpoint folder after verifying it: the state file against its
    digest and the metadata against its checksum (`verify=False`: only that both exist)."""
    if not (slot / _STATE).exists() or not (slot / _META).exists():
        raise CheckpointError(f"{slot} is incomplete (needs {_STATE} and {_META})")
    try:
        meta = json.loads((slot / _META).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{slot / _META} is corrupt: {e}") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise CheckpointError(f"{slot / _META} is corrupt: no step")
    if not verify:
        return meta
    if "checksum" not in meta or "sha256" not in meta:
        raise CheckpointError(
            f"{slot / _META} has no checksum (written by an earlier version, or edited), so "
            "its state and history cannot be verified"
        )
    if meta_checksum(meta) != meta["checksum"]:
        raise CheckpointError(
            f"{slot / _META} was changed after it was written (checksum mismatch)"
        )
    digest = hashlib.sha256((slot / _STATE).read_bytes()).hexdigest()
    if digest != meta["sha256"]:
        raise CheckpointError(f"{slot / _STATE} is corrupt or truncated (checksum mismatch)")
    return meta


def verified(directory: str | os.PathLike, *, verify: bool = True) -> tuple[Path, dict]:
    """The newest checkpoint in `directory` that verifies (complete, checksums of the state
    and the metadata), with its metadata; warns about newer ones that do not. Raises
    `CheckpointError` if none does, saying how to accept an unverifiable one explicitly
    (`verify=False`: complete is enough)."""
    directory = Path(directory)
    found = slots(directory)
    if not found:
        what = "does not exist" if not directory.exists() else "holds no checkpoint"
        raise CheckpointError(f"{directory} {what}.")
    problems = []
    for _, slot in found:
        try:
            meta = _read_meta(slot, verify)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        for p in problems:
            warnings.warn(f"skipping a bad checkpoint: {p}; using {slot.name}", stacklevel=2)
        return slot, meta
    hint = f"; {UNVERIFIED_HINT}" if verify and any("checksum" in p for p in problems) else ""
    raise CheckpointError(f"no checkpoint in {directory} can be read: {'; '.join(problems)}{hint}.")


def load_checkpoint(directory: str | os.PathLike, like, *, verify: bool = True):
    """Reads the newest good checkpoint in `directory` into the structure of `like`; returns
    `(state, meta)`. A corrupt newest checkpoint falls back to the one before it, with a
    warning; none readable, or one that does not match `like`, is a `CheckpointError` (a
    ValueError) saying which, never a silent fresh start. A checkpoint without checksums is
    read only with `verify=False`."""
    directory = Path(directory)
    remove_temporaries(directory)
    slot, meta = verified(directory, verify=verify)
    expected = _signature(like)
    if meta.get("signature") != expected:
        saved = meta.get("signature") or []
        pairs = zip(saved, expected, strict=False)
        diffs = [f"leaf {i}: saved {a}, model has {b}" for i, (a, b) in enumerate(pairs) if a != b]
        diff = diffs[0] if diffs else f"{len(saved)} saved arrays, model has {len(expected)}"
        raise CheckpointError(
            f"checkpoint {slot} does not match this model and optimizer ({diff}); "
            "use the configuration it was trained with, or a fresh output directory."
        )
    try:
        state = eqx.tree_deserialise_leaves(slot / _STATE, like)
    except Exception as e:  # numpy raises several kinds on truncated files
        raise CheckpointError(f"checkpoint {slot / _STATE} is corrupt or truncated: {e}") from e
    if _nonfinite(state):
        raise CheckpointError(f"checkpoint {slot / _STATE} holds non-finite values.")
    return state, meta


def checkpoint_meta(directory: str | os.PathLike, *, verify: bool = True) -> dict:
    """The metadata (step, loss history, ...) of the newest good checkpoint in `directory`."""
    return verified(directory, verify=verify)[1]
