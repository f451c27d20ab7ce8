"""Evaluations kept in chunks: the results of each finished chunk of examples are one file,
written atomically, in a folder named by the digest of everything that changes the values (the
protocol), so an interrupted evaluation continues with the chunks it has and a changed setting
never reuses a stale one. Process 0 alone reads and writes the files; the others receive what
it read."""

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from .. import distributed
from .._io import atomic_write, write_json


def digest(obj) -> str:
    """SHA-256 of `obj` as canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def inputs_digest(*arrays) -> str:
    """SHA-256 of the examples of a chunk (dtype, shape and bytes of each array; None skipped),
    so that a chunk computed on other data is not taken for this one."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            continue
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class ChunkStore:
    """The chunk files of one evaluation protocol: `root/<digest[:16]>/chunk_00003.npz`, each
    holding its arrays and a JSON `meta` (protocol digest, the chunk's examples `[start, stop)`,
    their digest, and what the caller adds), and `protocol.json` beside them."""

    def __init__(self, root: Path, protocol: dict):
        self.protocol = protocol
        self.digest = digest(protocol)
        self.directory = Path(root) / self.digest[:16]

    def path(self, index: int) -> Path:
        return self.directory / f"chunk_{index:05d}.npz"

    def load(self, index: int, start: int, stop: int, inputs: str) -> dict | None:
        """The stored chunk `index` as `{"arrays": {...}, "meta": {...}}`, or None when it is
        missing, unreadable, or written for other examples or another protocol (with a
        warning for the last two: it is computed again and replaced)."""
        path = self.path(index)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                arrays = {k: f[k] for k in f.files if k != "meta"}
        except Exception as e:  # a truncated or foreign file: zip, JSON or key errors
            _warn(f"{path} cannot be read ({type(e).__name__}: {e}); computing it again.")
            return None
        expected = {"digest": self.digest, "start": start, "stop": stop, "inputs": inputs}
        wrong = [k for k, v in expected.items() if not isinstance(meta, dict) or meta.get(k) != v]
        if not wrong and any(len(a) != stop - start for a in arrays.values()):
            wrong = ["array lengths"]
        if wrong:
            _warn(
                f"{path} does not match this evaluation ({', '.join(wrong)}); computing it again."
            )
            return None
        return {"arrays": arrays, "meta": meta}

    def save(self, index: int, start: int, stop: int, inputs: str, arrays: dict, **meta) -> None:
        """Writes chunk `index` (process 0 only), atomically: a file is whole or absent."""
        if not distributed.is_main():
            return
        if not (self.directory / "protocol.json").exists():
            write_json(self.directory / "protocol.json", self.protocol)
        record = {"digest": self.digest, "start": start, "stop": stop, "inputs": inputs, **meta}
        text = np.asarray(json.dumps(record))
        atomic_write(self.path(index), lambda f: np.savez(f, meta=text, **arrays))

    def load_all(self, bounds, inputs, like: Callable[[int, int], dict]) -> list[dict | None]:
        """Every chunk of `bounds` (`(start, stop)` pairs; `inputs` their digests) that is
        stored, on every process as process 0 read it; `like(start, stop)` gives a chunk's
        arrays' zeros of the right shapes (what the other processes receive into)."""
        found = [
            self.load(i, a, b, inputs[i]) if distributed.is_main() else None
            for i, (a, b) in enumerate(bounds)
        ]
        if jax.process_count() == 1:
            return found
        have = distributed.broadcast(np.array([f is not None for f in found]))
        shared: list[dict | None] = []
        for i, (a, b) in enumerate(bounds):
            if not have[i]:
                shared.append(None)
                continue
            mine = found[i]
            arrays = like(a, b) if mine is None else mine["arrays"]
            arrays = {k: distributed.broadcast(arrays[k]) for k in sorted(arrays)}
            meta = json.loads(
                distributed.broadcast_text(json.dumps(mine["meta"]) if mine else None)
            )
            shared.append({"arrays": arrays, "meta": meta})
        return shared


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
