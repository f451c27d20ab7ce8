"""bfloat16 against float32 training at equal steps (issue 33's bar: within 0.05 bits/dim, and
>= 1.5x the steps/s on an accelerator): one `digits_vp` run per precision through main.py,
the same seed and batches, then each model's held-out bits/dim (the variational bound on the
whole test split, one key for both models, so that their difference is not the estimator's
noise), the Frechet distance of `sample_quality.py` (32-D features of an MLP classifier of
the data, NOT the Inception FID) and the training steps/s (the median of the logged
readings after the first, which holds the compilation).

    python benchmarks/precision_quality.py [--steps 1000] [--experiment digits_vp] [--out F]

Prints JSON. On a CPU, bfloat16 matmuls are emulated and slower; the speed bar is for
accelerators (benchmarks/device_bench.sh measures throughput there).
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
import numpy as np
from _report import report
from sample_quality import frechet_distance, train_classifier

import sgm
import sgm.experiment
from sgm._model_checks import class_count

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import main as cli  # noqa: E402


def train(experiment: str, steps: int, precision: str, out: Path) -> Path:
    args = [
        "--experiment",
        experiment,
        "--out",
        str(out / precision),
        "--mode",
        "train",
        "--train.steps",
        str(steps),
        "--train.eval_every",
        "none",
        "--train.eval_bound",
        "false",
        "--train.precision",
        precision,
    ]
    assert cli.main(args) == 0
    (run_dir,) = sorted((out / precision / experiment).iterdir())
    return run_dir


def evaluate(run_dir: Path, feats, test_f, n_samples: int, n_times: int) -> dict:
    run = sgm.experiment.load_run(run_dir)
    ds, model = run.dataset(), run.model
    y = None if class_count(model) is None else jnp.full(len(ds.test_int), class_count(model))
    _, info = sgm.bits_per_dim(
        model,
        run.sde,
        ds.test_int,
        key=jr.key(4),
        num_bits=ds.num_bits,
        scaler=ds.scaler,
        method="bound",
        estimator="mean",
        n_times=n_times,
        return_info=True,
        progress=False,
        y=y,
    )
    x = sgm.sample(
        model,
        run.sde,
        sgm.DPMSolver(steps=20),
        key=jr.key(3),
        shape=(n_samples, *ds.data_shape),
        y=None if y is None else y[:n_samples],
    )
    history = json.loads((run_dir / "history.json").read_text())
    return {
        "bound_bits_per_dim": info.bits_per_dim,
        "bound_sem": info.sem,
        "frechet_distance": frechet_distance(feats(jnp.clip(x, -1, 1)), test_f[:n_samples]),
        "steps_per_s": float(np.median(history["steps_per_s"][1:])),
        "final_loss": history["loss"][-1],
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--experiment", default="digits_vp")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--n-samples", type=int, default=256)
    p.add_argument("--n-times", type=int, default=8)
    p.add_argument("--out")
    args = p.parse_args()
    start = time.perf_counter()
    out = Path(tempfile.mkdtemp())
    runs = {prec: train(args.experiment, args.steps, prec, out) for prec in ("float32", "bfloat16")}
    ds = sgm.experiment.load_run(runs["float32"]).dataset()
    clf, accuracy = train_classifier(ds)
    feats = jax.jit(jax.vmap(clf.features))
    test_f = feats(jnp.asarray(ds.test))
    n = min(args.n_samples, len(ds.test))
    rows = {p: evaluate(r, feats, test_f, n, args.n_times) for p, r in runs.items()}
    f32, bf16 = rows["float32"], rows["bfloat16"]
    result = {
        "benchmark": "precision_quality",
        "experiment": args.experiment,
        "steps": args.steps,
        "device": str(jax.devices()[0].device_kind),
        "bits_per_dim": f"variational bound, {len(ds.test_int)} test images, n_times "
        f"{args.n_times}, one key for both models (an upper bound on bits/dim)",
        "frechet": f"{n} DPM-Solver-2 samples (20 steps) against {n} test images; 32-D "
        "MLP-classifier features (sample_quality.py), not FID",
        "classifier_test_accuracy": accuracy,
        "rows": rows,
        "bfloat16_minus_float32_bits_per_dim": bf16["bound_bits_per_dim"]
        - f32["bound_bits_per_dim"],
        "bfloat16_speedup": bf16["steps_per_s"] / f32["steps_per_s"],
        "total_seconds": time.perf_counter() - start,
    }
    report(result, args.out)


if __name__ == "__main__":
    main()
