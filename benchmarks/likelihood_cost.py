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
from sgm._likelihood import exact_trace


def timed(fn):
    fn()  # compile, and warm the caches
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def vector_field_once(run, x, exact: bool, t: float = 0.5):
    """The probability-flow drift and its divergence at `(t, x)`, as `sgm.log_likelihood`
    computes them: one linearisation, then `d` basis vectors in chunks of 128 (exact) or one
    Rademacher probe (Hutchinson)."""
    drift, linear = jax.linearize(lambda x: run.sde.ode_drift(run.model, t, x), x)
    if exact:
        return drift, exact_trace(linear, x.shape, 128)
    v = jr.rademacher(jr.key(0), x.shape, dtype=x.dtype)
    return drift, (v * linear(v)).sum()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--run-dir", required=True, help="a finished MNIST run written by main.py")
    p.add_argument("--data-dir", help="MNIST IDX files (for an MNIST run)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="2 images, 2 repeats; the exact trace on 1 image only up to 256 dimensions",
    )
    p.add_argument("--n-images", type=int, default=8)
    p.add_argument("--repeats", type=int, default=4, help="Hutchinson probe keys per image")
    p.add_argument(
        "--exact-images",
        type=int,
        default=None,
        help="images for the exact trace (default 1, with --quick 0 above 256 dimensions: "
        "d Jacobian-vector products per evaluation, 15 min for a 784-D image here; "
        "vector_field_seconds projects it either way)",
    )
    p.add_argument("--out")
    args = p.parse_args()
    n, repeats = (2, 2) if args.quick else (args.n_images, args.repeats)
    run = sgm.load_run(args.run_dir)
    # the run's own test split (main.py draws the digits split with the key seed + 1)
    ds = sgm.data.load(run.config.data.name, data_dir=args.data_dir,
                       key=jr.key(run.config.train.seed + 1))  # fmt: skip
    images = ds.test_int[:n].astype(np.float32)
    dim = math.prod(ds.data_shape)
    exact_images = args.exact_images
    if exact_images is None:
        exact_images = 0 if args.quick and dim > 256 else 1
    n_exact = min(exact_images, n)
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

    # The cost of one evaluation of the ODE's vector field (drift and divergence) at one
    # image, for both traces: the exact solve makes about as many evaluations as Hutchinson's
    # (348 against 341 on the digits), so this projects the exact cost where running it is
    # too long.
    per_eval = {}
    for name, exact in (("hutchinson", False), ("exact", True)):
        field = jax.jit(lambda x, exact=exact: vector_field_once(run, x, exact))
        _, per_eval[name] = timed(lambda field=field: field(x[0]))
    rows["vector_field_seconds"] = {
        **per_eval,
        "exact_over_hutchinson": per_eval["exact"] / per_eval["hutchinson"],
        "exact_projected_seconds_per_image": per_eval["exact"]
        * rows["hutchinson"]["nfe_per_image"],
    }
    print(json.dumps({"vector_field_seconds": rows["vector_field_seconds"]}), flush=True)

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
