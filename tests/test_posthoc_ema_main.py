"""Post-hoc EMA through `python main.py`: a toy run trained with `--train.posthoc_ema`,
`--mode ema --ema.sigma_rel` rebuilding an EMA into the run, sampling from it, and the
errors."""

import json
import re
import sys
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest

import sgm
import sgm.experiment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import main as cli  # noqa: E402

TOY = ["--train.steps", "60", "--train.log_every", "20", "--train.eval_every", "none"]
TOY += ["--sample.samplers", "em", "--sample.steps", "5", "--sample.n_samples", "8"]
EMA = ["--train.posthoc_ema", "PostHocEMA", "--train.posthoc_ema.snapshot_every", "5"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    args = ["--experiment", "moons_vp", "--out", str(out), "--mode", "train", *TOY, *EMA]
    assert cli.main(args) == 0
    (path,) = sorted((out / "moons_vp").iterdir())
    return path


def params(model):
    return [np.asarray(a) for a in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))]


def test_mode_ema_rebuilds_a_tracked_length_into_the_run(run, tmp_path):
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["posthoc_ema"] == {
        "__class__": "PostHocEMA",
        "sigma_rels": [0.05, 0.1],
        "snapshot_every": 5,
        "directory": None,
    }
    snapshots = sorted(p.name for p in (run / "checkpoint" / "ema").iterdir())
    assert snapshots == [f"step_{k:08d}" for k in range(5, 61, 5)]
    assert cli.main(["--run-dir", str(run), "--mode", "ema", "--ema.sigma_rel", "0.05"]) == 0
    info = json.loads((run / "run.json").read_text())
    entry = info["posthoc_ema"]["0.050"]
    assert entry["file"] == "model_ema_0.050.eqx" and entry["step"] == 60
    assert info["invocations"][-1]["overrides"] == {"ema.sigma_rel": "0.05"}
    metrics = json.loads((run / "metrics.json").read_text())["posthoc_ema"]["0.050"]
    assert metrics["error"] < 1e-6 and metrics["sigma_rel"] == 0.05
    # a tracked length is the tracked average, as the last snapshot holds it
    loaded = sgm.experiment.load_run(run)
    rebuilt = eqx.tree_deserialise_leaves(run / "model_ema_0.050.eqx", loaded.model)
    stored = eqx.tree_deserialise_leaves(
        run / "checkpoint" / "ema" / "step_00000060" / "state.eqx", (loaded.model,) * 2
    )
    for a, b in zip(params(rebuilt), params(stored[0]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # and it is sampled from, with the outputs elsewhere
    out = tmp_path / "elsewhere"
    args = ["--run-dir", str(run), "--mode", "sample", "--ema.sigma_rel", "0.05"]
    assert cli.main([*args, "--out", str(out)]) == 0
    sampled = json.loads((out / run.name / "metrics.json").read_text())
    assert sampled["samplers"]["em"]["finite"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mode", "ema"], "--mode ema needs --ema.sigma_rel"),
        (["--mode", "ema", "--ema.sigma_rel", "x"], "--ema.sigma_rel must be a number"),
        (["--mode", "ema", "--ema.length", "0.1"], "unknown option --ema.length"),
        (["--mode", "ema", "--ema.sigma_rel", "0.5"], r"sigma_rel must be in \(0, 0.3003\]"),
        (["--mode", "ema", "--ema.sigma_rel", "0.001"], "cannot be rebuilt from the snapshots"),
        (["--mode", "sample", "--ema.sigma_rel", "0.1"], "add --out DIR"),
        (["--mode", "train", "--ema.sigma_rel", "0.1"], "--ema.sigma_rel applies to --mode"),
    ],
)
def test_ema_mode_errors_are_clear(run, args, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--run-dir", str(run), *args])
    code = info.value.code
    # argparse's errors go to stderr (exit 2); a phase's error is the exit message
    err = code if isinstance(code, str) else capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(message, err) and "\n" not in err, err


def test_sampling_a_length_not_yet_rebuilt_and_a_run_without_snapshots(run, tmp_path, capsys):
    args = ["--run-dir", str(run), "--mode", "sample", "--out", str(tmp_path)]
    with pytest.raises(SystemExit):
        cli.main([*args, "--ema.sigma_rel", "0.2"])
    assert "has no post-hoc EMA of sigma_rel=0.2; make it first" in capsys.readouterr().err
    plain = tmp_path / "plain"
    assert (
        cli.main(["--experiment", "moons_vp", "--run-dir", str(plain), "--mode", "train", *TOY])
        == 0
    )
    with pytest.raises(SystemExit, match="was trained without post-hoc EMA"):
        cli.main(["--run-dir", str(plain), "--mode", "ema", "--ema.sigma_rel", "0.1"])


def test_a_config_written_before_posthoc_ema_loads_without_it(run, tmp_path):
    from sgm.experiment._run import read_config

    data = json.loads((run / "config.json").read_text())
    del data["train"]["posthoc_ema"]
    (tmp_path / "config.json").write_text(json.dumps(data))
    assert read_config(tmp_path / "config.json").train.posthoc_ema is None
