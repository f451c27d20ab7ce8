"""Checkpoints through orbax-checkpoint: the layout and its digests, restoring onto another
device count, asynchronous saves (and a kill -9 during one), failed writes, and checkpoints of
the earlier single-file layout."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
import optax
import pytest
from helpers import TinyNet, four_gaussians

import sgm
import sgm._training._checkpoint as C
from sgm._training._state import init_state

SDE = sgm.VPSDE()
OPT = optax.adam(1e-3)
TESTS = os.path.dirname(__file__)
KW = dict(
    batch_size=64,
    key=jr.key(1),
    ema_decay=0.9,
    monitor=sgm.Monitor(every=2, progress=False, history=True),
)


def tiny_model():
    return sgm.ScoreModel(TinyNet(2, key=jr.key(0)), SDE)


def mixture(n=512):
    return np.asarray(four_gaussians().sample(jr.key(7), n))


def arrays(tree):
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array))]


def assert_equal(a, b):
    for x, y in zip(arrays(a), arrays(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _state():
    return init_state(tiny_model(), OPT, key=jr.key(0))


def test_layout_lists_the_digest_of_every_state_file(tmp_path):
    state = _state()
    slot = sgm.save_checkpoint(tmp_path, state, {"step": 3})
    assert sorted(p.name for p in slot.iterdir()) == ["meta.json", "state"]
    meta = json.loads((slot / "meta.json").read_text())
    on_disk = sorted(p.relative_to(slot).as_posix() for p in slot.rglob("*") if p.is_file())
    assert sorted(meta["files"]) == [f for f in on_disk if f != "meta.json"]
    assert len(meta["files"]) > 1 and all(f.startswith("state/") for f in meta["files"])
    loaded, _ = sgm.load_checkpoint(tmp_path, like=state)
    assert_equal(loaded, state)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(eqx.filter(loaded, eqx.is_array)))
    # numpy targets come back as numpy arrays
    host, _ = sgm.load_checkpoint(tmp_path, like=jax.device_get(state))
    assert all(type(x) is np.ndarray for x in jax.tree.leaves(eqx.filter(host, eqx.is_array)))
    assert_equal(host, state)


def test_a_relative_directory_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state = _state()
    sgm.save_checkpoint("ckpt", state, {"step": 3})
    assert_equal(sgm.load_checkpoint("ckpt", like=state)[0], state)


@pytest.mark.parametrize("damage", ["flip", "remove", "add"])
def test_every_state_file_is_verified(tmp_path, damage):
    state = _state()
    sgm.save_checkpoint(tmp_path, state, {"step": 3})
    newest = sgm.save_checkpoint(tmp_path, state, {"step": 6})
    files = sorted(p for p in (newest / "state").rglob("*") if p.is_file())
    if damage == "flip":  # one byte of the smallest file: every file counts, not only the data
        small = min(files, key=lambda p: p.stat().st_size)
        data = bytearray(small.read_bytes())
        data[0] ^= 1
        small.write_bytes(bytes(data))
        message = "corrupt or truncated \\(checksum mismatch\\)"
    elif damage == "remove":
        files[0].unlink()
        message = "is missing"
    else:
        (newest / "state" / "extra").write_bytes(b"x")
        message = "not listed in meta.json"
    with pytest.warns(UserWarning, match=message):
        assert sgm.checkpoint_meta(tmp_path)["step"] == 3


def test_a_failed_write_leaves_nothing_and_keeps_the_previous(tmp_path, monkeypatch):
    state = _state()
    sgm.save_checkpoint(tmp_path, state, {"step": 3})
    write = C.write_arrays

    def full_disk(path, leaves):
        write(path, leaves)  # the files are there, then the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(C, "write_arrays", full_disk)
    with pytest.raises(OSError, match="No space left.*the checkpoint of step 3 is kept"):
        sgm.save_checkpoint(tmp_path, state, {"step": 6})
    monkeypatch.setattr(C, "write_arrays", lambda path, leaves: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        sgm.save_checkpoint(tmp_path, state, {"step": 6})
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000003"]
    assert sgm.load_checkpoint(tmp_path, like=state)[1]["step"] == 3


def test_a_checkpoint_of_the_single_file_layout_still_loads_and_resumes(tmp_path):
    """`save_state_file` writes `{state.eqx, meta.json}` as train checkpoints were written
    before orbax; loading reads it through `sgm._compat.read_state_file`."""
    ckpt = tmp_path / "new"
    sgm.train(tiny_model(), SDE, mixture(), OPT, steps=6, checkpoints=sgm.Checkpoints(ckpt), **KW)
    like = _state()
    state, meta = sgm.load_checkpoint(ckpt, like=like)
    old = tmp_path / "old"
    written = ("files", "sha256", "checksum", "signature", "written")
    slot = C.save_state_file(old, state, {k: v for k, v in meta.items() if k not in written})
    assert sorted(p.name for p in slot.iterdir()) == ["meta.json", "state.eqx"]
    assert "files" not in json.loads((slot / "meta.json").read_text())
    loaded, old_meta = sgm.load_checkpoint(old, like=like)
    assert old_meta["step"] == 6
    assert_equal(loaded, state)
    resumed, history = sgm.train(
        tiny_model(),
        SDE,
        mixture(),
        OPT,
        steps=10,
        checkpoints=sgm.Checkpoints(old, resume=True),
        **KW,
    )
    full, full_history = sgm.train(tiny_model(), SDE, mixture(), OPT, steps=10, **KW)
    assert_equal(resumed, full)
    assert history["loss"] == full_history["loss"]
    assert (old / "step_00000010" / "state").is_dir()  # the run goes on in the orbax layout


def test_asynchronous_checkpoints_are_those_of_synchronous_ones(tmp_path):
    runs = {}
    for asynchronous in (False, True):
        ckpt = tmp_path / str(asynchronous)
        checkpoints = sgm.Checkpoints(ckpt, every=3, keep=3, asynchronous=asynchronous)
        runs[asynchronous] = sgm.train(
            tiny_model(), SDE, mixture(), OPT, steps=10, checkpoints=checkpoints, **KW
        )
        assert sorted(p.name for p in ckpt.iterdir()) == [
            "step_00000006",
            "step_00000009",
            "step_00000010",
        ]
    assert_equal(runs[False][0], runs[True][0])
    assert runs[False][1] == {**runs[True][1], "steps_per_s": runs[False][1]["steps_per_s"]}
    for name in ("step_00000006", "step_00000010"):
        (a, ma), (b, mb) = (
            sgm.load_checkpoint(tmp_path / str(x) / name, like=_state()) for x in (False, True)
        )
        assert_equal(a, b)
        for m in (ma, mb):
            for k in ("written", "checksum", "files", "sha256"):
                m.pop(k)
            m["history"].pop("steps_per_s")
        assert ma == mb


def test_a_failed_asynchronous_write_is_raised_at_the_next_save(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "write_arrays", lambda path, leaves: 1 / 0)
    checkpoints = sgm.Checkpoints(tmp_path, every=3, asynchronous=True)
    with pytest.raises(ZeroDivisionError):
        sgm.train(tiny_model(), SDE, mixture(), OPT, steps=10, checkpoints=checkpoints, **KW)
    assert not any(tmp_path.iterdir())


def test_a_stop_request_and_an_error_wait_for_the_asynchronous_write(tmp_path, monkeypatch):
    import sgm._training._loop as loop

    step = loop.train_step

    def stop_at_7(batch, state, *args):  # a stop request arrives during step 7
        if int(state.step) == 7:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(batch, state, *args)

    monkeypatch.setattr(loop, "train_step", stop_at_7)
    checkpoints = sgm.Checkpoints(tmp_path / "stop", every=3, asynchronous=True)
    with pytest.raises(sgm.TrainingInterrupted, match="interrupted at step 8"):
        sgm.train(tiny_model(), SDE, mixture(), OPT, steps=100, checkpoints=checkpoints, **KW)
    # on disk when the exception arrives: the stop request's checkpoint, nothing pending
    assert sorted(p.name for p in (tmp_path / "stop").iterdir()) == [
        "step_00000006",
        "step_00000008",
    ]
    monkeypatch.setattr(loop, "train_step", step)
    late = optax.adam(optax.piecewise_constant_schedule(1e-3, {6: 1e4}))  # fine, then not
    checkpoints = sgm.Checkpoints(tmp_path / "diverged", every=4, asynchronous=True)
    with pytest.raises(sgm.TrainingDiverged, match=r"last good checkpoint \(step 4\)"):
        sgm.train(tiny_model(), SDE, mixture(), late, steps=200, checkpoints=checkpoints, **KW)
    assert [p.name for p in (tmp_path / "diverged").iterdir()] == ["step_00000004"]
    assert sgm.checkpoint_meta(tmp_path / "diverged")["step"] == 4


_SLOW_ASYNC = textwrap.dedent(
    """
    import sys, time, jax.random as jr, numpy as np, optax, sgm
    import sgm._training._checkpoint as C
    sys.path.insert(0, sys.argv[2])
    from helpers import TinyNet, four_gaussians
    digests = C._digests
    def slow_digests(slot):  # a slow disk: the write takes a while after the arrays are out
        time.sleep(1.5)
        return digests(slot)
    C._digests = slow_digests
    model = sgm.ScoreModel(TinyNet(2, key=jr.key(0)), sgm.VPSDE())
    x = np.asarray(four_gaussians().sample(jr.key(7), 512))
    sgm.train(model, sgm.VPSDE(), x, optax.adam(1e-3), steps=10**6, batch_size=64,
              key=jr.key(1), ema_decay=0.9, monitor=sgm.Monitor(every=2, progress=False),
              checkpoints=sgm.Checkpoints(sys.argv[1], every=3, asynchronous=True))
    """
)


def test_kill_9_during_an_asynchronous_save_keeps_the_previous_checkpoint(tmp_path):
    ckpt = tmp_path / "ckpt"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_ASYNC, str(ckpt), TESTS])
    deadline, pending = time.time() + 240, None
    try:
        while pending is None and time.time() < deadline:
            # a write in flight with a complete checkpoint before it
            tmps = sorted(ckpt.glob(".tmp-step_*")) if list(ckpt.glob("step_*")) else []
            pending = tmps[0] if tmps else None
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert pending is not None and proc.returncode == -9
    in_flight = int(pending.name.split("-")[1].removeprefix("step_"))
    assert pending.exists() and not (ckpt / f"step_{in_flight:08d}").exists()
    state, meta = sgm.load_checkpoint(ckpt, like=_state())
    assert meta["step"] == in_flight - 3 and int(state.step) == in_flight - 3
    assert not pending.exists()  # loading cleared the interrupted write
    steps = meta["step"] + 5
    resumed, history = sgm.train(
        tiny_model(),
        SDE,
        mixture(),
        OPT,
        steps=steps,
        checkpoints=sgm.Checkpoints(ckpt, every=3, resume=True, asynchronous=True),
        **KW,
    )
    full, full_history = sgm.train(tiny_model(), SDE, mixture(), OPT, steps=steps, **KW)
    assert_equal(resumed, full)
    assert history["loss"] == full_history["loss"]


_DEVICES = textwrap.dedent(
    """
    import json, sys, jax, jax.random as jr, numpy as np, optax, equinox as eqx, sgm
    sys.path.insert(0, sys.argv[2])
    from helpers import TinyNet, four_gaussians
    out, devices, steps, ckpt = sys.argv[1], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    assert jax.device_count() == devices
    model = sgm.ScoreModel(TinyNet(2, key=jr.key(0)), sgm.VPSDE())
    x = np.asarray(four_gaussians().sample(jr.key(7), 512))
    checkpoints = None if ckpt == "-" else sgm.Checkpoints(ckpt, every=3, resume=devices < 4)
    trained, history = sgm.train(
        model, sgm.VPSDE(), x, optax.adam(1e-3), steps=steps, batch_size=64, key=jr.key(1),
        ema_decay=0.9, monitor=sgm.Monitor(every=2, progress=False, history=True),
        checkpoints=checkpoints)
    leaves = jax.tree.leaves(eqx.filter(trained, eqx.is_inexact_array))
    np.savez(out + ".npz", *[np.asarray(a) for a in leaves])
    with open(out + ".json", "w") as f:
        json.dump(history["loss"], f)
    if devices == 2:  # onto shardings of this run's own: replicated, and one leaf split
        from jax.sharding import NamedSharding, PartitionSpec as P
        from sgm._training._state import init_state
        mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
        like = init_state(model, optax.adam(1e-3), key=jr.key(1))
        arrays, static = eqx.partition(like, eqx.is_array)
        split = lambda a: a.ndim and a.shape[0] % 2 == 0
        put = lambda a: jax.device_put(a, NamedSharding(mesh, P("data") if split(a) else P()))
        like = eqx.combine(jax.tree.map(put, arrays), static)
        state, meta = sgm.load_checkpoint(sys.argv[6], like)
        host, _ = sgm.load_checkpoint(sys.argv[6], jax.device_get(like))
        for a, b, h in zip(jax.tree.leaves(eqx.filter(state, eqx.is_array)),
                           jax.tree.leaves(eqx.filter(like, eqx.is_array)),
                           jax.tree.leaves(eqx.filter(host, eqx.is_array)), strict=True):
            assert a.sharding == b.sharding, (a.sharding, b.sharding)
            np.testing.assert_array_equal(np.asarray(a), h)
        assert any(len(a.sharding.device_set) == 2 and not a.sharding.is_fully_replicated
                   for a in jax.tree.leaves(eqx.filter(state, eqx.is_array)))
    """
)


def _devices(tmp_path: Path, name: str, devices: int, steps: int, ckpt, saved="-"):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    out = tmp_path / name
    args = [str(out), TESTS, str(devices), str(steps), str(ckpt), str(saved)]
    subprocess.run([sys.executable, "-c", _DEVICES, *args], env=env, check=True, timeout=300)
    return np.load(f"{out}.npz"), json.loads(Path(f"{out}.json").read_text())


def test_a_checkpoint_of_four_devices_resumes_on_two_and_on_one(tmp_path):
    """Saved while replicated over 4 devices at step 6, resumed on 2 and on 1 to step 12: the
    parameters and the loss readings match an uninterrupted 4-device run to 1e-5 relative
    (float32 rounding: the gradient's all-reduce sums in another order per device count)."""
    full, full_losses = _devices(tmp_path, "full", 4, 12, "-")
    ckpt = tmp_path / "ckpt4"
    _, first = _devices(tmp_path, "first", 4, 6, ckpt)
    for devices in (2, 1):
        copy = tmp_path / f"ckpt{devices}"
        shutil.copytree(ckpt, copy)
        params, losses = _devices(tmp_path, f"on{devices}", devices, 12, copy, ckpt)
        assert len(losses) == len(full_losses) == 6 and losses[:3] == first
        np.testing.assert_allclose(losses, full_losses, rtol=1e-5)
        for key in full.files:
            np.testing.assert_allclose(params[key], full[key], rtol=1e-5, atol=1e-6)
