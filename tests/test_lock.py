"""One writer per run: a second invocation that would write into a run held by another process
is refused in one line naming the holder, before any work; readers need no lock; `kill -9` of
the holder frees the run."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_runs import TINY, only_run

import sgm.experiment
from sgm.experiment._lock import RunLock, RunLocked

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import main as cli  # noqa: E402

ROOT = str(Path(__file__).resolve().parents[1])

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from sgm.experiment._lock import RunLock
    lock = RunLock.acquire(sys.argv[1])
    print("held", flush=True)
    time.sleep(600)
    """
)


def test_the_lock_is_exclusive_and_says_who_holds_it(tmp_path):
    with RunLock.acquire(tmp_path):
        record = json.loads((tmp_path / "lock").read_text())
        assert record["pid"] == os.getpid() and record["since"] and record["command"]
        with pytest.raises(RunLocked, match=f"pid {os.getpid()}.*since"):
            RunLock.acquire(tmp_path)  # another open file: refused even within one process
    RunLock.acquire(tmp_path).release()  # released on exit from the block


def test_a_second_writer_is_refused_until_the_holder_is_killed(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main([*TINY, "--out", str(out), "--mode", "train", "--train.steps", "4"]) == 0
    run = only_run(out)
    info = (run / "run.json").read_bytes()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(run)],
        env=dict(os.environ, PYTHONPATH=ROOT),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        for args in (
            ["--resume", "--train.steps", "8", "--mode", "train"],
            ["--mode", "sample"],  # sampling into the run writes into it
        ):
            with pytest.raises(SystemExit):
                cli.main(["--run-dir", str(run), *args, "--data-dir", "/nonexistent"])
            err = capsys.readouterr().err
            assert f"pid {holder.pid}" in err and "since" in err and "-c" in err, err
            assert "cannot load the data" not in err  # refused before any work
        assert (run / "run.json").read_bytes() == info  # nothing recorded
        assert sgm.experiment.load_run(run).config.train.steps == 4  # readers need no lock
        # sampling with outputs elsewhere only reads the run
        elsewhere = tmp_path / "elsewhere"
        assert cli.main(["--run-dir", str(run), "--mode", "sample", "--out", str(elsewhere)]) == 0
        assert (elsewhere / run.name / "samples_em.npz").exists()
        assert not (run / "samples_em.npz").exists() and (run / "run.json").read_bytes() == info
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert holder.returncode == -9
    assert (
        cli.main(["--run-dir", str(run), "--resume", "--train.steps", "6", "--mode", "train"]) == 0
    )
    assert sgm.checkpoint_meta(run / "checkpoint")["step"] == 6
    invocations = json.loads((run / "run.json").read_text())["invocations"]
    assert [i["outcome"] for i in invocations] == ["finished", "finished"]
