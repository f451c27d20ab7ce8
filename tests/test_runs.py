"""Experiments and runs: configuration as objects, overrides, authoritative run configurations,
exclusive run directories, resume that never starts over, checkpoints that prove themselves,
validation before work, divergence."""

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from helpers import TinyNet, four_gaussians

import sgm
import sgm.experiment
from experiments import EXPERIMENTS
from sgm._training._state import init_state
from sgm.experiment._run import read_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import main as cli  # noqa: E402

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
    "4",
    "--eval.n_images",
    "2",
    "--eval.batch_size",
    "2",
]


def only_run(out: Path, name: str = "moons_vp") -> Path:
    (run,) = sorted((out / name).iterdir())
    return run


# --- configuration as objects ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiment_round_trips_through_json(name):
    exp = EXPERIMENTS[name]
    text = json.dumps(sgm.experiment.to_json(exp))
    assert sgm.experiment.from_json(json.loads(text)) == exp


def test_config_json_records_every_constructor_argument():
    """The network's defaults are resolved when written, so a later change of a class default
    does not change what an old run loads."""
    net = sgm.experiment.to_json(EXPERIMENTS["moons_vp"])["net"]
    assert net["cls"] == {"__type__": "MLP"} and net["width"] == 128
    assert net["embed_dim"] == 128  # not given in the experiment: the class default, written out


def test_overrides_that_worked_before_still_work():
    exp = sgm.experiment.override(
        EXPERIMENTS["digits_vp"],
        {
            "train.steps": "7",
            "train.lr": "1e-4",
            "train.batch_size": "16",
            "train.warmup": "3",
            "train.weighting": "likelihood",
            "train.importance_sampling": "true",
            "model.channels": "16",
            "model.channel_mults": "1,2",
            "model.attention_levels": "1",
            "sample.samplers": "em,pc,dpm",
            "sample.steps": "5",
            "sample.snr": "0.1",
            "sample.n_samples": "3",
            "sample.inpaint_steps": "9",
            "eval.n_images": "2",
            "eval.exact": "true",
            "sde.beta_max": "10",
        },
    )
    assert exp.train.steps == 7 and exp.train.batch_size == 16
    assert exp.optimizer == sgm.Adam(lr=1e-4, warmup=3, decay=True)
    assert exp.loss == sgm.DSMLoss(weighting="likelihood", importance_sampling=True)
    assert exp.net.resolved()["channels"] == 16 and exp.net.resolved()["channel_mults"] == (1, 2)
    assert list(exp.sample.samplers) == ["em", "pc", "dpm"]
    assert exp.sample.samplers["em"] == sgm.EulerMaruyama(steps=5)
    assert exp.sample.samplers["pc"] == sgm.PredictorCorrector(steps=5, snr=0.1)
    assert exp.sample.samplers["dpm"] == sgm.DPMSolver(steps=20)  # not an SDE sampler
    assert exp.sample.controlled.steps == 9 and exp.sde.beta_max == 10
    assert exp.eval.trace == sgm.Exact()
    probes = sgm.experiment.override(EXPERIMENTS["digits_vp"], {"eval.n_probes": "4"}).eval.trace
    assert probes == sgm.Hutchinson(n_probes=4)


