"""Checkpoints: the whole train state, the last few kept, each checksummed, written so that a
crash at any moment leaves every complete checkpoint readable.

Layout: `directory/step_00001000/{state/, meta.json}`, `state/` an orbax-checkpoint PyTree
checkpoint of the state's arrays (`_orbax`). A checkpoint is written into a temporary folder
and renamed into place, then the oldest beyond `keep` are removed. `meta.json` holds the step,
`files` (the SHA-256 of every file under `state/`, by relative path), `sha256` (the SHA-256 of
that listing), the shapes and dtypes of the arrays, whatever the trainer adds (the loss history
up to the step, the configuration's fingerprint) and `checksum`, the SHA-256 of all the other
metadata, so that an edited history is found as surely as a flipped byte of the state. Reading
takes the newest checkpoint that verifies and warns about each newer one that does not; a
checkpoint without a checksum (edited, or written by an early version) is used only when asked
for with `verify=False`. The arrays are read onto the shardings of the target's arrays, so a
state saved from any number of devices restores onto any other.

`save_state_file` writes the single-file layout `{state.eqx, meta.json}` (`sha256` the digest
of `state.eqx`): the post-hoc EMA snapshots use it, and so did the train checkpoints of
earlier versions, which `sgm._compat.read_state_file` reads.
"""

import dataclasses
import hashlib
import io
import json
import os
import secrets
import shutil
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from .._compat import legacy_checkpoint, read_state_file
from .._io import fsync_dir, remove_temporaries, write_new
from ._orbax import read_arrays, write_arrays

_STATE = "state.eqx"
_STATE_DIR = "state"
_META = "meta.json"
_PREFIX = "step_"


class CheckpointError(ValueError):
    """No checkpoint in a directory verifies (missing, incomplete, corrupt or mismatched)."""


UNVERIFIED_HINT = (
    "if you trust it as it is, accept it explicitly: sgm.Checkpoints(..., verify=False) or "
    "sgm.load_checkpoint(..., verify=False); python main.py ... --accept-unverified"
)


def meta_checksum(meta: dict) -> str:
    """The SHA-256 of a checkpoint's metadata (its digests of the state's files included),
    all of it but the `checksum` entry, as canonical JSON."""
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return _json_digest(body)


def _json_digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _flush(folder: Path) -> None:
    """Flushes every file and folder under `folder` to disk, deepest first."""
    for p in sorted(folder.rglob("*"), key=lambda p: -len(p.parts)):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            fsync_dir(p)
    fsync_dir(folder)


def _digests(slot: Path) -> dict[str, str]:
    """The SHA-256 of every file under `slot/state/`, by path relative to `slot`."""
    files = sorted(p for p in (slot / _STATE_DIR).rglob("*") if p.is_file())
    return {p.relative_to(slot).as_posix(): _file_digest(p) for p in files}


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


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A state copied to host memory, ready to be written: its arrays (numpy), its step and
    its metadata but the digests."""

    leaves: list
    step: int
    record: dict


def prepare_checkpoint(state, meta: dict | None = None) -> Prepared:
    """Copies `state` (a PyTree of arrays) to host memory with the metadata of its checkpoint,
    `meta` and the step (`meta["step"]`, default `state.step`). Refuses a state holding NaN or
    infinity, so that every checkpoint is one to go back to."""
    state = jax.device_get(state)
    if _nonfinite(state):
        raise FloatingPointError("refusing to checkpoint a state with non-finite values.")
    meta = dict(meta or {})
    step = int(meta.pop("step")) if "step" in meta else int(state.step)
    record = {
        "step": step,
        "signature": _signature(state),
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
        **meta,
    }
    # a copy: the caller's history goes on growing while an asynchronous write runs
    record = json.loads(json.dumps(record))
    # copies of their own: on the CPU a host array can be a view of a device buffer, which
    # the next step (donating its input) overwrites while an asynchronous write runs
    leaves = [np.array(x, copy=True) for x in jax.tree.leaves(eqx.filter(state, eqx.is_array))]
    return Prepared(leaves, step, record)


def write_checkpoint(directory: str | os.PathLike, prepared: Prepared, *, keep: int = 2) -> Path:
    """Writes a prepared state as the checkpoint of its step in `directory` (orbax layout),
    keeping the newest `keep`; returns its folder."""

    def fill(tmp: Path) -> dict:
        write_arrays(tmp / _STATE_DIR, prepared.leaves)
        _flush(tmp / _STATE_DIR)
        files = _digests(tmp)
        return {"files": files, "sha256": _json_digest(files)}

    return _commit(Path(directory), prepared.step, prepared.record, fill, keep)


def save_checkpoint(
    directory: str | os.PathLike, state, meta: dict | None = None, *, keep: int = 2
) -> Path:
    """Saves `state` (a PyTree of arrays) and JSON `meta` as the checkpoint of step
    `meta["step"]` (default `state.step`) in `directory`, keeping the newest `keep`: its arrays
    through orbax-checkpoint in `state/`, each file's digest in `meta.json`. Refuses a state
    holding NaN or infinity, so that every checkpoint is one to go back to. Returns the
    checkpoint's folder."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}.")
    return write_checkpoint(directory, prepare_checkpoint(state, meta), keep=keep)


