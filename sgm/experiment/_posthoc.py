"""Post-hoc EMA of a run (`main.py --mode ema --ema.sigma_rel 0.05`): the EMA of any relative
length rebuilt from the snapshots that training with `Train(posthoc_ema=sgm.PostHocEMA(...))`
wrote into `RUN/checkpoint/ema`, saved as `RUN/model_ema_<sigma_rel>.eqx` with its SHA-256 in
`run.json` (`posthoc_ema`), and loaded back for sampling or evaluation."""

import dataclasses
from pathlib import Path

import equinox as eqx

from .._io import save_model
from .._training._posthoc import reconstruct_ema
from ..distributed import is_main
from ._outputs import PhaseError
from ._run import CHECKPOINTS, Run, RunDir, model_digest, read_info


def snapshot_dir(run_path: Path) -> Path:
    """Where a run's post-hoc EMA snapshots are (`PostHocEMA`'s default beside checkpoints)."""
    return Path(run_path) / CHECKPOINTS / "ema"


def ema_key(sigma_rel: float) -> str:
    """`sigma_rel` as a file name writes it: three decimals where they are exact."""
    return f"{sigma_rel:.3f}" if float(f"{sigma_rel:.3f}") == sigma_rel else f"{sigma_rel!r}"


def reconstruct(
    run: Run, sigma_rel: float, metrics: dict, *, run_path: Path, recorded: RunDir | None
) -> Path:
    """Rebuilds the EMA of `sigma_rel` from the snapshots of the run in `run_path`
    (`sgm.reconstruct_ema`), writes it to `run.path/model_ema_<sigma_rel>.eqx` (`run.path`:
    the run, or an output folder elsewhere), records how in `metrics["posthoc_ema"]` and,
    when the run is written (`recorded`), its file and SHA-256 in `run.json`. A run without
    snapshots or a length they cannot represent is a `PhaseError`."""
    if run.config.train.posthoc_ema is None:
        raise PhaseError(
            f"{run.path} was trained without post-hoc EMA; train a run with --train.posthoc_ema "
            "PostHocEMA (and e.g. --train.posthoc_ema.snapshot_every 100)."
        )
    try:
        model, info = reconstruct_ema(
            snapshot_dir(run_path),
            sigma_rel,
            like=run.model,
            return_info=True,
        )
    except ValueError as e:
        raise PhaseError(str(e)) from None
    key = ema_key(sigma_rel)
    path = Path(run.path) / f"model_ema_{key}.eqx"
    if is_main():
        save_model(path, model)
    digest = model_digest(path) if is_main() else None
    metrics.setdefault("posthoc_ema", {})[key] = {"file": path.name, **info.to_dict()}
    if recorded is not None:
        models = dict(read_info(recorded.path / "run.json").get("posthoc_ema", {}))
        models[key] = {"file": path.name, "sha256": digest, "step": info.step}
        recorded.update_info(posthoc_ema=models)
    print(
        f"post-hoc EMA sigma_rel={sigma_rel} at step {info.step}: {len(info.sources)} stored "
        f"averages, profile error {info.error:.2%}; written to {path}"
    )
    return path


def with_ema(run: Run, run_path: Path, sigma_rel: float, *, verify: bool = True) -> Run:
    """`run` with the post-hoc EMA of `sigma_rel` that `--mode ema` wrote into `run_path` as
    its model, checked against the SHA-256 in `run.json`."""
    key = ema_key(sigma_rel)
    entry = read_info(Path(run_path) / "run.json").get("posthoc_ema", {}).get(key)
    if entry is None:
        raise ValueError(
            f"{run_path} has no post-hoc EMA of sigma_rel={sigma_rel}; make it first with "
            f"python main.py --run-dir {run_path} --mode ema --ema.sigma_rel {sigma_rel}."
        )
    path = Path(run_path) / entry["file"]
    if verify and (not path.exists() or model_digest(path) != entry["sha256"]):
        raise ValueError(
            f"{path} is missing or does not match its checksum in run.json; rebuild it with "
            f"--mode ema --ema.sigma_rel {sigma_rel}."
        )
    model = eqx.tree_deserialise_leaves(path, run.model)
    return dataclasses.replace(run, model=model)