def test_new_overrides_reach_any_field():
    exp = sgm.experiment.override(
        EXPERIMENTS["mnist_vp"],
        {
            "sample.dpm.steps": "10",
            "sample.ode.solver": "Heun",
            "sde.kind": "ve",
            "sde.sigma_max": "20",
            "model.kind": "mlp",
            "model.width": "64",
        },
    )
    assert exp.sample.samplers["dpm"].steps == 10
    assert type(exp.sample.samplers["ode"].solver).__name__ == "Heun"
    assert exp.sde == sgm.VESDE(sigma_max=20.0)
    assert exp.net.cls is sgm.nets.MLP and exp.net.resolved()["width"] == 64
    ou = sgm.experiment.override(EXPERIMENTS["ou_vp"], {"data.series_length": "32"})
    assert ou.data.options == {"length": 32}
    fm = EXPERIMENTS["digits_fm"]
    for value in ("ExactOTCoupling", "ExactOTCoupling()"):  # the name, or as --help shows it
        ot = sgm.experiment.override(fm, {"loss.coupling": value})
        assert ot.loss == sgm.FlowMatchingLoss(coupling=sgm.ExactOTCoupling())


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("train.stepz", "3", "unknown config key 'train.stepz'; valid keys: "),
        ("train.steps", "many", "bad value 'many' for train.steps: expected an integer"),
        ("sde.kind", "vv", "expected one of"),
        ("train.steps", "-5", "train.steps must be an integer >= 1"),
        ("train.lr", "-0.01", "learning rate must be positive"),
        ("train.ema_decay", "1.5", "train.ema_decay must be a number >= 0 and < 1"),
        ("train.checkpoint_every", "0", "checkpoint_every must be an integer >= 1"),
        ("train.log_every", "0", "log_every must be an integer >= 1"),
        ("train.batch_size", "0", "batch_size must be an integer >= 1"),
        ("sample.samplers", "em,fast", "unknown samplers ['fast']"),
        ("sample.dpm.order", "5", "order must be 1 or 2"),
        ("eval.n_probes", "0", "n_probes must be an integer >= 1"),
        ("sde.sigma_max", "3", "unknown config key 'sde.sigma_max'"),  # a VP SDE has none
        ("model.width", "64", "unknown config key 'model.width'"),  # the UNet has no width
        ("train.precision", "float16", "needs dynamic loss scaling"),
        ("train.precision", "half", "train.precision must be one of"),
        ("train.accumulate", "0", "train.accumulate must be an integer >= 1"),
        ("train.accumulate", "3", "must be a multiple of train.accumulate=3"),
        ("train.fsdp", "0", "train.fsdp must be an integer >= 1"),
        ("train.fsdp", "2", "fsdp=2 must divide the 1 devices"),
        ("train.checkpoint_async", "maybe", "train.checkpoint_async"),
    ],
)
def test_bad_values_are_found_before_any_work(key, value, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["--experiment", "mnist_vp", f"--{key}", value, "--out", str(tmp_path)])
    assert message in capsys.readouterr().err
    assert not tmp_path.joinpath("mnist_vp").exists()  # nothing created, no data read


# --- runs through main.py ---------------------------------------------------------------------


def test_existing_run_keeps_its_configuration(tmp_path, capsys):
    """Resuming with more steps continues with the run's own learning rate and batch; its
    config.json is never rewritten; overrides are recorded with a time stamp; an override
    that would change the model is refused."""
    out = ["--out", str(tmp_path)]
    assert (
        cli.main(
            [
                *TINY,
                *out,
                "--mode",
                "train",
                "--train.steps",
                "4",
                "--train.lr",
                "1e-3",
                "--train.batch_size",
                "64",
            ]
        )
        == 0
    )
    run = only_run(tmp_path)
    config = (run / "config.json").read_bytes()
    assert cli.main([*out, "--run-dir", str(run), "--resume", "--train.steps", "6"]) == 0
    assert (run / "config.json").read_bytes() == config
    loaded = sgm.experiment.load_run(run)
    assert loaded.config.train.steps == 6 and loaded.config.train.batch_size == 64
    assert loaded.config.optimizer.lr == 1e-3
    info = json.loads((run / "run.json").read_text())
    assert info["settings"] == {"train.steps": 6}
    last = info["invocations"][-1]
    assert last["overrides"] == {"train.steps": "6"} and last["mode"] == "all" and last["time"]
    assert json.loads((run / "history.json").read_text())["step"] == [2, 4, 6]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main([*out, "--run-dir", str(run), "--resume", "--train.lr", "5e-3"])
    assert "other values of optimizer.lr" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([*out, "--run-dir", str(run), "--mode", "sample", "--model.width", "32"])
    assert "other values of net.width" in capsys.readouterr().err
    # sampling settings may change; the run still loads with its own network afterwards
    assert (
        cli.main([*out, "--run-dir", str(run), "--mode", "sample", "--sample.samplers", "dpm"]) == 0
    )
    assert (run / "samples_dpm.png").exists() and (run / "config.json").read_bytes() == config
    assert sgm.experiment.load_run(run).model.net.inp.out_features == 16


