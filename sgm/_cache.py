"""JAX's persistent compilation cache, in a per-user directory, with an off switch."""

import os
from pathlib import Path

import jax

_OFF = ("0", "false", "no", "off")


def default_cache_dir() -> Path:
    """`$SGM_COMPILATION_CACHE_DIR`, else `$XDG_CACHE_HOME/sgm/jax`, else `~/.cache/sgm/jax`."""
    if os.environ.get("SGM_COMPILATION_CACHE_DIR"):
        return Path(os.environ["SGM_COMPILATION_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sgm" / "jax"


def enable_compilation_cache(
    path: str | os.PathLike | None = None, *, min_compile_seconds: float | None = None
) -> Path | None:
    """Turns on JAX's persistent compilation cache, so that a program compiled once (a train
    step, a sampler, a likelihood solve) loads from disk in a later process instead of
    compiling again. Call it before the first compilation; `main.py`, the benchmarks and the
    test suite do.

    **Arguments:**

    - `path`: the cache directory; default `default_cache_dir()`, a per-user directory
      created with permissions 0700 (a compilation cache is trusted code: never point it at
      a directory others can write to).
    - `min_compile_seconds`: programs that compile faster than this are not stored; default
      0.5.

    Called with neither argument while JAX's cache is already on (an earlier call, or JAX's own
    `JAX_COMPILATION_CACHE_DIR` variable), it keeps JAX's settings as they are.

    **Returns:** the directory in use, or None when the environment variable
    `SGM_COMPILATION_CACHE` is `0` (or `false`, `no`, `off`): then nothing changes.
    Delete the directory to empty the cache; JAX keys every entry by the program, the JAX and
    XLA versions and the device, so a stale entry is never loaded.
    """
    if os.environ.get("SGM_COMPILATION_CACHE", "1").strip().lower() in _OFF:
        return None
    configured = jax.config.values.get("jax_compilation_cache_dir")
    if path is None and min_compile_seconds is None and configured:
        return Path(configured)
    directory = Path(path).expanduser() if path is not None else default_cache_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    seconds = 0.5 if min_compile_seconds is None else float(min_compile_seconds)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", seconds)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
