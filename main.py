"""Train a score model, sample from it with each sampler, evaluate its likelihood, draw figures.

python main.py --experiment digits_vp
python main.py --experiment mnist_ve --data-dir ../shared/data/mnist-subset --train.steps 2000
python main.py --run-dir runs/digits_vp/RUN --resume --train.steps 3000
python main.py --experiment path/to/my_experiment.py   (a file that defines EXPERIMENT)
python main.py --experiment moons_vp --help            (its settings, with their values)
python main.py --run-dir RUN --mode quality --quality.inception pt_inception-2015-12-05-6726825d.pth
python main.py --list
python main.py --run-dir RUN --mode ema --ema.sigma_rel 0.05   (post-hoc EMA of a run trained
    with --train.posthoc_ema PostHocEMA; then --mode sample --ema.sigma_rel 0.05 --out DIR)

One invocation at a time writes into a run (a lock in the run directory); sampling a run
elsewhere (`--run-dir RUN --mode sample --out DIR`, DIR not holding RUN) only reads it. Exit
status: 0 done, 1 failed (the message says why), 2 bad input, 130 stopped by SIGINT/SIGTERM
while training (the checkpoint of the stop step is kept: --resume continues), 131 stopped
after training (model.eqx and metrics.json of the finished phases are kept).
"""

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import equinox as eqx
import jax

import sgm
import sgm.experiment
from experiments import EXPERIMENTS
from sgm import distributed
from sgm._training._fsdp import check_fsdp
from sgm._training._phema import sigma_rel_to_gamma
from sgm.experiment import phases
from sgm.experiment._lock import RunLock, RunLocked

AFTER_TRAINING = {
    "sample": phases.sample,
    "likelihood": phases.likelihood,
    "inpaint": phases.inpaint,
    "classes": phases.classes,
    "guided": phases.guided,
    "colorize": phases.colorize,
    "quality": phases.quality,
}
MODES = ("train", "all", "ema", *AFTER_TRAINING)
EMA_KEYS = ("ema.sigma_rel",)  # options of --mode ema, not of the experiment


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter, add_help=False
    )
    p.add_argument(
        "-h",
        "--help",
        action="store_true",
        help="show this help (with --experiment, also its settings) and exit",
    )
    p.add_argument(
        "--experiment",
        help="experiment name (see --list) or a Python file defining EXPERIMENT; optional "
        "with --run-dir",
    )
    p.add_argument("--mode", default="all", choices=MODES)
    p.add_argument(
        "--data-dir",
        help="local data instead of tfds's default folder: MNIST IDX files, or a tfds data_dir "
        "holding the prepared cifar10 or flowers (nothing is downloaded)",
    )
    p.add_argument(
        "--out",
        help="where run directories go (default: runs/); with --run-dir outside it and a mode "
        "after training, where this invocation's outputs go (the run is only read)",
    )
    p.add_argument(
        "--run-dir",
        help="an existing run (sample, likelihood, resume), or where a new run is created",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the latest run with a checkpoint, or --run-dir",
    )
    p.add_argument(
        "--accept-unverified",
        action="store_true",
        help="use a checkpoint or model.eqx whose checksum is missing (an earlier version's "
        "run) or does not match, as it is",
    )
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process job first (run once per process; see the README)",
    )
    p.add_argument(
        "--distributed-timeout",
        type=int,
        default=300,
        help="seconds to wait for every process of the job to arrive (default 300)",
    )
    args, rest = p.parse_known_args(argv)
    args.out_given = args.out is not None
    args.out = args.out if args.out is not None else "runs"
    if args.help:
        return p, args, {}
    overrides = {}
    it = iter(rest)
    for token in it:
        if not token.startswith("--") or "." not in token:
            p.error(f"unrecognised argument {token!r}; overrides look like --train.steps 2000")
        key, _, value = token[2:].partition("=")
        if not value:
            value = next(it, None)
            if value is None:
                p.error(f"override {token} needs a value")
        overrides[key] = value
    args.ema_sigma_rel = None
    for key in [k for k in overrides if k.startswith("ema.")]:
        if key not in EMA_KEYS:
            p.error(f"unknown option --{key}; --mode ema takes {', '.join(EMA_KEYS)}")
        try:
            args.ema_sigma_rel = float(overrides.pop(key))
        except ValueError:
            p.error(f"--{key} must be a number, e.g. 0.05")
        try:
            sigma_rel_to_gamma(args.ema_sigma_rel)
        except ValueError as e:
            p.error(f"--{key}: {e}")
    if args.mode == "ema" and args.ema_sigma_rel is None:
        p.error("--mode ema needs --ema.sigma_rel, the relative EMA length, e.g. 0.05")
    if args.ema_sigma_rel is not None and args.mode not in ("ema", "sample", "likelihood"):
        p.error("--ema.sigma_rel applies to --mode ema, sample and likelihood")
    return p, args, overrides


