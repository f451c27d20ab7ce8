"""`python main.py` end to end on tiny budgets, and its handling of bad input."""

import json
import sys
from pathlib import Path

import jax.random as jr
import numpy as np
import pytest
from helpers import MNIST_DIR

import sgm
import sgm.experiment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import main as cli  # noqa: E402
from experiments import EXPERIMENTS  # noqa: E402

TINY_UNET = [
    "--model.channels",
    "8",
    "--model.channel_mults",
    "1,2",
    "--model.attention_levels",
    "1",
    "--model.num_groups",
    "4",
    "--train.steps",
    "4",
    "--train.batch_size",
    "16",
    "--train.log_every",
    "2",
    "--sample.samplers",
    "em",
    "--sample.steps",
    "5",
    "--sample.n_samples",
    "4",
    "--eval.n_images",
    "2",
    "--eval.batch_size",
    "2",
    "--train.eval_bound",  # on in the image experiments; tests/test_heldout_bound.py runs it
    "false",
]


def run_dir_of(out: Path, name: str) -> Path:
    (run,) = sorted((out / name).iterdir())
    return run


def check_run(run: Path, samplers):
    for name in (
        "config.json",
        "run.json",
        "model.eqx",
        "metrics.json",
        "loss.png",
        "marginals.png",
        "history.json",
    ):
        assert (run / name).exists(), name
    metrics = json.loads((run / "metrics.json").read_text())
    for s in samplers:
        assert (run / f"samples_{s}.png").exists()
        assert metrics["samplers"][s]["finite"] and metrics["samplers"][s]["nfe"] > 0
    value = metrics.get("test_bits_per_dim") or metrics.get("test_nll_nats_per_dim")
    assert np.isfinite(value["mean"])
    return metrics


def test_toy_end_to_end_then_sample_from_the_run(tmp_path):
    args = [
        "--experiment",
        "moons_vp",
        "--out",
        str(tmp_path),
        "--train.steps",
        "30",
        "--train.log_every",
        "10",
        "--sample.steps",
        "10",
        "--sample.n_samples",
        "64",
        "--eval.n_images",
        "4",
    ]
    assert cli.main(args) == 0
    run = run_dir_of(tmp_path, "moons_vp")
    check_run(run, ["em", "pc", "ode"])
    loaded = sgm.experiment.load_run(run)
    assert loaded.sde == sgm.VPSDE() and loaded.config.train.steps == 30
    x = sgm.sample(
        loaded.model, loaded.sde, sgm.EulerMaruyama(steps=5), key=jr.key(0), shape=(3, 2)
    )
    assert x.shape == (3, 2)
    model_time = (run / "model.eqx").stat().st_mtime
    assert (
        cli.main(
            [
                "--experiment",
                "moons_vp",
                "--out",
                str(tmp_path),
                "--mode",
                "sample",
                "--run-dir",
                str(run),
            ]
        )
        == 0
    )
    assert (run / "model.eqx").stat().st_mtime == model_time  # not retrained


def test_digits_end_to_end(tmp_path):
    assert cli.main(["--experiment", "digits_vp", "--out", str(tmp_path), *TINY_UNET]) == 0
    metrics = check_run(run_dir_of(tmp_path, "digits_vp"), ["em"])
    assert metrics["test_bits_per_dim"]["n"] == 2


@pytest.mark.slow  # about 45 s; the couplings train in tests/test_flow_matching.py
def test_digits_fm_with_the_ot_coupling_end_to_end(tmp_path):
    tiny = [a if a != "em" else "euler" for a in TINY_UNET]
    args = ["--experiment", "digits_fm", "--loss.coupling", "ExactOTCoupling()", *tiny]
    args += ["--sample.euler.steps", "5"]
    assert cli.main([*args, "--out", str(tmp_path)]) == 0
    run = run_dir_of(tmp_path, "digits_fm")
    metrics = check_run(run, ["euler"])
    assert metrics["samplers"]["euler"]["nfe"] == 6  # 5 Euler steps and the denoising step
    config = sgm.experiment.load_run(run).config
    assert config.loss == sgm.FlowMatchingLoss(coupling=sgm.ExactOTCoupling())
    assert config.sde == sgm.RectifiedFlow() and config.net.conditional


@pytest.mark.slow  # about 50 s; reading the IDX files is in tests/test_data.py
@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"MNIST subset not at {MNIST_DIR}")
def test_mnist_from_idx_end_to_end(tmp_path):
    args = ["--experiment", "mnist_ve", "--data-dir", str(MNIST_DIR), "--out", str(tmp_path)]
    assert cli.main(args + TINY_UNET) == 0
    run = run_dir_of(tmp_path, "mnist_ve")
    check_run(run, ["em"])
    assert sgm.experiment.load_run(run).data_shape == (1, 28, 28)


