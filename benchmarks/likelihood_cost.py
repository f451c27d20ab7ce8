"""Likelihood cost and bits/dim of a trained image model: exact traces against Hutchinson.

    python benchmarks/likelihood_cost.py --run-dir runs/mnist_vp/STAMP \
        --data-dir ../shared/data/mnist-subset [--quick] [--out results.json]

Also for the 8x8 digits: `--run-dir runs/digits_vp/STAMP` without `--data-dir`.
For the first test images of the run's data set it reports, at rtol = atol = 1e-5, per method:
NFE per image, seconds per image (after compilation), and bits/dim. Hutchinson (one Rademacher
probe) is repeated with several probe keys on the same dequantized images, so the spread of the
estimator is reported separately from the spread over images. Prints JSON.
"""

import argparse
import json
import math
import platform
import time

import jax
import jax.random as jr
import numpy as np
from _report import report

import sgm


def timed(fn):
    fn()  # compile, and warm the caches
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--run-dir", required=True, help="a finished MNIST run written by main.py")
    p.add_argument("--data-dir", help="MNIST IDX files (for an MNIST run)")
    p.add_argument("--quick", action="store_true", help="2 images, 2 repeats, 1 exact image")
    p.add_argument("--n-images", type=int, default=8)
    p.add_argument("--repeats", type=int, default=4, help="Hutchinson probe keys per image")
    p.add_argument(
        "--exact-images",
        type=int,
        default=1,
        help="images for the exact trace (0 skips it: d Jacobian-vector products "
        "per NFE, hours for a 784-D image on a CPU when the solve needs 1000 NFE)",
    )
    p.add_argument("--out")
    args = p.parse_args()
    n, repeats = (2, 2) if args.quick else (args.n_images, args.repeats)
    n_exact = min(args.exact_images, n)
    run = sgm.load_run(args.run_dir)
    # the run's own test split (main.py draws the digits split with the key seed + 1)
    ds = sgm.data.load(run.config.data.name, data_dir=args.data_dir,
                       key=jr.key(run.config.train.seed + 1))  # fmt: skip
    images = ds.test_int[:n].astype(np.float32)
    dim = math.prod(ds.data_shape)
    # One uniform dequantization shared by every method, so that only the trace differs; the
    # change of variables to model scale as in sgm.bits_per_dim.
    u = (images + np.asarray(jr.uniform(jr.key(0), images.shape))) / 256
    x, slope = jax.jvp(ds.scaler, (u,), (np.ones_like(u),))
    log_det = np.log(np.abs(np.asarray(slope))).reshape(n, -1).sum(1)

    def to_bpd(lp):
        return -(np.asarray(lp) + log_det[: len(lp)] - dim * math.log(256)) / (dim * math.log(2))

    kw = dict(rtol=1e-5, atol=1e-5, return_nfe=True)
    rows = {}
    hutch = []
    for r in range(repeats):

        def call(r=r):
            return sgm.log_likelihood(run.model, run.sde, x, key=jr.key(100 + r), **kw)

        (lp, nfe), seconds = timed(call)
        hutch.append((to_bpd(lp), np.asarray(nfe), seconds / n))
    bpd = np.stack([h[0] for h in hutch])  # (repeats, n)
    rows["hutchinson"] = {
        "bits_per_dim_mean": float(bpd.mean()),
        "probe_std_per_image": float(bpd.std(0, ddof=1).mean()) if repeats > 1 else None,
        "image_std": float(bpd.mean(0).std(ddof=1)) if n > 1 else None,
        "nfe_per_image": float(np.mean([h[1].mean() for h in hutch])),
        "seconds_per_image": float(np.median([h[2] for h in hutch])),
    }
    print(json.dumps({"hutchinson": rows["hutchinson"]}), flush=True)

    if n_exact > 0:
        start = time.perf_counter()
        lp_exact, nfe_exact = jax.block_until_ready(
            sgm.log_likelihood(run.model, run.sde, x[:n_exact], exact=True, **kw)
        )
        seconds = time.perf_counter() - start  # one call: compilation included (stated in the key)
        rows["exact"] = {
            "bits_per_dim_mean": float(to_bpd(lp_exact).mean()),
            "hutchinson_same_images": float(bpd[:, :n_exact].mean()),
            "nfe_per_image": float(np.mean(nfe_exact)),
            "seconds_per_image_incl_compile": seconds / n_exact,
            "dimension": dim,
        }
        print(json.dumps({"exact": rows["exact"]}), flush=True)
    result = {
        "benchmark": "likelihood_cost",
        "run": str(args.run_dir),
        "experiment": run.config.name,
        "n_images": n,
        "repeats": repeats,
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "devices": [str(d) for d in jax.devices()], "jax": jax.__version__},
        "rows": rows,
    }  # fmt: skip
    report(result, args.out)


if __name__ == "__main__":
    main()