def existing_run(args, name: str | None) -> sgm.experiment.RunDir:
    """The run an invocation continues or evaluates: `--run-dir`, else the latest run of the
    experiment with a checkpoint (`--resume`) or with a trained model (other modes)."""
    if args.run_dir:
        path = Path(args.run_dir)
        if not path.exists():
            raise ValueError(
                f"--run-dir {path} does not exist; check the path (nothing was created)."
            )
        return sgm.experiment.RunDir.open(path)
    if name is None:
        raise ValueError("give --experiment NAME or --run-dir DIR.")
    run = sgm.experiment.RunDir.latest(args.out, name, resumable=args.resume)
    if run is None:
        what = "with a checkpoint" if args.resume else "that finished training"
        raise ValueError(
            f"no run of {name} in {args.out} {what}; train one first or pass --run-dir."
        )
    return run


def find_experiment(spec: str | None):
    """`(name, experiment, source)` of `--experiment spec`: a built-in by name, or the
    `EXPERIMENT` of a Python file (its source the file's absolute path). An unknown name
    gives no experiment (it may still name earlier runs, with --resume or another mode)."""
    if spec is None:
        return None, None, None
    if sgm.experiment.is_experiment_file(spec):
        exp = sgm.experiment.experiment_from_file(spec)
        return exp.name, exp, str(Path(spec).expanduser().resolve())
    return spec, EXPERIMENTS.get(spec), f"experiments ({spec})" if spec in EXPERIMENTS else None


def print_settings(exp) -> None:
    print(f"\nsettings of {exp.name} (override any with --KEY VALUE):")
    for key, value in sgm.experiment.settings(exp).items():
        shown = ",".join(map(str, value)) if isinstance(value, tuple | list) else value
        print(f"  --{key} {shown}")
    missing = [s for s in sgm.experiment.SAMPLERS if s not in exp.sample.samplers]
    if missing:
        have = ",".join(exp.sample.samplers)
        print(
            f"\nmore samplers: {', '.join(missing)} (e.g. --sample.samplers {have},{missing[0]}"
            f" --sample.{missing[0]}.steps 50)"
        )


class Stopped(Exception):
    """SIGINT or SIGTERM arrived outside training."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum, frame):
    raise Stopped(signum)


def configure(args, overrides):
    """The configuration of this invocation, its run (None for a new run) and the settings
    it changes, and where a new run's experiment came from. An existing run's configuration
    is authoritative: overrides may change only what leaves its model as it is (training
    length and cadences, sampling, evaluation)."""
    name, exp, source = find_experiment(args.experiment)
    new_run = args.mode in ("train", "all") and not args.resume
    if new_run:
        if name is None:
            raise ValueError("a new run needs --experiment NAME or FILE.py (see --list).")
        if exp is None:
            raise ValueError(
                f"unknown experiment {name!r}; one of: {', '.join(EXPERIMENTS)}, or a file "
                "path/to/my_experiment.py that defines EXPERIMENT."
            )
        if args.run_dir and Path(args.run_dir).exists():
            raise ValueError(
                f"--run-dir {args.run_dir} already exists; pass --resume to "
                "continue it, or name a new directory."
            )
        return sgm.experiment.override(exp, overrides), None, {}, source
    if name is not None and exp is None and not runs_exist(args, name):
        raise ValueError(
            f"unknown experiment {name!r} and no runs of it in {args.out}; one of: "
            f"{', '.join(EXPERIMENTS)}, or a file path/to/my_experiment.py."
        )
    run = existing_run(args, name)
    if name is not None and name != run.config.name:
        raise ValueError(f"{run.path} is a run of {run.config.name}, not {name}.")
    if writes_into_run(args, run) and distributed.is_main():
        # one writer at a time, taken before any work; the run is read again under the lock
        check_writable(run.path, "the run directory", read_only_hint(args, run))
        args.lock = RunLock.acquire(run.path)
        run = sgm.experiment.RunDir.open(run.path)
    cfg = sgm.experiment.override(run.config, overrides)
    settings = run.settings_from(cfg)
    if args.resume:
        # a clear error when there is nothing to resume
        step = run.checkpoint_step(verify=not args.accept_unverified)
        if cfg.train.steps < step:
            raise ValueError(
                f"{run.path} has reached step {step}; --train.steps {cfg.train.steps} would "
                f"shorten it. Give --train.steps {step} or more (a run is never cut back)."
            )
        args.already_trained = cfg.train.steps == step and run.model_verified()
    elif args.mode not in ("train", "all") and not run.finished:
        raise ValueError(
            f"{run.path} has not finished training (no model.eqx); finish it with `python "
            f"main.py --run-dir {run.path} --resume --mode train`."
        )
    return cfg, run, settings, source


def outputs_elsewhere(args, run) -> Path | None:
    """Where a mode after training writes when it only reads the run: `--out DIR` given with a
    run outside DIR puts this invocation's outputs in `DIR/<run name>`; None: in the run."""
    if args.mode in ("train", "all") or not args.out_given:
        return None
    out = Path(args.out).resolve()
    if run.path.resolve().is_relative_to(out):
        return None
    return out / run.path.name