def test_runs_started_together_never_share_a_directory(tmp_path):
    script = textwrap.dedent(
        """
        import sys, sgm.experiment
        from experiments import EXPERIMENTS
        exp = EXPERIMENTS["moons_vp"]
        run = sgm.experiment.RunDir.create(sys.argv[1], exp, {"data_shape": [2]})
        print(run.path)
        """
    )
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=root)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    paths = {p.communicate(timeout=300)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(paths) == 3 and len(list((tmp_path / "moons_vp").iterdir())) == 3


def test_resume_never_starts_over(tmp_path, capsys):
    out = ["--out", str(tmp_path)]
    # a mistyped --run-dir is an error, and is not created
    with pytest.raises(SystemExit):
        cli.main([*TINY, *out, "--run-dir", str(tmp_path / "typo"), "--resume"])
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "typo").exists()
    # nothing to resume yet
    with pytest.raises(SystemExit):
        cli.main([*TINY, *out, "--resume"])
    assert "no run of moons_vp" in capsys.readouterr().err
    assert cli.main([*TINY, *out, "--mode", "train", "--train.steps", "4"]) == 0
    good = only_run(tmp_path)
    # a stray folder and a run that failed before its first checkpoint are not "the latest"
    (tmp_path / "moons_vp" / "zzz-not-a-run").mkdir()
    failed = sgm.experiment.RunDir.create(
        tmp_path, EXPERIMENTS["moons_vp"], {"data_shape": [2]}
    ).path
    assert cli.main([*TINY, *out, "--resume", "--train.steps", "6", "--mode", "train"]) == 0
    assert sgm.checkpoint_meta(good / "checkpoint")["step"] == 6
    assert not (failed / "checkpoint").exists()
    # a run whose checkpoint is gone or corrupt is a clear error, and nothing is overwritten
    with pytest.raises(SystemExit):
        cli.main([*out, "--run-dir", str(failed), "--resume"])
    assert "has no checkpoint to resume" in capsys.readouterr().err
    for slot in (good / "checkpoint").glob("step_*"):
        (slot / "meta.json").unlink()
    before = sorted(p.name for p in good.iterdir())
    with pytest.raises(SystemExit):
        cli.main([*out, "--run-dir", str(good), "--resume", "--train.steps", "8"])
    assert "is incomplete" in capsys.readouterr().err
    assert sorted(p.name for p in good.iterdir()) == before


def test_an_interrupted_run_resumes_with_its_history(tmp_path):
    """SIGTERM through main.py: the run exits with 130 naming how to resume, history.json
    holds the history up to the checkpoint, and the resumed run's history is continuous."""
    script = textwrap.dedent(
        f"""
        import sys, signal, os
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        import sgm._training._loop as T, main
        step = T.train_step
        def stop_at_5(batch, state, *a):  # a stop request arrives during step 5
            if int(state.step) == 5:
                os.kill(os.getpid(), signal.SIGTERM)
            return step(batch, state, *a)
        T.train_step = stop_at_5
        sys.exit(main.main(sys.argv[1:]))
        """
    )
    args = [*TINY, "--out", str(tmp_path), "--mode", "train", "--train.steps", "10"]
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "--resume" in proc.stderr
    run = only_run(tmp_path)
    assert json.loads((run / "history.json").read_text())["step"] == [2, 4, 6]
    assert cli.main(["--run-dir", str(run), "--resume", "--mode", "train"]) == 0
    history = json.loads((run / "history.json").read_text())
    assert history["step"] == [2, 4, 6, 8, 10] and len(history["loss"]) == 5


# --- checkpoints ------------------------------------------------------------------------------

SDE = sgm.VPSDE()
OPT = optax.adam(1e-3)


def tiny_model():
    return sgm.ScoreModel(TinyNet(2, key=jr.key(0)), SDE)


def mixture(n=512):
    return np.asarray(four_gaussians().sample(jr.key(7), n))


def leaves(model):
    import equinox as eqx
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))]


KW = dict(batch_size=64, key=jr.key(1), ema_decay=0.9, monitor=sgm.Monitor(every=2, progress=False))
WITH_HISTORY = dict(KW, monitor=sgm.Monitor(every=2, progress=False, history=True))