def test_list(capsys):
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    names = (
        "mnist_ve",
        "mnist_vp",
        "mnist_subvp",
        "cifar10_vp",
        "cifar10_ve",
        "flowers_ve",
        "digits_vp",
        "moons_vp",
        "eight_gaussians_ve",
        "ou_vp",
        "ou_theta_vp",
        "digits_sr_vp",
        "digits_dit_vp",
        "mnist_dit_vp",
        "mnist_vp_likelihood",
        "mnist_vdm",
        "moons_fm",
        "mnist_fm",
        "digits_fm",
    )
    for name in names:
        assert name in out
    assert out.count("budget: ") == len(names) and "BUDGET" not in out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--experiment", "mnist_xx"], "unknown experiment 'mnist_xx'"),
        (["--experiment", "digits_vp", "--train.stepz", "3"], "unknown config key 'train.stepz'"),
        (["--experiment", "digits_vp", "--train.steps", "many"], "bad value 'many'"),
        (["--experiment", "digits_vp", "--sde.kind", "vv"], "expected one of"),
        (["--experiment", "digits_vp", "--mode", "sample"], "no run of digits_vp"),
    ],
)
def test_bad_arguments_are_clear_errors(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main([*args, "--out", str(tmp_path)])
    assert message in capsys.readouterr().err


def test_missing_corrupt_or_unprepared_data_is_a_clear_error_and_leaves_no_run(
    tmp_path, capsys, monkeypatch
):
    out = tmp_path / "runs"
    with pytest.raises(SystemExit):
        cli.main(
            ["--experiment", "mnist_ve", "--data-dir", str(tmp_path / "no"), "--out", str(out)]
        )
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    for stem in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (bad / stem).write_bytes(b"\x00\x00\x08\x03" + bytes(7))
    with pytest.raises(SystemExit):
        cli.main(["--experiment", "mnist_ve", "--data-dir", str(bad), "--out", str(out)])
    assert "truncated or corrupt" in capsys.readouterr().err
    # no --data-dir and no prepared tfds data: say how to get it
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    with pytest.raises(SystemExit):
        cli.main(["--experiment", "mnist_vp", "--out", str(out)])
    err = capsys.readouterr().err
    assert "is not prepared" in err and "--data-dir" in err and "download_and_prepare" in err
    assert not out.exists()


def test_unfinished_run_is_not_mistaken_for_a_finished_one(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        sgm.experiment.load_run(run)


def test_inpaint_and_classes_modes(tmp_path):
    """A tiny class-conditional digits model: --mode classes draws a class grid with
    classifier-free guidance, --mode guided one with a trained classifier; --mode inpaint
    fills in half images, known pixels unchanged."""
    args = [
        "--experiment",
        "digits_vp",
        "--out",
        str(tmp_path),
        *TINY_UNET,
        "--model.conditional",
        "true",
        "--sample.inpaint_steps",
        "5",
        "--sample.inpaint_particles",
        "2",
    ]
    assert cli.main(args) == 0
    run = run_dir_of(tmp_path, "digits_vp")
    assert cli.main([*args, "--mode", "classes", "--run-dir", str(run)]) == 0
    assert (run / "classes.png").exists()
    assert (
        cli.main(
            [*args, "--mode", "guided", "--sample.classifier_steps", "5", "--run-dir", str(run)]
        )
        == 0
    )
    assert (run / "guided.png").exists() and (run / "classifier.eqx").exists()
    guided = json.loads((run / "metrics.json").read_text())["guided"]
    assert 0 <= guided["classifier_test_accuracy_at_t_end"] <= 1
    assert cli.main([*args, "--mode", "inpaint", "--run-dir", str(run)]) == 0
    assert (run / "inpaint.png").exists()
    assert "inpaint" in json.loads((run / "metrics.json").read_text())


@pytest.mark.slow  # about 30 s; the library's part is in tests/test_control.py
def test_colorize_mode_on_rgb_data_offline(tmp_path):
    """cifar10_vp on tfds mock data (random RGB images, offline): a tiny model, then --mode
    colorize writes its grid; the grey level of the result is the input's."""
    tfds = pytest.importorskip("tensorflow_datasets")
    args = [
        "--experiment",
        "cifar10_vp",
        "--out",
        str(tmp_path),
        *TINY_UNET,
        "--model.num_res_blocks",
        "1",
        "--sample.inpaint_steps",
        "5",
        "--sample.inpaint_particles",
        "2",
    ]
    with tfds.testing.mock_data(num_examples=16):
        assert cli.main([*args, "--mode", "train"]) == 0
        run = run_dir_of(tmp_path, "cifar10_vp")
        assert cli.main([*args, "--mode", "colorize", "--run-dir", str(run)]) == 0
    assert (run / "colorize.png").exists()
    assert "colorize" in json.loads((run / "metrics.json").read_text())


def test_colorize_mode_needs_rgb_data(tmp_path):
    args = ["--experiment", "digits_vp", "--out", str(tmp_path), *TINY_UNET]
    assert cli.main([*args, "--mode", "train"]) == 0
    with pytest.raises(SystemExit, match="needs RGB images"):
        cli.main([*args, "--mode", "colorize", "--run-dir", str(run_dir_of(tmp_path, "digits_vp"))])


@pytest.mark.slow  # about 30 s; the library's part is in tests/test_control.py
def test_parameter_conditioned_experiment(tmp_path):
    """ou_theta_vp: a 1-D UNet conditioned on y = log theta; sampling draws given the test
    series' parameters, scores them with the family's exact law and draws the response figure;
    the likelihood is log p(x | y). The run loads back with its conditioning."""
    args = ["--experiment", "ou_theta_vp", "--out", str(tmp_path), *TINY_UNET]
    assert cli.main(args) == 0
    run = run_dir_of(tmp_path, "ou_theta_vp")
    metrics = check_run(run, ["em"])
    check = metrics["samplers"]["em"]["check"]
    assert set(check) >= {"delta_log_density_per_dim", "lag1_mean_error", "variance"}
    assert metrics["test_nll_nats_per_dim"]["given"] == "vector"
    assert (run / "conditional_em.png").exists()
    loaded = sgm.experiment.load_run(run)
    assert loaded.cond_shape == (1,) and loaded.model.net.cond.cond_dim == 1
    with pytest.raises(SystemExit, match="conditioned on vectors"):
        cli.main([*args, "--mode", "inpaint", "--run-dir", str(run)])


@pytest.mark.slow  # about 45 s; the map conditioning is in tests/test_nets.py
def test_map_conditioned_experiment(tmp_path):
    """digits_sr_vp: the UNet takes the 4x4 block means as an extra input channel."""
    args = ["--experiment", "digits_sr_vp", "--out", str(tmp_path), *TINY_UNET]
    assert cli.main(args) == 0
    run = run_dir_of(tmp_path, "digits_sr_vp")
    metrics = check_run(run, ["em"])
    assert set(metrics["samplers"]["em"]["check"]) == {"lowres_rmse", "lowres_rmse_unmatched"}
    assert (run / "conditional_em.png").exists()
    assert sgm.experiment.load_run(run).model.net.cond_channels == 1


def test_conditional_model_needs_something_to_condition_on(tmp_path, capsys):
    args = [
        "--experiment",
        "ou_vp",
        "--out",
        str(tmp_path),
        *TINY_UNET,
        "--model.conditional",
        "true",
    ]
    with pytest.raises(SystemExit):
        cli.main(args)
    assert "needs data with labels, parameters or maps" in capsys.readouterr().err
    assert not (tmp_path / "ou_vp").exists()  # refused before the run exists


@pytest.mark.slow  # about 30 s; dequantized training is in tests/test_dequant.py
@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"MNIST subset not at {MNIST_DIR}")
def test_likelihood_experiment_trains_on_dequantized_images(tmp_path):
    args = [
        "--experiment",
        "mnist_vp_likelihood",
        "--data-dir",
        str(MNIST_DIR),
        "--out",
        str(tmp_path),
        "--mode",
        "train",
    ]
    assert cli.main(args + TINY_UNET) == 0
    run = sgm.experiment.load_run(run_dir_of(tmp_path, "mnist_vp_likelihood"))
    assert run.model.dequantizer == sgm.UniformDequantizer()
    assert run.config.loss == sgm.DSMLoss(weighting="likelihood", importance_sampling=True)


@pytest.mark.slow  # about 45 s; the schedule's own tests are tests/test_learned_schedule.py
@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"MNIST subset not at {MNIST_DIR}")
def test_learned_schedule_experiment_trains_samples_and_resumes(tmp_path):
    """mnist_vdm: the schedule trains with the model, config.json holds only its settings,
    the loaded run samples and evaluates with the trained schedule, and a resume continues."""
    args = [
        "--experiment",
        "mnist_vdm",
        "--data-dir",
        str(MNIST_DIR),
        "--out",
        str(tmp_path),
        *TINY_UNET,
        "--train.steps",
        "3",
        "--optimizer.lr",
        "0.05",
    ]
    assert cli.main([*args, "--mode", "train"]) == 0
    run_dir = run_dir_of(tmp_path, "mnist_vdm")
    written = json.loads((run_dir / "config.json").read_text())["sde"]
    assert written == {
        "__class__": "LearnedVPSDE",
        "log_snr_max": 13.8155,
        "log_snr_min": -10.05,
        "hidden": 64,
        "t0": 1e-5,
        "t1": 1.0,
    }
    run = sgm.experiment.load_run(run_dir)
    assert run.sde is run.model.sde
    assert not np.allclose(run.sde.raw_a, sgm.LearnedVPSDE().raw_a)
    assert cli.main([*args, "--run-dir", str(run_dir), "--mode", "sample"]) == 0
    assert cli.main([*args, "--run-dir", str(run_dir), "--mode", "likelihood"]) == 0
    assert np.isfinite(
        json.loads((run_dir / "metrics.json").read_text())["test_bits_per_dim"]["mean"]
    )
    assert (
        cli.main(
            [*args, "--run-dir", str(run_dir), "--resume", "--train.steps", "5", "--mode", "train"]
        )
        == 0
    )
    assert not np.allclose(sgm.experiment.load_run(run_dir).sde.raw_a, run.sde.raw_a)


