"""Run directories: created exclusively, configured once, resumed only from a checkpoint that
verifies, and loaded back without retraining.

A run directory holds `config.json` (the experiment it was created with, never rewritten),
`run.json` (the data's shape, the settings changed since, the SHA-256 of `model.eqx`, and every
invocation with its time, overrides and outcome), `checkpoint/` (the last few checkpoints),
`model.eqx` (the trained EMA model), `history.json`, `metrics.json` and `lock` (who writes into
the run now or did last: `sgm.experiment._lock`).
"""

import dataclasses
import hashlib
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path

import equinox as eqx
import jax

from .._compat import upgrade_config
from .._io import write_json
from .._score import ScoreModel
from .._sde import AbstractSDE
from .._training import CheckpointError
from .._training._checkpoint import verified
from ..data import Dataset
from ..distributed import is_main
from ._experiment import Experiment
from ._overrides import (
    apply_settings,
    model_fingerprint,
    refused_changes,
    training_changes,
    written_fingerprint,
)
from ._serial import check_types, from_json, to_json

CONFIG, INFO, MODEL, METRICS = "config.json", "run.json", "model.eqx", "metrics.json"
HISTORY, CHECKPOINTS = "history.json", "checkpoint"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def read_config(path: Path) -> Experiment:
    """The experiment in a `config.json`, written by this version or an earlier one."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} cannot be read as a configuration: {e}") from e
    try:
        exp = from_json(upgrade_config(data))
        if not isinstance(exp, Experiment):
            raise ValueError(f"it holds a {type(exp).__name__}, not an Experiment")
        check_types(exp)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(
            f"{path} is not a valid configuration ({e}); it is written once when a run is "
            "created and never edited: restore it, or start a new run."
        ) from None
    return exp


def read_info(path: Path) -> dict:
    """A run's `run.json`; a ValueError naming the file when it is unreadable or incomplete."""
    try:
        info = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(
            f"{path} cannot be read ({e}); restore it from a copy, or start a new run."
        ) from None
    if not isinstance(info, dict) or not isinstance(info.get("data_shape"), list):
        raise ValueError(
            f"{path} has no data_shape (edited or written by something else); restore it "
            "from a copy, or start a new run."
        )
    return info


