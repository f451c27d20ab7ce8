"""Train a score model, sample from it with each sampler, evaluate its likelihood, draw figures.

python main.py --experiment digits_vp
python main.py --experiment mnist_ve --data-dir ../shared/data/mnist-subset --train.steps 2000
python main.py --run-dir runs/digits_vp/RUN --resume --train.steps 3000
python main.py --experiment path/to/my_experiment.py   (a file that defines EXPERIMENT)
python main.py --experiment moons_vp --help            (its settings, with their values)
python main.py --list
"""

import argparse
import json
import sys
import time
from pathlib import Path

import jax

import sgm
import sgm.experiment
from experiments import EXPERIMENTS
from sgm import distributed
from sgm.experiment import phases

AFTER_TRAINING = {
    "sample": phases.sample,
    "likelihood": phases.likelihood,
    "inpaint": phases.inpaint,
    "classes": phases.classes,
    "guided": phases.guided,
    "colorize": phases.colorize,
}
MODES = ("train", "all", *AFTER_TRAINING)


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
    p.add_argument("--data-dir", help="local data (MNIST IDX files) instead of tfds")
    p.add_argument("--out", default="runs", help="where run directories go (default: runs/)")
    p.add_argument(
        "--run-dir",
        help="an existing run (sample, likelihood, resume), or where a new run is created",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the latest run with a checkpoint, or --run-dir",
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
    cfg = sgm.experiment.override(run.config, overrides)
    settings = run.settings_from(cfg)
    if args.resume:
        run.checkpoint_step()  # a clear error when there is nothing to resume
    return cfg, run, settings, source


def runs_exist(args, name: str) -> bool:
    return args.run_dir is not None or bool(sgm.experiment.runs_of(args.out, name))


def open_run(args, overrides, cfg, run, settings, source, ds) -> sgm.experiment.RunDir:
    """Creates the run (process 0, which names it to the others), recording in `run.json`
    where its experiment came from (`source`), or checks the data against the existing one;
    records this invocation."""
    if run is None and distributed.is_main():
        info = {**phases.data_info(ds), "source": source}
        run = (
            sgm.experiment.RunDir.create_at(args.run_dir, cfg, info)
            if args.run_dir
            else sgm.experiment.RunDir.create(args.out, cfg, info)
        )
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
    try:
        cfg, run, settings, source = configure(args, overrides)
        if cfg.train.batch_size % jax.device_count():
            raise ValueError(
                f"train.batch_size={cfg.train.batch_size} must be a multiple of the "
                f"{jax.device_count()} devices."
            )
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    try:
        # In a job of several processes each reads and trains on its share of the examples.
        shard = (jax.process_index(), jax.process_count()) if jax.process_count() > 1 else None
        ds = cfg.load_data(args.data_dir, shard=shard)
    except (OSError, RuntimeError, ValueError) as e:  # missing, corrupt or unprepared data
        parser.error(f"cannot load the data of {cfg.name}: {e}")
    try:
        if args.mode in ("train", "all"):
            phases.check_data(cfg, ds)
        run = open_run(args, overrides, cfg, run, settings, source, ds)
    except ValueError as e:
        parser.error(str(e))
    print(f"run directory: {run.path}")
    metrics_path = run.path / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    metrics.update(experiment=cfg.name, backend=jax.default_backend(), devices=jax.device_count())
    if args.mode in ("train", "all"):
        start = time.perf_counter()
        try:
            phases.train(cfg, ds, run, resume=args.resume)
        except sgm.TrainingInterrupted as e:
            print(
                f"{e}\ncontinue with: python main.py --run-dir {run.path} --resume", file=sys.stderr
            )
            return 130
        except (sgm.TrainingDiverged, sgm.CheckpointError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        earlier = metrics.get("train_seconds", 0.0) if args.resume else 0.0
        metrics["train_seconds"] = earlier + time.perf_counter() - start
        if distributed.is_main():
            sgm.experiment.plot.save_marginals(cfg.sde, run.path / "marginals.png")
    distributed.barrier("trained")  # model.eqx is written
    trained = sgm.experiment.load_run(run.path)
    modes = ("sample", "likelihood") if args.mode == "all" else (args.mode,)
    try:
        for mode in (m for m in modes if m in AFTER_TRAINING):
            AFTER_TRAINING[mode](cfg, ds, trained, metrics)
    except phases.PhaseError as e:
        raise SystemExit(str(e)) from None
    if distributed.is_main():
        sgm.experiment.write_json(metrics_path, metrics)
        print(f"metrics written to {metrics_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