def writes_into_run(args, run) -> bool:
    return outputs_elsewhere(args, run) is None


def check_writable(target: Path, what: str, hint: str = "") -> None:
    """That a folder can be created at (or written into) `target`, probed without leaving
    anything: a ValueError naming the path and what to do otherwise."""
    probe = target
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"{what} {target}: {probe} is a file, not a folder; choose another path.")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sgm-probe-", dir=probe))
    except OSError as e:
        raise ValueError(
            f"{what} {target} cannot be written ({probe}: {e.strerror or e}); "
            + (hint or "choose a writable place, e.g. --out runs.")
        ) from None


def check_settings(cfg) -> None:
    """What can be checked of a configuration before any data are read."""
    if cfg.train.batch_size % jax.device_count():
        raise ValueError(
            f"train.batch_size={cfg.train.batch_size} must be a multiple of the "
            f"{jax.device_count()} devices."
        )
    check_fsdp(cfg.train.fsdp, jax.device_count())
    for section in ("optimizer", "sde", "train"):
        obj = getattr(cfg, section)
        for key, value in sgm.experiment.to_json(obj).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{section}.{key}={value} must be a finite number.")


def check_against_data(cfg, ds) -> None:
    """What needs the data, checked before a run directory is created."""
    phases.check_data(cfg, ds)
    try:  # the model this data asks for, built abstractly (no parameters computed)
        abstract = eqx.filter_eval_shape(
            lambda: cfg.build_model(
                ds.data_shape, num_classes=ds.num_classes, cond_shape=ds.cond_shape
            )
        )
    except TypeError as e:
        raise ValueError(f"the model of {cfg.name} cannot be built for {ds.name}: {e}") from None
    check_fsdp(cfg.train.fsdp, jax.device_count(), jax.tree.leaves(abstract))
    n = len(ds.train) * jax.process_count()
    if cfg.train.batch_size > n:
        raise ValueError(
            f"train.batch_size={cfg.train.batch_size} is more than the {n} training examples of "
            f"{ds.name}; give --train.batch_size {n} or less, or more data (--data.n_train)."
        )


def runs_exist(args, name: str) -> bool:
    return args.run_dir is not None or bool(sgm.experiment.runs_of(args.out, name))


def open_run(args, overrides, cfg, run, settings, source, ds) -> sgm.experiment.RunDir:
    """Creates the run (process 0, which names it to the others and holds its lock), recording
    in `run.json` where its experiment came from (`source`), or checks the data against the
    existing one; records this invocation (its work starts now)."""
    if run is None and distributed.is_main():
        info = {**phases.data_info(ds), "source": source}
        run = (
            sgm.experiment.RunDir.create_at(args.run_dir, cfg, info)
            if args.run_dir
            else sgm.experiment.RunDir.create(args.out, cfg, info)
        )
        args.lock = RunLock.acquire(run.path)
    path = distributed.broadcast_text(str(run.path) if distributed.is_main() else "")
    if run is None or str(run.path) != path:
        run = sgm.experiment.RunDir.open(path)
    if list(ds.data_shape) != run.info["data_shape"]:
        raise ValueError(
            f"{run.path} was trained on data of shape {run.info['data_shape']}; "
            f"these data have {list(ds.data_shape)}."
        )
    if settings and args.mode not in ("train", "all"):
        print(f"note: {', '.join(settings)} apply to training (--resume); not recorded.")
        settings = {}
    return run.record(args.mode, overrides, settings)


