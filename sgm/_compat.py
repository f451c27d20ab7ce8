"""Compatibility with earlier versions, in one place: deprecated keywords of the library's
entry points. Everything here is removed in sgm 0.3.

A deprecated keyword keeps working for one minor version: the entry point passes what it was
given to `renamed`, which warns once per call with `DeprecationWarning` pointing at the
caller's line (a fixed `stacklevel` from the public function, no frame walking).
"""

import json
import warnings
from pathlib import Path

REMOVED_IN = "0.3"


def deprecated(message: str, *, stacklevel: int = 3) -> None:
    """Warns that something is deprecated: `message` says what to use instead. The default
    `stacklevel` points at the caller of the public function that calls this."""
    warnings.warn(
        f"{message} (deprecated; removed in sgm {REMOVED_IN})",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


TRACE_FLAGS = ("exact", "n_probes", "probe", "chunk_size")


def pop_trace_flags(options: dict, *, stacklevel: int) -> dict:
    """`options` with the keywords `exact=`, `n_probes=`, `probe=`, `chunk_size=` of
    `log_likelihood` and `LogLikelihood` replaced by the trace estimator they name
    (`exact=True` is `Exact(chunk_size)`, otherwise `Hutchinson(n_probes, probe)`).
    `stacklevel` counts from the function calling this one (1), as for `warnings.warn`."""
    from ._trace import Exact, Hutchinson

    flags = {k: options.pop(k) for k in TRACE_FLAGS if k in options}
    given = [k for k, v in flags.items() if v is not None]
    if not given:
        return options
    if options.get("trace") is not None:
        raise ValueError(f"pass either trace=... or the deprecated {given}, not both.")
    deprecated(
        f"{', '.join(given)}: pass trace=sgm.Exact(chunk_size=...) or "
        "trace=sgm.Hutchinson(n_probes=..., probe=...)",
        stacklevel=stacklevel + 2,
    )
    if flags.get("exact"):
        chunk = flags.get("chunk_size")
        options["trace"] = Exact() if chunk is None else Exact(chunk_size=chunk)
    else:
        n_probes = flags.get("n_probes")
        options["trace"] = Hutchinson(
            n_probes=1 if n_probes is None else n_probes, probe=flags.get("probe") or "rademacher"
        )
    return options


def legacy_checkpoint(directory) -> tuple[int, Path] | None:
    """The one checkpoint of a run written when a run kept a single checkpoint,
    `directory/{state.eqx, meta.json}`, as `(step, directory)` (step -1 when unreadable)."""
    meta = Path(directory) / "meta.json"
    if not meta.exists():
        return None
    try:
        return int(json.loads(meta.read_text())["step"]), Path(directory)
    except (OSError, ValueError, KeyError, TypeError):
        return -1, Path(directory)