def model_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclasses.dataclass(frozen=True)
class RunDir:
    """A run directory being created, resumed or evaluated.

    `config` is the run's configuration: `config.json` with the training settings changed
    since (recorded in `run.json`); `info` is `run.json`."""

    path: Path
    config: Experiment
    info: dict

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def fingerprint(self) -> str:
        """What the run's checkpoints record of its configuration (`model_fingerprint`),
        computed on its `config.json` as written, so that it survives new fields."""
        data = json.loads((self.path / CONFIG).read_text())
        if "__class__" not in data:  # the format before configurations were objects
            return model_fingerprint(self.config)
        return written_fingerprint(data)

    @property
    def finished(self) -> bool:
        return (self.path / MODEL).exists()

    @classmethod
    def create(cls, base: str | Path, config: Experiment, info: dict) -> "RunDir":
        """A new run of `config` under `base/<name>/<UTC time>-<random suffix>`, created
        exclusively (runs started at the same moment never share a folder)."""
        parent = Path(base) / config.name
        parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        while True:
            path = parent / f"{stamp}-{secrets.token_hex(3)}"
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        return cls.create_at(path, config, info)

    @classmethod
    def create_at(cls, path: str | Path, config: Experiment, info: dict) -> "RunDir":
        """A new run in `path`, which must not exist yet."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(exist_ok=path.is_dir() and not any(path.iterdir()))
        except FileExistsError:
            raise FileExistsError(
                f"{path} already exists; continue a run there with --resume, or choose a new "
                "directory."
            ) from None
        write_json(path / CONFIG, to_json(config))
        info = {
            "experiment": config.name,
            "created": _now(),
            **info,
            "settings": {},
            "invocations": [],
        }
        write_json(path / INFO, info)
        return cls(path, config, info)

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """An existing run; a clear error if `path` is missing or not a run."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"run directory {path} does not exist.")
        missing = [n for n in (CONFIG, INFO) if not (path / n).exists()]
        if missing:
            raise FileNotFoundError(f"{path} is not a run directory (no {', '.join(missing)}).")
        info = read_info(path / INFO)
        try:
            config = apply_settings(read_config(path / CONFIG), info.get("settings", {}))
        except ValueError as e:
            if str(e).startswith(str(path / CONFIG)):
                raise
            raise ValueError(f"{path / INFO}: {e}; restore it from a copy.") from None
        return cls(path, config, info)

    def record(self, mode: str, overrides: dict, settings: dict) -> "RunDir":
        """Records an invocation (its time, mode, overrides and `outcome: "started"`) and the
        training settings it changed in `run.json`; returns the run with those settings
        applied. Called under the run's lock, once the invocation's work starts;
        `finish` records its outcome."""
        info = dict(self.info)
        info["settings"] = {**info.get("settings", {}), **settings}
        invocation = {
            "time": _now(),
            "mode": mode,
            "overrides": dict(overrides),
            "processes": jax.process_count(),
            "outcome": "started",
        }
        info["invocations"] = [*info.get("invocations", []), invocation]
        if is_main():  # process 0 alone writes files
            write_json(self.path / INFO, info)
        return RunDir(self.path, apply_settings(self.config, settings), info)

    def update_info(self, **changes) -> "RunDir":
        """Sets entries of `run.json` as it is on disk now (atomically; under the run's lock)."""
        info = {**read_info(self.path / INFO), **changes}
        if is_main():
            write_json(self.path / INFO, info)
        return RunDir(self.path, self.config, info)

    def finish(self, outcome: str) -> "RunDir":
        """Records the outcome of the invocation `record` started (`finished`, `interrupted
        during sample`, `failed: ...`)."""
        invocations = [dict(i) for i in read_info(self.path / INFO).get("invocations", [])]
        if invocations:
            invocations[-1]["outcome"] = outcome
            invocations[-1]["ended"] = _now()
        return self.update_info(invocations=invocations)

    def model_verified(self) -> bool:
        """Whether `model.eqx` exists and matches the checksum `run.json` records for it."""
        recorded = self.info.get("model_sha256")
        return (
            (self.path / MODEL).exists()
            and recorded is not None
            and model_digest(self.path / MODEL) == recorded
        )

    def settings_from(self, config: Experiment) -> dict:
        """The run settings `config` changes (training length, cadences), after checking that
        it changes nothing else of this run: a ValueError names what it would change."""
        refused = refused_changes(self.config, config)
        if refused:
            raise ValueError(
                f"{self.path} was trained with other values of {', '.join(refused)}; an "
                "existing run takes only training length, logging and checkpoint cadence, "
                "sampling and evaluation settings. Start a new run (without --resume or "
                "--run-dir) to change them."
            )
        return training_changes(self.config, config)

    @classmethod
    def latest(cls, base: str | Path, name: str, *, resumable: bool) -> "RunDir | None":
        """The newest run of experiment `name` under `base` with a checkpoint that verifies
        (`resumable`) or with a trained model; folders that are not runs are ignored."""
        for run in reversed(runs_of(base, name)):
            if not resumable and run.finished:
                return run
            if resumable:
                try:
                    run.checkpoint_step()
                    return run
                except CheckpointError:
                    continue
        return None

    def checkpoint_step(self, *, verify: bool = True) -> int:
        """The step of the newest checkpoint that verifies; a `CheckpointError` saying what was
        found when there is none (and how to accept an unverifiable one)."""
        try:
            _, meta = verified(self.checkpoint_dir, verify=verify)
        except CheckpointError as e:
            accept = (
                " or pass --accept-unverified to use it as it is" if "checksum" in str(e) else ""
            )
            raise CheckpointError(
                f"run {self.path} has no checkpoint to resume ({e}); start a new run without "
                f"--resume{accept}."
            ) from None
        return int(meta["step"])