def save_state_file(
    directory: str | os.PathLike, state, meta: dict | None = None, *, keep: int = 2
) -> Path:
    """As `save_checkpoint`, in the single-file layout: the arrays serialised by equinox into
    `state.eqx`, its SHA-256 in `meta.json` (`sha256`)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}.")
    state = jax.device_get(state)
    prepared = prepare_checkpoint(state, meta)
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, state)
    data = buffer.getvalue()

    def fill(tmp: Path) -> dict:
        write_new(tmp / _STATE, lambda f: f.write(data))
        return {"sha256": hashlib.sha256(data).hexdigest()}

    return _commit(Path(directory), prepared.step, prepared.record, fill, keep)


def _commit(
    directory: Path, step: int, record: dict, fill: Callable[[Path], dict], keep: int
) -> Path:
    """Writes a checkpoint folder: `fill(tmp)` writes the state into a new temporary folder
    and returns its digests, then `meta.json` is written, the folder flushed and renamed into
    place, and all but the newest `keep` removed. A failed write leaves the folder as it was."""
    slot = directory / f"{_PREFIX}{step:08d}"
    tmp = directory / f".tmp-{slot.name}-{secrets.token_hex(4)}"
    try:
        tmp.mkdir(parents=True)
        record = {"step": step, **fill(tmp), **record}
        # what is checked is what is read back: the metadata after a JSON round trip
        record = json.loads(json.dumps(record))
        record["checksum"] = meta_checksum(record)
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
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, OSError):
            raise
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
    """The metadata of one checkpoint folder after verifying it: every state file against its
    digest and the metadata against its checksum (`verify=False`: only that both exist)."""
    layout = slot / _STATE_DIR if (slot / _STATE_DIR).is_dir() else slot / _STATE
    if not layout.exists() or not (slot / _META).exists():
        raise CheckpointError(f"{slot} is incomplete (needs {_STATE_DIR}/ and {_META})")
    try:
        meta = json.loads((slot / _META).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{slot / _META} is corrupt: {e}") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise CheckpointError(f"{slot / _META} is corrupt: no step")
    if not verify:
        return meta
    digests = "files" if layout.name == _STATE_DIR else "sha256"
    if "checksum" not in meta or "sha256" not in meta or digests not in meta:
        raise CheckpointError(
            f"{slot / _META} has no checksum (written by an earlier version, or edited), so "
            "its state and history cannot be verified"
        )
    if meta_checksum(meta) != meta["checksum"]:
        raise CheckpointError(
            f"{slot / _META} was changed after it was written (checksum mismatch)"
        )
    if layout.name == _STATE:
        if _file_digest(layout) != meta["sha256"]:
            raise CheckpointError(f"{layout} is corrupt or truncated (checksum mismatch)")
        return meta
    found, files = _digests(slot), meta["files"]
    for name in sorted(set(files) | set(found)):
        if name not in found:
            raise CheckpointError(f"{slot} is incomplete ({name} is missing)")
        if name not in files:
            raise CheckpointError(f"{slot / name} is not listed in {_META} (added later)")
        if found[name] != files[name]:
            raise CheckpointError(f"{slot / name} is corrupt or truncated (checksum mismatch)")
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


def _read_state(slot: Path, like):
    """The state in `slot` in the structure of `like`, its arrays placed like `like`'s."""
    if not (slot / _STATE_DIR).is_dir():
        return read_state_file(slot / _STATE, like)
    arrays, static = eqx.partition(like, eqx.is_array)
    targets, treedef = jax.tree.flatten(arrays)
    return eqx.combine(jax.tree.unflatten(treedef, read_arrays(slot / _STATE_DIR, targets)), static)


def load_checkpoint(directory: str | os.PathLike, like, *, verify: bool = True):
    """Reads the newest good checkpoint in `directory` into the structure of `like`; returns
    `(state, meta)`. Each array comes back as its counterpart in `like`: a jax.Array with its
    sharding (so onto any number of devices, whatever the saving run had), a numpy array as
    numpy. A corrupt newest checkpoint falls back to the one before it, with a warning; none
    readable, or one that does not match `like`, is a `CheckpointError` (a ValueError) saying
    which, never a silent fresh start. A checkpoint without checksums is read only with
    `verify=False`."""
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
    where = slot / _STATE_DIR if (slot / _STATE_DIR).is_dir() else slot / _STATE
    try:
        state = _read_state(slot, like)
    except Exception as e:  # numpy, tensorstore and orbax raise several kinds on bad files
        raise CheckpointError(f"checkpoint {where} is corrupt or truncated: {e}") from e
    if _nonfinite(state):
        raise CheckpointError(f"checkpoint {where} holds non-finite values.")
    return state, meta


def checkpoint_meta(directory: str | os.PathLike, *, verify: bool = True) -> dict:
    """The metadata (step, loss history, ...) of the newest good checkpoint in `directory`."""
    return verified(directory, verify=verify)[1]
