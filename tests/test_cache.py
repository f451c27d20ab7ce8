"""The persistent compilation cache: a second process loads what the first compiled."""

import os
import subprocess
import sys

import sgm

SCRIPT = """
import sys, jax, jax.numpy as jnp, sgm
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None)
print(sgm.enable_compilation_cache(sys.argv[1], min_compile_seconds=0))
jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((3, 3))).block_until_ready()
print(len(hits))
"""


def _run(tmp_path, **env):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "cache")],
                          env={**os.environ, **env}, capture_output=True, text=True, check=True,
                          timeout=120)  # fmt: skip
    where, hits = proc.stdout.split()
    return where, int(hits)


def test_second_process_loads_from_the_cache(tmp_path):
    where, hits = _run(tmp_path, SGM_COMPILATION_CACHE="1")
    assert where == str(tmp_path / "cache") and hits == 0
    assert any((tmp_path / "cache").iterdir())
    assert (tmp_path / "cache").stat().st_mode & 0o077 == 0  # private to the user
    _, hits = _run(tmp_path, SGM_COMPILATION_CACHE="1")
    assert hits >= 1


def test_off_switch(tmp_path, monkeypatch):
    where, hits = _run(tmp_path, SGM_COMPILATION_CACHE="0")
    assert where == "None" and hits == 0 and not (tmp_path / "cache").exists()
    monkeypatch.setenv("SGM_COMPILATION_CACHE_DIR", str(tmp_path / "env"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert sgm._cache.default_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("SGM_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sgm._cache.default_cache_dir() == tmp_path / "xdg" / "sgm" / "jax"