def test_checkpoints_keep_the_last_k_with_checksums_and_fall_back(tmp_path):
    old = os.umask(0o022)
    try:
        sgm.train(
            tiny_model(),
            SDE,
            mixture(),
            OPT,
            steps=9,
            checkpoints=sgm.Checkpoints(tmp_path, every=3, keep=2, fingerprint="abc"),
            **KW,
        )
    finally:
        os.umask(old)
    slots = sorted(p.name for p in tmp_path.iterdir())
    assert slots == ["step_00000006", "step_00000009"]
    meta = sgm.checkpoint_meta(tmp_path)
    assert meta["step"] == 9 and meta["fingerprint"] == "abc" and len(meta["sha256"]) == 64
    assert meta["history"]["step"] == [2, 4, 6, 8, 9]
    files = [p for p in (tmp_path / "step_00000009").rglob("*") if p.is_file()]
    modes = {stat.S_IMODE(p.stat().st_mode) for p in files}
    assert modes == {0o644}  # the umask's, not a temporary file's 0600
    # flip one byte of the newest: the checksum catches it, the previous one is used
    state = largest_file(tmp_path / "step_00000009" / "state")
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 1
    state.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="checksum mismatch"):
        resumed = sgm.train(
            tiny_model(),
            SDE,
            mixture(),
            OPT,
            steps=12,
            checkpoints=sgm.Checkpoints(tmp_path, every=3, resume=True, fingerprint="abc"),
            **KW,
        )
    full = sgm.train(tiny_model(), SDE, mixture(), OPT, steps=12, **KW)
    for a, b in zip(leaves(full), leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    # another configuration's checkpoint is refused
    with pytest.raises(sgm.CheckpointError, match="another configuration"):
        sgm.train(
            tiny_model(),
            SDE,
            mixture(),
            OPT,
            steps=15,
            checkpoints=sgm.Checkpoints(tmp_path, resume=True, fingerprint="xyz"),
            **KW,
        )


def largest_file(folder):
    """The biggest file under `folder`: in an orbax checkpoint, one holding array data."""
    return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_temporaries_of_interrupted_writes_are_removed(tmp_path):
    sgm.train(
        tiny_model(), SDE, mixture(), OPT, steps=2, checkpoints=sgm.Checkpoints(tmp_path), **KW
    )
    (tmp_path / ".tmp-step_00000004-dead").mkdir()
    (tmp_path / ".tmp-step_00000004-dead" / "state.eqx").write_bytes(b"half")
    sgm.train(
        tiny_model(),
        SDE,
        mixture(),
        OPT,
        steps=4,
        checkpoints=sgm.Checkpoints(tmp_path, resume=True),
        **KW,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000002", "step_00000004"]


def test_nonfinite_state_is_never_saved(tmp_path):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    state = init_state(tiny_model(), OPT, key=jr.key(0))
    bad = jax.tree.map(lambda a: a * jnp.nan if eqx.is_inexact_array(a) else a, state)
    with pytest.raises(FloatingPointError, match="non-finite"):
        sgm.save_checkpoint(tmp_path, bad)
    assert not any(tmp_path.iterdir())


_KILLED = textwrap.dedent(
    """
    import os, signal, sys, jax.random as jr, numpy as np, optax, sgm
    import sgm._training._checkpoint as C
    sys.path.insert(0, sys.argv[2])
    from helpers import TinyNet, four_gaussians
    where, nth = sys.argv[3], int(sys.argv[4])
    write_arrays, write, count = C.write_arrays, C.write_new, [0]
    def dying_arrays(path, leaves):
        count[0] += 1
        write_arrays(path, leaves)
        if count[0] == nth and where == "state":  # half of a state file, then the process dies
            files = [p for p in path.rglob("*") if p.is_file()]
            biggest = max(files, key=lambda p: p.stat().st_size)
            data = biggest.read_bytes()
            with open(biggest, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
    def dying_write(path, fill):
        write(path, fill)
        if count[0] == nth and path.name == "meta.json":  # all written, before the rename
            os.kill(os.getpid(), signal.SIGKILL)
    C.write_arrays, C.write_new = dying_arrays, dying_write
    model = sgm.ScoreModel(TinyNet(2, key=jr.key(0)), sgm.VPSDE())
    x = np.asarray(four_gaussians().sample(jr.key(7), 512))
    sgm.train(model, sgm.VPSDE(), x, optax.adam(1e-3), steps=30, batch_size=64, key=jr.key(1),
              ema_decay=0.9, monitor=sgm.Monitor(every=2, progress=False),
              checkpoints=sgm.Checkpoints(sys.argv[1], every=3))
    """
)


def _killed_then_resumed(tmp_path, where: str, nth: int):
    ckpt = tmp_path / "ckpt"
    tests = os.path.dirname(__file__)
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED, str(ckpt), tests, where, str(nth)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert sgm.checkpoint_meta(ckpt)["step"] == 3 * (nth - 1)
    resumed, history = sgm.train(
        tiny_model(),
        SDE,
        mixture(),
        OPT,
        steps=30,
        checkpoints=sgm.Checkpoints(ckpt, every=3, resume=True),
        **WITH_HISTORY,
    )
    full, full_history = sgm.train(tiny_model(), SDE, mixture(), OPT, steps=30, **WITH_HISTORY)
    for a, b in zip(leaves(full), leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    assert history["step"] == full_history["step"] == list(range(2, 31, 2))
    assert history["loss"] == full_history["loss"]  # the same readings, bit for bit
    assert not [p for p in ckpt.iterdir() if p.name.startswith(".")]


def test_kill_9_mid_checkpoint_then_resume_is_bit_for_bit(tmp_path):
    _killed_then_resumed(tmp_path, "state", 3)


@pytest.mark.slow
@pytest.mark.parametrize("where,nth", [("state", 2), ("rename", 2), ("rename", 4)])
def test_kill_9_at_chosen_moments(tmp_path, where, nth):
    _killed_then_resumed(tmp_path, where, nth)


# --- validation and divergence ----------------------------------------------------------------


def test_divergence_stops_the_run_naming_the_last_good_checkpoint(tmp_path):
    """Adam at lr 10 takes a finite loss from about 1 to 1e8 within two steps (measured): a
    run that 'succeeds' with garbage without this check."""
    with pytest.raises(sgm.TrainingDiverged, match="diverged.*no checkpoint was saved"):
        sgm.train(tiny_model(), SDE, mixture(), optax.adam(10.0), steps=200, **KW)
    late = optax.adam(optax.piecewise_constant_schedule(1e-3, {6: 1e4}))  # fine, then not
    with pytest.raises(sgm.TrainingDiverged, match=r"last good checkpoint \(step 4\)"):
        sgm.train(
            tiny_model(),
            SDE,
            mixture(),
            late,
            steps=200,
            checkpoints=sgm.Checkpoints(tmp_path, every=4),
            **KW,
        )
    assert sgm.checkpoint_meta(tmp_path)["step"] == 4


def test_lr_10_through_main_is_an_error_not_a_result(tmp_path, capsys):
    code = cli.main(
        [
            *TINY,
            "--out",
            str(tmp_path),
            "--train.lr",
            "10",
            "--train.warmup",
            "0",
            "--train.steps",
            "300",
            "--train.log_every",
            "10",
        ]
    )
    assert code == 1
    assert "diverged" in capsys.readouterr().err
    assert not (only_run(tmp_path) / "metrics.json").exists()


def test_train_rejects_what_gave_raw_errors():
    with pytest.raises(ValueError, match="floats in model scale"):
        sgm.train(tiny_model(), SDE, np.zeros((64, 2), np.uint8), OPT, steps=1, key=jr.key(0))
    with pytest.raises(ValueError, match="one entry per example"):
        sgm.train(tiny_model(), SDE, mixture(), OPT, steps=1, key=jr.key(0), labels=np.zeros(3))
    for kw, what in [
        ({"steps": -5}, "steps"),
        ({"steps": 1, "ema_decay": 1.5}, "ema_decay"),
        ({"steps": 1, "batch_size": 0}, "batch_size"),
        ({"steps": 1, "monitor": "quiet"}, "monitor must be an sgm.Monitor, got str"),
    ]:
        with pytest.raises(ValueError, match=what):
            sgm.train(tiny_model(), SDE, mixture(), OPT, key=jr.key(0), **kw)
    with pytest.raises(ValueError, match="Monitor.every must be an integer >= 1"):
        sgm.Monitor(every=0)


# --- runs written before --------------------------------------------------------------------

_OLD_CONFIG = {
    "name": "moons_vp",
    "description": "d",
    "budget": "b",
    "data": {
        "name": "two_moons",
        "n_train": 256,
        "n_test": 16,
        "resolution": 64,
        "series_length": 64,
        "lowres_factor": None,
    },
    "sde": {
        "kind": "vp",
        "beta_min": 0.1,
        "beta_max": 20.0,
        "schedule": "linear",
        "sigma_min": 0.01,
        "sigma_max": 50.0,
    },
    "model": {
        "kind": "mlp",
        "channels": 32,
        "channel_mults": [1, 2, 2],
        "num_res_blocks": 1,
        "attention_levels": [2],
        "num_groups": 8,
        "dropout": 0.0,
        "width": 16,
        "depth": 1,
        "hidden": 128,
        "patch_size": 2,
        "conditional": False,
    },
    "train": {
        "steps": 4,
        "batch_size": 32,
        "lr": 0.002,
        "warmup": 100,
        "grad_clip": 1.0,
        "ema_decay": 0.99,
        "weighting": "sigma2",
        "importance_sampling": False,
        "label_dropout": 0.1,
        "log_every": 2,
        "eval_every": 500,
        "checkpoint_every": 500,
        "seed": 0,
    },
    "sample": {
        "n_samples": 4,
        "samplers": ["em", "dpm"],
        "steps": 3,
        "snr": 0.16,
        "guidance_scale": 1.0,
        "classifier_scale": 3.0,
        "classifier_steps": 2000,
        "classifier_batch_size": 128,
        "classifier_lr": 0.002,
        "classifier_width": 32,
        "inpaint_steps": 200,
        "inpaint_particles": 8,
        "inpaint_method": "smc",
    },
    "eval": {"n_images": 2, "exact": True, "n_probes": 1, "n_dequant": 1, "batch_size": 2},
}  # what the earlier ExperimentConfig.to_dict() wrote for this run


def test_runs_written_before_still_load(tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(_OLD_CONFIG))
    (run / "run.json").write_text(
        json.dumps(
            {
                "data_shape": [2],
                "num_classes": None,
                "cond_shape": None,
                "data": "two_moons",
                "devices": 1,
            }
        )
    )
    # the earlier build_model: MLP((2,), key=split(key(seed))[0], width=16, depth=1)
    net = sgm.nets.MLP((2,), key=jr.split(jr.key(0))[0], width=16, depth=1)
    sgm.save_model(run / "model.eqx", sgm.ScoreModel(net, sgm.VPSDE()))
    # its model.eqx has no checksum: refused until accepted as it is
    with pytest.raises(ValueError, match="has no checksum in run.json.*verify=False"):
        sgm.experiment.load_run(run)
    loaded = sgm.experiment.load_run(run, verify=False)
    assert loaded.config.optimizer == sgm.Adam(lr=0.002, warmup=100)
    assert loaded.config.sample.samplers == {
        "em": sgm.EulerMaruyama(steps=3),
        "dpm": sgm.DPMSolver(steps=20),
    }
    for a, b in zip(leaves(loaded.model), leaves(sgm.ScoreModel(net, sgm.VPSDE())), strict=True):
        np.testing.assert_array_equal(a, b)
    # It predicted the noise from t through Fourier features of scale 16, the defaults then:
    # score(t, x) = -net(t, x / sqrt(m^2 + s^2)) / s.
    assert loaded.model.preconditioning == sgm.NoisePrediction()
    assert loaded.model.net.cond.fourier_scale == 16.0
    old = sgm.nets.MLP((2,), key=jr.split(jr.key(0))[0], width=16, depth=1, fourier_scale=16.0)
    x, t = jnp.array([0.3, -1.2]), 0.4
    m, s = sgm.VPSDE().marginal(t)
    np.testing.assert_allclose(
        loaded.model(t, x), -old(jnp.asarray(t), x / jnp.hypot(m, s)) / s, rtol=1e-6
    )
    assert cli.main(["--run-dir", str(run), "--mode", "sample", "--accept-unverified"]) == 0
    assert (run / "samples_dpm.png").exists()
    (run / "config.json").write_text(json.dumps({"name": "x", "model": {}}))
    with pytest.raises(ValueError, match="earlier version that cannot be read"):
        sgm.experiment.load_run(run, verify=False)


def test_configurations_written_before_preconditioning_keep_their_network(tmp_path):
    """A config.json of this format written before networks had a preconditioning names none
    and no Fourier scale: it is read as what it trained, NoisePrediction at scale 16; one
    written now keeps what it names."""
    exp = EXPERIMENTS["moons_vp"]
    data = sgm.experiment.to_json(exp)
    assert data["net"]["preconditioning"] == {"__class__": "EDMPreconditioning", "sigma_data": 1.0}
    now = tmp_path / "now.json"
    now.write_text(json.dumps(data))
    assert read_config(now) == exp
    del data["net"]["preconditioning"], data["net"]["fourier_scale"]
    before = tmp_path / "before.json"
    before.write_text(json.dumps(data))
    old = read_config(before)
    assert old.net.preconditioning == sgm.NoisePrediction()
    assert old.net.resolved()["fourier_scale"] == 16.0
    model = old.build_model((2,))
    assert model.preconditioning == sgm.NoisePrediction()
    assert model.net.cond.fourier_scale == 16.0


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_a_run_keeps_its_fingerprint_across_versions(name):
    """Checkpoints record `model_fingerprint(config)`; resuming compares it with the fingerprint
    of the run's `config.json` as written, which is the same number, so a later version that
    adds fields (with defaults) still resumes the run."""
    from sgm.experiment._overrides import model_fingerprint, written_fingerprint

    exp = EXPERIMENTS[name]
    assert written_fingerprint(sgm.experiment.to_json(exp)) == model_fingerprint(exp)
    changed = sgm.experiment.override(exp, {"train.batch_size": "4"})
    assert written_fingerprint(sgm.experiment.to_json(changed)) != model_fingerprint(exp)


# --- verified state, resume rules, failed starts, bad files -----------------------------------


def _state():
    return init_state(tiny_model(), OPT, key=jr.key(0))


def test_the_checksum_covers_the_state_and_the_metadata(tmp_path):
    state = _state()
    for step in (3, 6):
        history = {"step": [step], "loss": [1.0 / step]}
        sgm.save_checkpoint(tmp_path, state, {"step": step, "history": history})
    # an edited history in the newest: found, and the previous checkpoint used with a warning
    meta_path = tmp_path / "step_00000006" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["history"]["loss"] = [0.001]
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="changed after it was written"):
        assert sgm.checkpoint_meta(tmp_path)["step"] == 3
    # no checksum at all (an earlier version's checkpoint) and a flipped state byte: refused,
    # saying how to accept it; accepted explicitly with verify=False
    for slot in tmp_path.glob("step_*"):
        meta = json.loads((slot / "meta.json").read_text())
        del meta["checksum"], meta["sha256"]
        (slot / "meta.json").write_text(json.dumps(meta))
    state_file = largest_file(tmp_path / "step_00000006" / "state")
    data = bytearray(state_file.read_bytes())
    data[-3] ^= 1
    state_file.write_bytes(bytes(data))
    with pytest.raises(sgm.CheckpointError, match="has no checksum.*verify=False"):
        sgm.load_checkpoint(tmp_path, like=state)
    with pytest.raises(sgm.CheckpointError, match="verify=False"):
        sgm.train(
            tiny_model(),
            SDE,
            mixture(),
            OPT,
            steps=9,
            checkpoints=sgm.Checkpoints(tmp_path, resume=True),
            **KW,
        )
    _, meta = sgm.load_checkpoint(tmp_path, like=state, verify=False)
    assert meta["step"] == 6


@pytest.mark.slow
def test_resume_rules_and_unverified_files_through_main(tmp_path, capsys):
    """`--train.steps` below the step reached is refused naming it, equal rewrites nothing;
    a checkpoint or model.eqx that does not verify is refused until accepted explicitly."""
    out = ["--out", str(tmp_path)]
    assert cli.main([*TINY, *out, "--mode", "train", "--train.steps", "4"]) == 0
    run = only_run(tmp_path)
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "lock"}
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main([*out, "--run-dir", str(run), "--resume", "--train.steps", "2"])
    assert "has reached step 4; --train.steps 2 would shorten it" in capsys.readouterr().err
    assert cli.main([*out, "--run-dir", str(run), "--resume", "--mode", "train"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    now = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "lock"}
    assert now == files  # nothing rewritten, nothing recorded
    # model.eqx changed since it was written: load_run and sampling refuse it
    model = bytearray(files["model.eqx"])
    model[-2] ^= 1
    (run / "model.eqx").write_bytes(bytes(model))
    with pytest.raises(ValueError, match="model.eqx does not match the checksum in run.json"):
        sgm.experiment.load_run(run)
    with pytest.raises(SystemExit):
        cli.main(["--run-dir", str(run), "--mode", "sample", "--data-dir", "/nonexistent"])
    err = capsys.readouterr().err
    assert "model.eqx does not match" in err and "--accept-unverified" in err
    assert sgm.experiment.load_run(run, verify=False).model is not None
    # a checkpoint without checksum (as written before): refused, then accepted explicitly
    for slot in (run / "checkpoint").glob("step_*"):
        meta = json.loads((slot / "meta.json").read_text())
        del meta["checksum"]
        (slot / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SystemExit):
        cli.main([*out, "--run-dir", str(run), "--resume", "--train.steps", "6"])
    err = capsys.readouterr().err
    assert "has no checksum" in err and "--accept-unverified" in err
    args = ["--run-dir", str(run), "--resume", "--train.steps", "6", "--mode", "train"]
    assert cli.main([*args, "--accept-unverified"]) == 0
    assert sgm.checkpoint_meta(run / "checkpoint")["step"] == 6
    assert sgm.experiment.load_run(run).config.train.steps == 6  # rewritten, verified again


@pytest.mark.parametrize(
    "args,message",
    [
        (["--train.batch_size", "3000000"], "more than the 256 training examples"),
        (["--data.n_train", "100", "--train.batch_size", "256"], "more than the 100 training"),
        (["--train.lr", "inf"], "optimizer.lr=inf must be a finite number"),
        (["--out", "/proc/x"], "cannot be written"),
    ],
)
def test_failed_starts_leave_nothing(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main([*TINY, "--out", str(tmp_path / "out"), *args])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_files_and_paths_are_one_line_errors_naming_the_file(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit):
        cli.main([*TINY, "--out", str(tmp_path / "a_file" / "runs")])
    assert "a_file is a file, not a folder" in capsys.readouterr().err
    run = sgm.experiment.RunDir.create(tmp_path, EXPERIMENTS["moons_vp"], {"data_shape": [2]})
    info = (run.path / "run.json").read_text()
    # sampling a run that has not finished training: said before the data are read
    for mode in ("sample", "likelihood"):
        with pytest.raises(SystemExit):
            cli.main(["--run-dir", str(run.path), "--mode", mode, "--data-dir", "/nonexistent"])
        assert "has not finished training" in capsys.readouterr().err
    config = json.loads((run.path / "config.json").read_text())
    config["net"]["depth"] = "3"  # hand-edited
    (run.path / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit):
        cli.main(["--run-dir", str(run.path), "--resume"])
    err = capsys.readouterr().err
    assert "config.json is not a valid configuration (net.depth is '3', expected an integer" in err
    assert "command line" not in err and (run.path / "run.json").read_text() == info
    for text, message in [
        (info[: len(info) // 2], "run.json cannot be read"),
        (json.dumps({"experiment": "moons_vp"}), "run.json has no data_shape"),
    ]:
        (run.path / "run.json").write_text(text)
        with pytest.raises(SystemExit):
            cli.main(["--run-dir", str(run.path), "--mode", "sample"])
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="as root, chmod does not stop writes")
def test_a_finished_run_on_read_only_storage_is_sampled_with_outputs_elsewhere(tmp_path, capsys):
    out = tmp_path / "runs"
    assert cli.main([*TINY, "--out", str(out), "--train.steps", "4", "--mode", "train"]) == 0
    run = only_run(out)
    subprocess.run(["chmod", "-R", "a-w", str(out)], check=True)
    try:
        capsys.readouterr()
        with pytest.raises(SystemExit):
            cli.main(["--run-dir", str(run), "--mode", "sample"])
        assert "--out DIR" in capsys.readouterr().err
        elsewhere = tmp_path / "outputs"
        for mode in ("sample", "likelihood"):
            assert cli.main(["--run-dir", str(run), "--mode", mode, "--out", str(elsewhere)]) == 0
        metrics = json.loads((elsewhere / run.name / "metrics.json").read_text())
        assert "samplers" in metrics and "test_nll_nats_per_dim" in metrics
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(out)], check=True)