def runs_of(base: str | Path, name: str) -> list[RunDir]:
    """The runs of experiment `name` under `base`, oldest first; folders that are not runs
    (no configuration, unreadable) are ignored."""
    parent = Path(base) / name
    found = []
    for p in sorted(parent.iterdir()) if parent.is_dir() else []:
        try:
            found.append(RunDir.open(p))
        except (OSError, ValueError):
            continue
    return sorted(found, key=lambda r: (r.info.get("created", ""), r.path.name))


@dataclasses.dataclass(frozen=True)
class Run:
    """A finished training run: `.model` is a score usable by every sampler and likelihood;
    `.dataset()` reloads the data it was trained and evaluated on."""

    path: Path
    config: Experiment
    sde: AbstractSDE
    model: ScoreModel
    data_shape: tuple[int, ...]
    num_classes: int | None
    cond_shape: tuple[int, ...] | None = None

    def dataset(self, data_dir=None) -> Dataset:
        """The data this run was trained and evaluated on, reloaded with its configuration
        and seed, as `main.py` loaded them: `.train` the training split, `.test` the split the
        likelihood phase evaluates (its first `config.eval.n_images`), both in model scale;
        `.scaler.inverse` brings samples back to data units. `data_dir` as `--data-dir`."""
        ds = self.config.load_data(data_dir)
        if tuple(ds.data_shape) != self.data_shape:
            raise ValueError(
                f"{self.path} was trained on data of shape {self.data_shape}; the data found "
                f"now have {ds.data_shape} (has the file changed?)."
            )
        return ds


def load_run(run_dir: str | Path, *, verify: bool = True) -> Run:
    """Loads `run_dir` (written by `main.py`, by this version or an earlier one): its
    configuration, SDE and trained (EMA) model. Takes no lock and writes nothing.

    `model.eqx` must match the SHA-256 that `run.json` records for it (`model_sha256`): a
    mismatch, or a run written before models were checksummed, is a ValueError saying so;
    `verify=False` (`main.py --accept-unverified`) loads it as it is."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist.")
    missing = [n for n in (CONFIG, INFO, MODEL) if not (run_dir / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"{run_dir} is not a finished run (missing {', '.join(missing)}); finish its "
            "training with `python main.py --run-dir DIR --resume`."
        )
    run = RunDir.open(run_dir)
    config, info = run.config, run.info
    if verify and not run.model_verified():
        why = (
            "has no checksum in run.json (written by an earlier version)"
            if "model_sha256" not in info
            else "does not match the checksum in run.json (changed or damaged since)"
        )
        raise ValueError(
            f"{run_dir / MODEL} {why}; rewrite it from the run's checkpoint with `python "
            "main.py --run-dir DIR --resume --mode train`, or accept it as it is with "
            "load_run(..., verify=False) (main.py: --accept-unverified)."
        )
    shape = tuple(info["data_shape"])
    cond_shape = tuple(info["cond_shape"]) if info.get("cond_shape") else None
    try:
        like = config.build_model(shape, num_classes=info.get("num_classes"), cond_shape=cond_shape)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"the model of {run_dir / CONFIG} cannot be built for the data in {run_dir / INFO} "
            f"({e}); restore those files, or start a new run."
        ) from None
    try:
        model = eqx.tree_deserialise_leaves(run_dir / MODEL, like)
    except Exception as e:
        raise ValueError(f"{run_dir / MODEL} is corrupt or does not match its config: {e}") from e
    # a learned schedule was trained with the model: the SDE is the model's
    return Run(run_dir, config, model.sde, model, shape, info.get("num_classes"), cond_shape)
