"""Post-hoc EMA on the 8x8 digits or MNIST (Karras et al. 2024, section 3): one `digits_vp` (or
`--experiment mnist_vp`) run trained with two tracked power-function EMAs (sigma_rel 0.05 and
0.10), the EMA of several lengths rebuilt from their snapshots, and each model's held-out
bits/dim (the variational bound on the whole test split or its first `--n-test` images, one key
for every model, so that their differences are not noise of the estimator) and the Frechet
distance of `sample_quality.py` (32-D features of an MLP classifier of the data, NOT the
Inception FID), against the fixed 0.999 EMA that `sgm.train` returns.

    python benchmarks/posthoc_ema.py [--steps 1000] [--snapshot-every 25] [--out results.json]
        [--experiment mnist_vp --data-dir ../shared/data/mnist-subset] [--n-test 256]
        [--lengths 0.05,0.1]

The 0.999 EMA warms up as `min(0.999, (1 + n) / (10 + n))`: before step ~9000 it is
`1 - 9 / (10 + n)`, i.e. nearly the power-function EMA of exponent 8 (sigma_rel 0.090), so
on a run this short the baseline is itself a power-function EMA of that length. Prints JSON.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
from _report import report
from sample_quality import frechet_distance, train_classifier

import sgm
import sgm.experiment
from sgm._model_checks import class_count

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import main as cli  # noqa: E402

LENGTHS = (0.02, 0.03, 0.05, 0.07, 0.09, 0.10, 0.13, 0.17, 0.20, 0.25)


def evaluate(model, sde, ds, feats, test_f, n_samples, n_times, n_test):
    start = time.perf_counter()
    n_classes = class_count(model)
    null = lambda n: None if n_classes is None else jnp.full(n, n_classes)  # noqa: E731
    _, info = sgm.bits_per_dim(
        model,
        sde,
        ds.test_int[:n_test],
        key=jr.key(4),
        num_bits=ds.num_bits,
        scaler=ds.scaler,
        method="bound",
        estimator="mean",
        n_times=n_times,
        return_info=True,
        progress=False,
        y=null(len(ds.test_int[:n_test])),
    )
    x = sgm.sample(
        model,
        sde,
        sgm.DPMSolver(steps=20),
        key=jr.key(3),
        shape=(n_samples, *ds.data_shape),
        y=null(n_samples),  # a class-conditional model's null label: p(x)
    )
    fd = frechet_distance(feats(jnp.clip(x, -1, 1)), test_f[:n_samples])
    return {
        "bound_bits_per_dim": info.bits_per_dim,
        "bound_sem": info.sem,
        "frechet_distance": fd,
        "seconds": time.perf_counter() - start,
    }


def train_run(args) -> Path:
    """Trains the run with the tracked EMAs through main.py; returns its directory."""
    out = Path(tempfile.mkdtemp())
    train = [
        "--experiment",
        args.experiment,
        *(["--data-dir", args.data_dir] if args.data_dir else []),
        "--out",
        str(out),
        "--mode",
        "train",
        "--train.steps",
        str(args.steps),
        "--train.eval_every",
        "none",
        "--train.eval_bound",
        "false",
        "--train.posthoc_ema",
        "PostHocEMA",
        "--train.posthoc_ema.snapshot_every",
        str(args.snapshot_every),
    ]
    assert cli.main(train) == 0
    (run_dir,) = sorted((out / args.experiment).iterdir())
    return run_dir


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--snapshot-every", type=int, default=25)
    p.add_argument("--n-samples", type=int, default=256)
    p.add_argument("--n-times", type=int, default=8)
    p.add_argument("--experiment", default="digits_vp")
    p.add_argument("--data-dir", help="the data's folder (MNIST IDX files for mnist_*)")
    p.add_argument("--n-test", type=int, help="test images of the bound (default: all)")
    p.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    p.add_argument("--run-dir", help="evaluate this run (trained by this script) instead")
    p.add_argument("--out")
    args = p.parse_args()
    lengths = [float(v) for v in args.lengths.split(",")]
    start = time.perf_counter()
    if args.run_dir is None:
        run_dir = train_run(args)
        train_seconds = time.perf_counter() - start
    else:
        run_dir = Path(args.run_dir)
        train_seconds = json.loads((run_dir / "metrics.json").read_text())["train_seconds"]
    run = sgm.experiment.load_run(run_dir)
    ds = run.dataset(args.data_dir)
    clf, accuracy = train_classifier(ds)
    feats = jax.jit(jax.vmap(clf.features))
    test_f = feats(jnp.asarray(ds.test))
    n = min(args.n_samples, len(ds.test))
    floor = frechet_distance(feats(jnp.asarray(ds.train[:n])), test_f[:n])
    rows = [{"model": "ema_decay 0.999 (sgm.train's default)", "sigma_rel": None}]
    rows[0].update(evaluate(run.model, run.sde, ds, feats, test_f, n, args.n_times, args.n_test))
    print(json.dumps(rows[-1]), flush=True)
    for s in lengths:
        try:
            model, info = sgm.reconstruct_ema(
                run_dir / "checkpoint" / "ema", s, like=run.model, return_info=True
            )
        except ValueError as e:  # a length these snapshots cannot represent
            rows.append({"model": "not representable", "sigma_rel": s, "error": str(e)})
            continue
        tracked = s in run.config.train.posthoc_ema.sigma_rels  # type: ignore[union-attr]
        row = {
            "model": f"post-hoc {'tracked' if tracked else 'rebuilt'}",
            "sigma_rel": s,
            "profile_error": info.error,
        }
        row.update(evaluate(model, run.sde, ds, feats, test_f, n, args.n_times, args.n_test))
        rows.append(row)
        print(json.dumps(row), flush=True)
    best = min(rows[1:], key=lambda r: r.get("bound_bits_per_dim", float("inf")))
    result = {
        "benchmark": "posthoc_ema",
        "experiment": args.experiment,
        "steps": args.steps,
        "snapshot_every": args.snapshot_every,
        "tracked": list(run.config.train.posthoc_ema.sigma_rels),  # type: ignore[union-attr]
        "bits_per_dim": f"variational bound, {len(ds.test_int[: args.n_test])} test images, "
        f"n_times {args.n_times}, one key for all models (an upper bound on bits/dim)",
        "frechet": f"{n} DPM-Solver-2 samples (20 steps) by the null label against {n} test "
        "images; 32-D MLP-classifier features (sample_quality.py), not FID",
        "classifier_test_accuracy": accuracy,
        "real_vs_real": floor,
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - start,
        "best_by_bound": best["sigma_rel"],
        "rows": rows,
    }
    report(result, args.out)


if __name__ == "__main__":
    main()
