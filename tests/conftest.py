import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import gc  # noqa: E402
import os  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

import sgm  # noqa: E402

# Compiled programs persist across test runs (off with SGM_COMPILATION_CACHE=0): a second run
# of the suite loads them from disk instead of compiling again. The suite stores programs that
# compile in over 0.02 s (the library's default keeps those over 0.5 s): it compiles thousands
# of small ones, and loading them takes tests/test_nets.py from 96 s to 37 s. The JAX_*
# variables carry the same cache to the Python processes that the tests start.
_MIN_COMPILE_SECONDS = 0.02
_CACHE = sgm.enable_compilation_cache(min_compile_seconds=_MIN_COMPILE_SECONDS)
if _CACHE is not None:
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", str(_MIN_COMPILE_SECONDS))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drop JAX's compiled programs after each test module. The suite compiles thousands of
    programs in one process; kept alive, XLA:CPU's code mappings grow until a later compile
    crashed (segmentation fault / abort near the end of the suite, twice in CI here)."""
    yield
    jax.clear_caches()
    gc.collect()