def test_a_dequantizer_must_fit_the_data(tmp_path, capsys, monkeypatch):
    """A dequantizer for other images than the dataset's is refused before a run exists."""
    import dataclasses

    ds = sgm.data.load("two_moons", key=jr.key(0))
    cfg = EXPERIMENTS["mnist_vp_likelihood"]
    with pytest.raises(sgm.experiment.phases.PhaseError, match="num_bits=None"):
        sgm.experiment.phases.check_data(cfg, ds)
    # the data name is no override: the experiment itself names other data
    moons = dataclasses.replace(cfg, data=sgm.experiment.Data("two_moons", n_train=64))
    monkeypatch.setitem(cli.EXPERIMENTS, "mnist_vp_likelihood", moons)
    with pytest.raises(SystemExit):
        cli.main(["--experiment", "mnist_vp_likelihood", "--out", str(tmp_path)])
    assert "net.dequantizer expects" in capsys.readouterr().err
    assert not (tmp_path / "mnist_vp_likelihood").exists()


def test_transformer_experiment_trains_and_samples(tmp_path):
    tiny_dit = ["--model.hidden", "16", "--model.depth", "1", "--model.heads", "2", *TINY_UNET[8:]]
    out = ["--experiment", "digits_dit_vp", "--out", str(tmp_path)]
    assert cli.main([*out, *tiny_dit, "--mode", "train"]) == 0
    run = run_dir_of(tmp_path, "digits_dit_vp")
    assert type(sgm.experiment.load_run(run).model.net).__name__ == "DiT"
    assert cli.main([*out, "--run-dir", str(run), "--mode", "sample"]) == 0
    assert (run / "samples_em.png").exists()


