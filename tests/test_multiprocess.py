"""Multi-process jobs: two real processes on 127.0.0.1 (gloo collectives on the CPU), launched
exactly as the README documents."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from helpers import TinyNet, four_gaussians

import sgm
from sgm._training._batches import Batches
from sgm._training._state import init_state, train_step

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--experiment",
    "moons_vp",
    "--model.width",
    "16",
    "--model.depth",
    "1",
    "--train.batch_size",
    "32",
    "--train.log_every",
    "2",
    "--train.checkpoint_every",
    "4",
    "--data.n_train",
    "256",
    "--data.n_test",
    "16",
    "--sample.samplers",
    "em",
    "--sample.steps",
    "3",
    "--sample.n_samples",
    "6",
    "--eval.n_images",
    "3",
    "--eval.batch_size",
    "2",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(command: list[str], n: int = 2, *, ranks=None, counts=None) -> list[subprocess.Popen]:
    """`command` once per process with the README's environment variables (`counts`: the
    process count each one is told, to test a wrong one)."""
    port = free_port()
    procs = []
    ranks = range(n) if ranks is None else ranks
    for rank, count in zip(ranks, counts or [n] * len(ranks), strict=True):
        env = dict(
            os.environ,
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES=str(count),
            JAX_PROCESS_ID=str(rank),
        )
        env.pop("XLA_FLAGS", None)  # one CPU device per process
        procs.append(
            subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def finish(procs, timeout=600):
    outs = [p.communicate(timeout=timeout) for p in procs]
    return [p.returncode for p in procs], outs


_JOB = textwrap.dedent(
    """
    import sys
    import sgm
    sgm.distributed.initialize(timeout=120)
    import jax, jax.random as jr, numpy as np, optax, equinox as eqx
    sys.path.insert(0, sys.argv[2])
    from helpers import TinyNet, four_gaussians
    model = sgm.ScoreModel(TinyNet(2, key=jr.key(0)), sgm.VPSDE())
    x = np.asarray(four_gaussians().sample(jr.key(7), 512))
    out = sgm.train(model, sgm.VPSDE(), x, optax.adam(1e-3), steps=12, batch_size=64,
                    key=jr.key(1), monitor=sgm.Monitor(progress=False), ema_decay=0.0)
    leaves = jax.tree.leaves(eqx.filter(out, eqx.is_inexact_array))
    rank = jax.process_index()
    lp = sgm.log_likelihood(out, sgm.VPSDE(), x[:4], key=jr.key(3))
    xs = sgm.sample(out, sgm.VPSDE(), sgm.EulerMaruyama(steps=5), key=jr.key(4), shape=(6, 2))
    # each process given only its share of the examples trains the same model
    ds = sgm.data.Dataset("mix", (2,), x, x[:8]).sharded(rank, 2)
    assert len(ds.train) == 256
    again = sgm.train(model, sgm.VPSDE(), ds, optax.adam(1e-3), steps=12, batch_size=64,
                      key=jr.key(1), monitor=sgm.Monitor(progress=False), ema_decay=0.0)
    for a, b in zip(leaves, jax.tree.leaves(eqx.filter(again, eqx.is_inexact_array))):
        assert np.array_equal(np.asarray(a), np.asarray(b)), "sharded data train differently"
    # parameters split over the two processes' devices (fsdp=2) train the same model
    split = sgm.train(model, sgm.VPSDE(), x, optax.adam(1e-3), steps=12, batch_size=64,
                      key=jr.key(1), monitor=sgm.Monitor(progress=False), ema_decay=0.0, fsdp=2)
    split = {f"fsdp_{i}": np.asarray(a)
             for i, a in enumerate(jax.tree.leaves(eqx.filter(split, eqx.is_inexact_array)))}
    np.savez(f"{sys.argv[1]}/rank{rank}.npz", *[np.asarray(a) for a in leaves],
             lp=np.asarray(lp), xs=np.asarray(xs), **split)
    """
)


def test_two_processes_agree_and_equal_one_process_fed_the_same_batches(tmp_path):
    """Parameters bit-equal on both ranks, and equal (float tolerance) to one process running
    the same steps on the same global batches (rank 0's part, then rank 1's), with the
    parameters replicated and with them split over the two processes (`fsdp=2`); the returned
    model samples and evaluates likelihoods in every process, each doing its share of the
    examples, with the results of one process doing them all."""
    codes, outs = finish(launch([sys.executable, "-c", _JOB, str(tmp_path), str(ROOT / "tests")]))
    assert codes == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
    r0, r1 = (np.load(tmp_path / f"rank{r}.npz") for r in (0, 1))
    for name in r0.files:
        np.testing.assert_array_equal(r0[name], r1[name])
    assert np.all(np.isfinite(r0["lp"])) and r0["xs"].shape == (6, 2)
    # the reference: one process, one device, the global batch assembled from both ranks' parts
    model = sgm.ScoreModel(TinyNet(2, key=jr.key(0)), sgm.VPSDE())
    x = np.asarray(four_gaussians().sample(jr.key(7), 512))
    opt = optax.adam(1e-3)
    state = init_state(model, opt, key=jr.key(1))
    state = jax.tree.map(lambda a: jnp.copy(a) if eqx.is_array(a) else a, state)
    seed = [int(v) for v in np.asarray(jr.key_data(jr.key(1))).ravel()]
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))
    parts = [Batches(x, None, 64, seed, mesh, rank=r, n_proc=2) for r in (0, 1)]
    for s in range(12):
        batch = np.concatenate([p.x[p.indices(s)] for p in parts])
        state, _ = train_step(jnp.asarray(batch), state, None, sgm.DSMLoss(), opt, 0.0)
    ref = jax.tree.leaves(eqx.filter(state.model, eqx.is_inexact_array))
    for i, leaf in enumerate(ref):
        np.testing.assert_allclose(r0[f"arr_{i}"], leaf, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r0[f"fsdp_{i}"], leaf, rtol=1e-5, atol=1e-6)
    # the evaluation each process did its share of equals one process doing all of it
    params, static = eqx.partition(state.model, eqx.is_inexact_array)
    leaves = [r0[f"arr_{i}"] for i in range(len(ref))]
    trained = eqx.combine(jax.tree.unflatten(jax.tree.structure(params), leaves), static)
    lp = sgm.log_likelihood(trained, sgm.VPSDE(), x[:4], key=jr.key(3))
    xs = sgm.sample(trained, sgm.VPSDE(), sgm.EulerMaruyama(steps=5), key=jr.key(4), shape=(6, 2))
    np.testing.assert_allclose(r0["lp"], lp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r0["xs"], xs, rtol=1e-5, atol=1e-5)


def test_a_two_process_job_through_main_writes_one_run(tmp_path):
    out = ["--out", str(tmp_path)]
    cmd = [sys.executable, "main.py", *TINY, *out, "--train.steps", "8", "--distributed"]
    codes, outs = finish(launch(cmd))
    assert codes == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
    (run,) = (tmp_path / "moons_vp").iterdir()
    info = json.loads((run / "run.json").read_text())
    assert len(info["invocations"]) == 1 and info["invocations"][0]["processes"] == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["devices"] == 2 and metrics["samplers"]["em"]["finite"]
    assert metrics["test_nll_nats_per_dim"]["n"] == 3
    for stdout, _ in outs:  # each process held half of the 256 training examples
        assert "data (128, 2)" in stdout
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == [
        "step_00000004",
        "step_00000008",
    ]


@pytest.mark.slow  # about 35 s; one process's SIGTERM and resume is in tests/test_train.py
def test_sigterm_to_one_process_stops_both_at_one_step_then_resume(tmp_path):
    out = ["--out", str(tmp_path)]
    cmd = [
        sys.executable,
        "main.py",
        *TINY,
        *out,
        "--train.steps",
        "100000",
        "--mode",
        "train",
        "--distributed",
    ]
    procs = launch(cmd)
    deadline = time.time() + 400
    while time.time() < deadline and not list(tmp_path.glob("moons_vp/*/checkpoint/step_*")):
        time.sleep(0.5)
    time.sleep(1.0)
    procs[1].send_signal(signal.SIGTERM)  # a pre-emption notice to one process only
    codes, outs = finish(procs, timeout=300)
    assert codes == [130, 130], outs[0][1][-3000:] + outs[1][1][-3000:]
    (run,) = (tmp_path / "moons_vp").iterdir()
    step = sgm.checkpoint_meta(run / "checkpoint")["step"]
    for _, err in outs:
        assert f"interrupted at step {step}" in err and "--resume" in err
    resume = [
        sys.executable,
        "main.py",
        "--run-dir",
        str(run),
        "--resume",
        "--mode",
        "train",
        "--train.steps",
        str(step + 4),
        "--distributed",
    ]
    codes, outs = finish(launch(resume))
    assert codes == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
    assert sgm.checkpoint_meta(run / "checkpoint")["step"] == step + 4
    history = json.loads((run / "history.json").read_text())
    assert history["step"][-1] == step + 4 and history["step"] == sorted(set(history["step"]))


_CHECKPOINTED = textwrap.dedent(
    """
    import sys
    import sgm
    sgm.distributed.initialize(timeout=120)
    import jax, jax.random as jr, numpy as np, optax, equinox as eqx
    sys.path.insert(0, sys.argv[2])
    from helpers import TinyNet, four_gaussians
    out, steps, ckpt = sys.argv[1], int(sys.argv[3]), sys.argv[4]
    model = sgm.ScoreModel(TinyNet(2, key=jr.key(0)), sgm.VPSDE())
    x = np.asarray(four_gaussians().sample(jr.key(7), 512))
    checkpoints = None if ckpt == "-" else sgm.Checkpoints(
        ckpt, every=2, asynchronous=True, resume=sys.argv[5] == "resume")
    trained = sgm.train(model, sgm.VPSDE(), x, optax.adam(1e-3), steps=steps, batch_size=64,
                        key=jr.key(1), monitor=sgm.Monitor(progress=False), ema_decay=0.0,
                        checkpoints=checkpoints)
    leaves = jax.tree.leaves(eqx.filter(trained, eqx.is_inexact_array))
    np.savez(f"{out}{jax.process_index()}.npz", *[np.asarray(a) for a in leaves])
    """
)


# slow tier (three 2-process jobs, about 50 s): in the default tier, asynchronous checkpoints
# resume bit for bit in one process (tests/test_orbax_checkpoints.py) and a 2-process job
# checkpoints through main.py (test_a_two_process_job_through_main_writes_one_run)
@pytest.mark.slow
def test_two_processes_checkpoint_asynchronously_and_resume_exactly(tmp_path):
    """Asynchronous checkpoints in a job of two processes (process 0 writes through orbax
    alone, every process waits for it at the next save and at the end), then a resumed job:
    the parameters of an uninterrupted job, bit for bit, on both processes."""
    ckpt = tmp_path / "ckpt"

    def job(name, steps, *args):
        cmd = [sys.executable, "-c", _CHECKPOINTED, str(tmp_path / name), str(ROOT / "tests")]
        codes, outs = finish(launch([*cmd, str(steps), *args]))
        assert codes == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
        return [np.load(tmp_path / f"{name}{rank}.npz") for rank in (0, 1)]

    job("first", 6, str(ckpt), "new")
    assert sgm.checkpoint_meta(ckpt)["step"] == 6
    resumed = job("resumed", 10, str(ckpt), "resume")
    assert sgm.checkpoint_meta(ckpt)["step"] == 10
    full = job("full", 10, "-", "-")
    for rank in (0, 1):
        for key in full[0].files:
            np.testing.assert_array_equal(resumed[rank][key], full[0][key])
            np.testing.assert_array_equal(full[rank][key], full[0][key])


def test_a_process_that_never_arrives_is_an_error_not_a_hang(tmp_path):
    cmd = [
        sys.executable,
        "main.py",
        *TINY,
        "--out",
        str(tmp_path),
        "--distributed",
        "--distributed-timeout",
        "5",
    ]
    start = time.time()
    codes, outs = finish(launch(cmd, ranks=[0]), timeout=240)
    assert codes[0] == 2, outs[0][1][-3000:]
    assert "could not join 2 processes at 127.0.0.1" in outs[0][1]
    assert "only process(es) [0] of 2 arrived within 5 s" in outs[0][1]
    assert time.time() - start < 200
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
    # a wrong count is found by both
    codes, outs = finish(launch(cmd, ranks=[0, 1], counts=[2, 3]), timeout=240)
    assert codes == [2, 2]
    for _, err in outs:
        assert "process 1 expects 3 processes, process 0 2" in err


@pytest.mark.parametrize(
    "env,message",
    [
        ({"JAX_NUM_PROCESSES": "2"}, "missing JAX_COORDINATOR_ADDRESS, JAX_PROCESS_ID"),
        (
            {
                "JAX_COORDINATOR_ADDRESS": "127.0.0.1:1",
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": "2",
            },
            "0 <= JAX_PROCESS_ID",
        ),
    ],
)
def test_bad_launch_settings_are_clear_errors(env, message, monkeypatch):
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=message):
        sgm.distributed.initialize(timeout=1)
