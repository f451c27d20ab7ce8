import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import gc  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

import sgm  # noqa: E402

# Compiled programs persist across test runs (off with SGM_COMPILATION_CACHE=0): a second run
# of the suite loads most of them from disk instead of compiling again.
sgm.enable_compilation_cache()


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drop JAX's compiled programs after each test module. The suite compiles thousands of
    programs in one process; kept alive, XLA:CPU's code mappings grow until a later compile
    crashed (segmentation fault / abort near the end of the suite, twice in CI here)."""
    yield
    jax.clear_caches()
    gc.collect()
