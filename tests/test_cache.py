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


def _without_the_suites_cache() -> dict[str, str]:
    """The environment without the JAX_* cache settings that tests/conftest.py exports."""
    return {k: v for k, v in os.environ.items() if not k.startswith("JAX_") or "CACHE" not in k}


def _run(tmp_path, **env):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "cache")],
        env={**_without_the_suites_cache(), **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
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


def test_a_cache_already_on_is_kept(tmp_path):
    """JAX's own variable (or an earlier call) wins over the defaults; explicit arguments win
    over it."""
    script = (
        "import sys, jax, sgm; c = jax.config\n"
        "print(sgm.enable_compilation_cache(), c.jax_persistent_cache_min_compile_time_secs)\n"
        "print(sgm.enable_compilation_cache(sys.argv[1], min_compile_seconds=2))\n"
        "print(c.jax_compilation_cache_dir, c.jax_persistent_cache_min_compile_time_secs)\n"
    )
    env = {
        **_without_the_suites_cache(),
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.25",
    }
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "mine")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    assert out == [str(tmp_path / "jax"), "0.25", *[str(tmp_path / "mine")] * 2, "2.0"]


# logs the compiler's cache hits into `records`
CACHE_LOG = """
import logging, sys, jax, jax.random as jr, numpy as np, optax, sgm
records = []
handler = logging.Handler()
handler.emit = lambda r: records.append(r.getMessage())
logging.getLogger("jax._src.compiler").addHandler(handler)
logging.getLogger("jax._src.compiler").setLevel(logging.DEBUG)
sgm.enable_compilation_cache(sys.argv[1], min_compile_seconds=0)
"""

TRAIN = (
    CACHE_LOG
    + """
sde = sgm.VPSDE()
net = sgm.nets.MLP((2,), key=jr.key(0), width=8, depth=1, num_classes=3)
x = np.asarray(jr.normal(jr.key(1), (64, 2)))
y = np.arange(64) % 3
sgm.train(sgm.ScoreModel(net, sde), sde, x, optax.adam(1e-3), steps=2, batch_size=8,
          key=jr.key(2), labels=y, monitor=sgm.Monitor(progress=False))
print(sum("cache hit for 'jit_train_step'" in m for m in records))
"""
)


def test_the_training_step_is_stored_and_loaded(tmp_path):
    """The training step is traced without checks (no host callbacks), so a second run loads it
    from the cache; the labels are checked on the host instead."""
    runs = [
        subprocess.run(
            [sys.executable, "-c", TRAIN, str(tmp_path / "cache")],
            env={**_without_the_suites_cache(), "SGM_COMPILATION_CACHE": "1"},
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        for _ in range(2)
    ]
    assert [int(r.stdout.split()[-1]) for r in runs] == [0, 1]


def test_class_labels_are_checked_before_training():
    import jax.random as jr
    import numpy as np
    import optax
    import pytest

    sde = sgm.VPSDE()
    model = sgm.ScoreModel(sgm.nets.MLP((2,), key=jr.key(0), width=8, depth=1, num_classes=3), sde)
    x = np.zeros((16, 2), np.float32)
    for bad in (np.full(16, 4), np.full(16, -1), np.full(16, 0.5)):
        with pytest.raises(ValueError, match=r"labels must be integer class labels in \[0, 3\]"):
            sgm.train(
                model, sde, x, optax.adam(1e-3), steps=1, batch_size=8, key=jr.key(0), labels=bad
            )


SAMPLE = (
    CACHE_LOG
    + """
sde = sgm.VPSDE()
model = sgm.ScoreModel(sgm.nets.MLP((2,), key=jr.key(0), width=8, depth=1), sde)
sgm.sample(model, sde, sgm.EulerMaruyama(steps=5), key=jr.key(1), shape=(4, 2))
sgm.log_likelihood(model, sde, np.zeros((2, 2), np.float32), key=jr.key(2), max_steps=64)
print(sum("cache hit for 'jit__sample_batch'" in m for m in records),
      sum("cache hit for 'jit__loglik_batch'" in m for m in records))
"""
)


def test_sampling_and_likelihood_programs_are_stored_and_loaded(tmp_path):
    """Unconditional sampling and likelihood programs carry no traced checks (their times are
    valid by construction), so a second process loads them from the cache."""
    runs = [
        subprocess.run(
            [sys.executable, "-c", SAMPLE, str(tmp_path / "cache")],
            env={**_without_the_suites_cache(), "SGM_COMPILATION_CACHE": "1"},
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        for _ in range(2)
    ]
    assert [r.stdout.split()[-2:] for r in runs] == [["0", "0"], ["1", "1"]]