USER_EXPERIMENT = """
import sgm
from sgm.experiment import Data, Eval, Experiment, Net, Sample, Train
from sgm.nets import MLP

EXPERIMENT = Experiment(
    name="my_data",
    data=Data("npz", path="my_data.npz", standardize=True),
    sde=sgm.VPSDE(),
    net=Net(MLP, width=16, depth=1),
    train=Train(steps=4, batch_size=8, log_every=2, checkpoint_every=2),
    sample=Sample(n_samples=8, samplers={"em": sgm.EulerMaruyama(steps=4)}),
    eval=Eval(n_images=4, trace=sgm.Exact(), batch_size=4),
)
"""


def test_a_users_npz_data_and_experiment_file_end_to_end(tmp_path, monkeypatch):
    """The issue's "done when": a user's own data and experiment file, trained, sampled,
    evaluated and resumed through main.py, and the run's data and samples read back."""
    monkeypatch.chdir(tmp_path)
    x = np.random.default_rng(0).normal([10.0, -5.0, 0.0], [3.0, 1.0, 0.1], (64, 3))
    np.savez(tmp_path / "my_data.npz", x=x.astype(np.float32))
    exp_file = tmp_path / "my_experiment.py"
    exp_file.write_text(USER_EXPERIMENT)
    assert cli.main(["--experiment", str(exp_file), "--out", "runs"]) == 0
    run = run_dir_of(tmp_path / "runs", "my_data")
    metrics = check_run(run, ["em"])
    assert metrics["test_nll_nats_per_dim"]["n"] == 4
    info = json.loads((run / "run.json").read_text())
    assert info["source"] == str(exp_file)
    samples = np.load(run / "samples_em.npz")
    assert samples["x"].shape == samples["x_model"].shape == (8, 3)
    loaded = sgm.experiment.load_run(run)
    ds = loaded.dataset()  # the data it was trained and evaluated on
    assert ds.test.shape == (6, 3) and isinstance(ds.scaler, sgm.Standardizer)
    np.testing.assert_allclose(ds.scaler.inverse(samples["x_model"]), samples["x"], rtol=1e-5)
    exp_file.unlink()  # resuming needs only the run directory
    assert cli.main(["--run-dir", str(run), "--resume", "--train.steps", "6"]) == 0
    assert sgm.experiment.load_run(run).config.train.steps == 6
    assert cli.main(["--experiment", "my_data", "--out", "runs", "--mode", "sample"]) == 0


