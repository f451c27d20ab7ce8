"""Run directories: what a finished run holds, and loading it back without retraining."""

import dataclasses
import json
from pathlib import Path

import equinox as eqx
import jax.random as jr

from ._checkpoint import _atomic_write
from ._config import ExperimentConfig, build_model, build_sde
from ._score import ScoreModel
from ._sde import AbstractSDE

CONFIG, INFO, MODEL, METRICS = "config.json", "run.json", "model.eqx", "metrics.json"


def write_json(path: Path, obj) -> None:
    _atomic_write(Path(path), lambda f: f.write(json.dumps(obj, indent=1).encode()))


def save_model(path: Path, model: ScoreModel) -> None:
    """Writes the model's arrays atomically (a temporary file, then a rename)."""
    _atomic_write(Path(path), lambda f: eqx.tree_serialise_leaves(f, model))


@dataclasses.dataclass(frozen=True)
class Run:
    """A finished training run: `.model` is a score usable by every sampler and likelihood."""

    path: Path
    config: ExperimentConfig
    sde: AbstractSDE
    model: ScoreModel
    data_shape: tuple[int, ...]
    num_classes: int | None
    cond_shape: tuple[int, ...] | None = None


def load_run(run_dir: str | Path) -> Run:
    """Loads `run_dir` (written by `main.py`): its config, SDE and trained (EMA) model."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist.")
    missing = [n for n in (CONFIG, INFO, MODEL) if not (run_dir / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"{run_dir} is not a finished run (missing {', '.join(missing)}); finish its "
            "training with `python main.py --experiment NAME --run-dir DIR --resume`."
        )
    config = ExperimentConfig.from_dict(json.loads((run_dir / CONFIG).read_text()))
    info = json.loads((run_dir / INFO).read_text())
    sde = build_sde(config.sde)
    shape = tuple(info["data_shape"])
    cond_shape = tuple(info["cond_shape"]) if info.get("cond_shape") else None
    like = build_model(
        config.model, sde, shape, info["num_classes"], key=jr.key(0), cond_shape=cond_shape
    )
    try:
        model = eqx.tree_deserialise_leaves(run_dir / MODEL, like)
    except Exception as e:
        raise ValueError(f"{run_dir / MODEL} is corrupt or does not match its config: {e}") from e
    return Run(run_dir, config, sde, model, shape, info["num_classes"], cond_shape)