def main(argv=None) -> int:
    parser, args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    if args.help:
        parser.print_help()
        try:
            _, exp, _ = find_experiment(args.experiment)
        except ValueError as e:
            parser.error(str(e))
        if exp is not None:
            print_settings(exp)
        elif args.experiment is not None:
            parser.error(f"unknown experiment {args.experiment!r}; see --list.")
        return 0
    if args.list:
        for name, exp in EXPERIMENTS.items():
            print(f"{name:20s} {exp.description}\n{'':20s} budget: {exp.budget}")
        return 0
    sgm.enable_compilation_cache()  # off with SGM_COMPILATION_CACHE=0
    if args.distributed:
        try:
            distributed.initialize(timeout=args.distributed_timeout)
        except (ValueError, RuntimeError) as e:
            parser.error(str(e))
    args.lock, args.already_trained = None, False
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if threading.current_thread() is threading.main_thread():
        for s in old:
            signal.signal(s, _stop)
    try:
        return _main(parser, args, overrides)
    except Stopped as e:
        print(f"stopped by {e} before this invocation's work started.", file=sys.stderr)
        return 130
    finally:
        if args.lock is not None:
            args.lock.release()
        if threading.current_thread() is threading.main_thread():
            for s, handler in old.items():
                signal.signal(s, handler)