def test_help_lists_an_experiments_settings(capsys):
    assert cli.main(["--help"]) == 0
    assert "--experiment" in capsys.readouterr().out
    assert cli.main(["--experiment", "moons_vp", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--train.steps 3000" in out and "--sample.em.steps 500" in out
    assert "--data.n_train 20000" in out and "--sample.samplers em,pc,ode" in out
    assert "more samplers: dpm" in out


def test_a_sampler_the_experiment_lacks_says_how_to_add_it(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["--experiment", "moons_vp", "--sample.dpm.steps", "10", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "add it with --sample.samplers em,pc,ode,dpm" in err and "valid keys" not in err
    exp = sgm.experiment.override(
        EXPERIMENTS["moons_vp"], {"sample.samplers": "em,dpm", "sample.dpm.steps": "10"}
    )
    assert exp.sample.samplers["dpm"].steps == 10


def test_bad_experiment_files_are_clear_errors(tmp_path, capsys):
    none = tmp_path / "none.py"
    none.write_text("x = 1\n")
    for path, message in [
        (tmp_path / "missing.py", "does not exist"),
        (none, "must define EXPERIMENT = sgm.experiment.Experiment"),
    ]:
        with pytest.raises(SystemExit):
            cli.main(["--experiment", str(path), "--out", str(tmp_path)])
        assert message in capsys.readouterr().err


def test_experiments_are_discovered_in_a_stable_order():
    import experiments

    assert list(EXPERIMENTS)[: len(experiments.ORDER)] == list(experiments.ORDER)


def test_a_signal_in_sampling_or_evaluation_keeps_what_was_finished(tmp_path, capsys, monkeypatch):
    """SIGTERM while sampling and SIGINT while evaluating end with exit status 131 and a line
    saying what was kept; metrics.json, written after each phase, keeps the training time and
    every finished phase; run.json records each invocation with its outcome."""
    import os
    import signal

    from test_runs import TINY

    from sgm.experiment import phases

    draw, save_chunk = phases.draw, phases.ChunkStore.save

    def stopped(fn, signum):
        def call(*args, **kwargs):
            os.kill(os.getpid(), signum)
            return fn(*args, **kwargs)

        return call

    monkeypatch.setattr(phases, "draw", stopped(draw, signal.SIGTERM))
    out = ["--out", str(tmp_path)]
    assert cli.main([*TINY, *out, "--train.steps", "4"]) == 131
    err = capsys.readouterr().err
    assert "stopped by SIGTERM during sample; kept: the trained model" in err
    run = run_dir_of(tmp_path, "moons_vp")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_seconds"] > 0 and "test_nll_nats_per_dim" not in metrics
    monkeypatch.setattr(phases, "draw", draw)
    # the signal arrives as the evaluation's first chunk is stored
    monkeypatch.setattr(phases.ChunkStore, "save", stopped(save_chunk, signal.SIGINT))
    assert cli.main(["--run-dir", str(run), "--mode", "sample"]) == 0
    code = cli.main(["--run-dir", str(run), "--mode", "likelihood", "--eval.n_images", "1000"])
    assert code == 131
    err = capsys.readouterr().err
    assert "eval.n_images=1000, but two_moons has 16 test examples" in err
    assert "stopped by SIGINT during likelihood" in err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_seconds"] > 0 and metrics["samplers"]["em"]["finite"]
    outcomes = [i["outcome"] for i in json.loads((run / "run.json").read_text())["invocations"]]
    assert outcomes == [
        "interrupted by SIGTERM during sample",
        "finished",
        "interrupted by SIGINT during likelihood",
    ]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
