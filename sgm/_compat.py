"""Compatibility with earlier versions, in one place: deprecated keywords of the library's
entry points. Everything here is removed in sgm 0.3.

A deprecated keyword keeps working for one minor version: the entry point passes what it was
given to `renamed`, which warns once per call with `DeprecationWarning` pointing at the
caller's line (a fixed `stacklevel` from the public function, no frame walking).
"""

import warnings

REMOVED_IN = "0.3"


def deprecated(message: str, *, stacklevel: int = 3) -> None:
    """Warns that something is deprecated: `message` says what to use instead. The default
    `stacklevel` points at the caller of the public function that calls this."""
    warnings.warn(
        f"{message} (deprecated; removed in sgm {REMOVED_IN})",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