def _main(parser, args, overrides) -> int:
    try:
        if args.mode == "quality" and "quality.inception" in overrides:  # before any run is read
            sgm.metrics.check_weights_file(overrides["quality.inception"])
        cfg, run, settings, source = configure(args, overrides)
        check_settings(cfg)
        elsewhere = None if run is None else outputs_elsewhere(args, run)
        if run is None:
            target = Path(args.run_dir) if args.run_dir else Path(args.out) / cfg.name
            check_writable(target, "--run-dir" if args.run_dir else "--out")
        elif elsewhere is not None:
            check_writable(elsewhere, "--out")
        if args.ema_sigma_rel is not None and args.mode != "ema" and elsewhere is None:
            raise ValueError(
                f"--mode {args.mode} --ema.sigma_rel writes its outputs elsewhere, beside those "
                "of the run's own model: add --out DIR (a folder outside the run)."
            )
        if args.mode == "quality":  # the weights file, before the model or data are read
            phases.check_quality(cfg)
        if args.already_trained and args.mode == "train":
            print(f"{run.path} is trained to step {cfg.train.steps} already; nothing to do.")
            return 0
        trained = None
        if args.mode not in ("train", "all"):  # the model is verified before the data are read
            trained = sgm.experiment.load_run(run.path, verify=not args.accept_unverified)
        if args.ema_sigma_rel is not None and args.mode != "ema":
            assert run is not None and trained is not None
            trained = phases.with_ema(
                trained, run.path, args.ema_sigma_rel, verify=not args.accept_unverified
            )
    except RunLocked as e:
        parser.error(str(e))
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    except OSError as e:
        parser.error(f"{e.filename or ''}: {e.strerror or e}; check the path and its permissions.")
    try:
        # In a job of several processes each reads and trains on its share of the examples.
        shard = (jax.process_index(), jax.process_count()) if jax.process_count() > 1 else None
        ds = cfg.load_data(args.data_dir, shard=shard)
    except (OSError, RuntimeError, ValueError) as e:  # missing, corrupt or unprepared data
        parser.error(f"cannot load the data of {cfg.name}: {e}")
    try:
        if args.mode in ("train", "all"):
            check_against_data(cfg, ds)
        if elsewhere is None:
            given = (
                overrides
                if args.ema_sigma_rel is None
                else {**overrides, "ema.sigma_rel": str(args.ema_sigma_rel)}
            )
            run = open_run(args, given, cfg, run, settings, source, ds)
            out_dir = run.path
        else:
            out_dir = elsewhere
            out_dir.mkdir(parents=True, exist_ok=True)
    except RunLocked as e:
        parser.error(str(e))
    except ValueError as e:
        parser.error(str(e))
    except OSError as e:
        parser.error(f"{e.filename or ''}: {e.strerror or e}; check the path and its permissions.")
    recorded = run if elsewhere is None else None
    if elsewhere is not None:
        print(f"reading the run {run.path}; outputs in {out_dir} (the run is not written)")
    else:
        print(f"run directory: {run.path}")
    metrics_path = out_dir / "metrics.json"
    # outputs elsewhere add to what an earlier invocation wrote there, else to the run's numbers
    metrics = read_metrics(metrics_path if metrics_path.exists() else run.path / "metrics.json")
    metrics.update(experiment=cfg.name, backend=jax.default_backend(), devices=jax.device_count())
    phase = "train"

    def save_metrics():
        if distributed.is_main():
            sgm.experiment.write_json(metrics_path, metrics)

    def finish(outcome: str):
        if recorded is not None:
            recorded.finish(outcome)

    try:
        if args.mode in ("train", "all"):
            if args.already_trained:
                print(f"{run.path} is trained to step {cfg.train.steps} already; nothing to train.")
            else:
                start = time.perf_counter()
                earlier = metrics.get("train_seconds", 0.0) if args.resume else 0.0
                try:
                    phases.train(
                        cfg,
                        ds,
                        run,
                        resume=args.resume,
                        verify=not args.accept_unverified,
                        metrics=metrics,
                    )
                except sgm.TrainingInterrupted as e:
                    metrics["train_seconds"] = earlier + time.perf_counter() - start
                    save_metrics()
                    finish(f"interrupted during train at step {e.step}")
                    print(
                        f"{e}\ncontinue with: python main.py --run-dir {run.path} --resume",
                        file=sys.stderr,
                    )
                    return 130
                except (sgm.TrainingDiverged, sgm.CheckpointError) as e:
                    finish(f"failed: {e}")
                    print(f"error: {e}", file=sys.stderr)
                    return 1
                metrics["train_seconds"] = earlier + time.perf_counter() - start
                save_metrics()
                if distributed.is_main():
                    sgm.experiment.plot.save_marginals(cfg.sde, run.path / "marginals.png")
            distributed.barrier("trained")  # model.eqx is written
            trained = sgm.experiment.load_run(run.path, verify=not args.accept_unverified)
        modes = ("sample", "likelihood") if args.mode == "all" else (args.mode,)
        if "likelihood" in modes and cfg.eval.n_images > len(ds.test):
            print(
                f"warning: eval.n_images={cfg.eval.n_images}, but {ds.name} has "
                f"{len(ds.test)} test examples; evaluating all {len(ds.test)}.",
                file=sys.stderr,
            )
        assert trained is not None
        if elsewhere is not None:
            trained = dataclasses.replace(trained, path=out_dir)
        if args.mode == "ema":
            phase = "ema"
            assert args.ema_sigma_rel is not None
            phases.posthoc_ema(
                trained,
                args.ema_sigma_rel,
                metrics,
                run_path=run.path,
                recorded=recorded,
            )
            save_metrics()
        for mode in (m for m in modes if m in AFTER_TRAINING):
            phase = mode
            AFTER_TRAINING[mode](cfg, ds, trained, metrics)
            save_metrics()  # a finished phase is never lost
    except Stopped as e:
        save_metrics()
        finish(f"interrupted by {e} during {phase}")
        done = [k for k in ("train_seconds", *metrics_keys(metrics)) if k in metrics]
        kept = "the trained model (model.eqx)" if phase != "train" else "the last checkpoint"
        print(
            f"stopped by {e} during {phase}; kept: {kept} and {metrics_path} "
            f"({', '.join(done) or 'no finished phase'}). Run the rest again with: python "
            f"main.py --run-dir {run.path} --mode {phase if phase != 'train' else 'all --resume'}",
            file=sys.stderr,
        )
        return 131 if phase != "train" else 130
    except phases.PhaseError as e:
        save_metrics()
        finish(f"failed: {e}")
        raise SystemExit(str(e)) from None
    except (ValueError, OSError) as e:  # a damaged model.eqx, a full disk, ...
        save_metrics()
        finish(f"failed: {e}")
        print(f"error: {e}", file=sys.stderr)
        return 1
    finish("finished")
    if distributed.is_main():
        print(f"metrics written to {metrics_path}")
    return 0


def metrics_keys(metrics: dict) -> list[str]:
    return [k for k in metrics if k in ("samplers",) or k.startswith("test_")]


def read_metrics(path: Path) -> dict:
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        print(f"warning: {path} cannot be read; starting its numbers afresh.", file=sys.stderr)
        return {}
    return data if isinstance(data, dict) else {}


def read_only_hint(args, run) -> str:
    if args.mode not in ("train", "all"):
        return (
            "to sample or evaluate a read-only run, write the outputs elsewhere: "
            f"--run-dir {run.path} --mode {args.mode} --out DIR."
        )
    return "training needs a writable run directory."


if __name__ == "__main__":
    sys.exit(main())
