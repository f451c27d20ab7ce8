"""Likelihood throughput and protocol: batched adaptive solves against one at a time, bits/dim
with importance-weighted dequantization, the ODE against the variational bound.

    python benchmarks/likelihood_throughput.py [--run-dir runs/mnist_vp/STAMP] \
        --data-dir ../shared/data/mnist-subset [--sections batched,bpd] [--n-images 64] \
        [--batch-sizes 1,4,16,64] [--out results.json]

Without `--run-dir` the model is the untrained mnist_vp UNet (`experiments/mnist_vp.py`,
initialised from its seed), a stand-in with the trained model's architecture and cost per
evaluation but not its step counts.

Sections (`--sections`, default all):

- `field`: seconds of one evaluation of the ODE's vector field (score, linearisation,
  Hutchinson product) per image at batch 1, 4, 16, 64 (best of 5), and the ratio to batch 1.
- `batched`: for each batch size, seconds per image, images per second, NFE mean and max, and
  the cost of one score evaluation per image (the chunk's seconds over its loop's evaluations,
  `max NFE`, times the examples in flight) against a batch-1 evaluation (`one_at_a_time`); and
  the largest difference in nats between a batched value and the one-at-a-time value.
- `bpd`: bits/dim of `--n-images` test images: ODE with K = 1 and K = `--k` (importance
  weighted and plain mean), the variational bound; each with its protocol (`return_info`).

Prints JSON per row as it goes, then all of it (`--out` writes it too).
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import sgm
import sgm.experiment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cpu_info() -> dict:
    out = {"platform": platform.platform(), "devices": [str(d) for d in jax.devices()]}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "Flags"):
                value = value.strip()
                if key.strip() == "Flags":
                    value = "avx512f" in value.split()
                    key = "avx512f"
                out[key.strip()] = value
        out["load_average_at_start"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    return out


def model_and_data(args):
    if args.run_dir:
        run = sgm.experiment.load_run(args.run_dir)
        config, sde, model = run.config, run.sde, run.model
        stand_in = False
    else:
        from experiments.mnist_vp import EXPERIMENT as config

        sde, stand_in = config.sde, True
        model = config.build_model((1, 28, 28))
    ds = config.load_data(args.data_dir)
    return config, sde, model, ds, stand_in


def dequantized(ds, n, key):
    images = np.asarray(ds.test_int[:n]).astype(np.float32)
    u = (images + np.asarray(jr.uniform(key, images.shape))) / 256
    return jnp.asarray(ds.scaler(u))


def timed(fn):
    jax.block_until_ready(fn())  # compile
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def batched(sde, model, x, sizes, rtol):
    """One chunk per batch size (the first `size` images), and the companions' effect."""
    rows = []
    base = sgm.LogLikelihood(model, sde, rtol=rtol, atol=rtol, one_at_a_time=True)
    (ref, nfe1), s1 = timed(lambda: base(x, key=jr.key(1), return_nfe=True))
    per_eval_1 = s1 / float(np.sum(nfe1))
    rows.append(
        {
            "mode": "one_at_a_time",
            "batch_size": 1,
            "n_images": len(x),
            "seconds_per_image": s1 / len(x),
            "images_per_second": len(x) / s1,
            "nfe_mean": float(np.mean(nfe1)),
            "nfe_max": int(np.max(nfe1)),
            "seconds_per_evaluation_per_image": per_eval_1,
            "relative_cost_per_evaluation": 1.0,
        }
    )
    print(json.dumps(rows[-1]), flush=True)
    ll = sgm.LogLikelihood(model, sde, rtol=rtol, atol=rtol)
    for size in sizes:
        call = lambda size=size: ll(x, key=jr.key(1), batch_size=size, return_nfe=True)  # noqa: E731
        (lp, nfe), s = timed(call)
        chunks = [np.asarray(nfe)[i : i + size] for i in range(0, len(x), size)]
        loop_evals = sum(int(c.max()) * size for c in chunks)  # what the lock-step loop runs
        rows.append(
            {
                "mode": "batched",
                "batch_size": size,
                "n_images": len(x),
                "seconds_per_image": s / len(x),
                "images_per_second": len(x) / s,
                "nfe_mean": float(np.mean(nfe)),
                "nfe_max": int(np.max(nfe)),
                "seconds_per_evaluation_per_image": s / loop_evals,
                "relative_cost_per_evaluation": s / loop_evals / per_eval_1,
                "seconds_per_useful_evaluation": s / float(np.sum(nfe)),
                "max_abs_diff_vs_one_at_a_time_nats": float(np.abs(np.asarray(lp - ref)).max()),
                "nfe_equal_to_one_at_a_time": bool(np.array_equal(nfe, nfe1)),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def field(sde, model, x, sizes, repeats=5):
    """Seconds of one evaluation of the likelihood ODE's vector field (score, its linearisation
    and a Hutchinson product) per image, `vmap`ped over `size` images, against batch 1."""
    ll = sgm.LogLikelihood(model, sde)
    var = ll.variables
    v = float(var.coordinate(sde, 0.5))

    def one(z, key):
        probes = ll.trace.draw(key, z.shape)

        def trace(linear):
            return ll.trace(linear, z.shape, probes, shift=1.0)

        return var.drift_and_divergence(sde, model, v, z, trace)

    fn = jax.jit(jax.vmap(one))
    rows = []
    for size in sizes:
        z, keys = x[:size], jr.split(jr.key(0), size)
        jax.block_until_ready(fn(z, keys))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn(z, keys))
            times.append(time.perf_counter() - start)
        rows.append({"batch": size, "seconds_per_evaluation_per_image": min(times) / size})
    for row in rows:
        row["relative_to_batch_1"] = (
            row["seconds_per_evaluation_per_image"] / rows[0]["seconds_per_evaluation_per_image"]
        )
        print(json.dumps({"field": row}), flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run-dir")
    p.add_argument("--data-dir")
    p.add_argument("--sections", default="field,batched,bpd")
    p.add_argument("--n-images", type=int, default=64)
    p.add_argument("--batch-sizes", default="1,4,16,64")
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--bpd-images", type=int, default=64)
    p.add_argument(
        "--bpd-runs",
        default="ode:1:importance,ode:K:importance,ode:K:mean,bound:1:mean",
        help="method:K:estimator, comma-separated (K: --k)",
    )
    p.add_argument("--one-at-a-time", action="store_true", help="bpd's ODE one at a time")
    p.add_argument("--out")
    args = p.parse_args()
    sections = args.sections.split(",")
    config, sde, model, ds, stand_in = model_and_data(args)
    result = {
        "benchmark": "likelihood_throughput",
        "machine": cpu_info(),
        "experiment": config.name,
        "run": args.run_dir,
        "untrained_stand_in": stand_in,
        "rtol_atol": args.rtol,
    }
    print(json.dumps(result), flush=True)
    x = dequantized(ds, max(args.n_images, 64), jr.key(0))
    if "field" in sections:
        result["field"] = field(sde, model, x, [1, 4, 16, 64])
    if "batched" in sections:
        x = x[: args.n_images]
        sizes = [int(s) for s in args.batch_sizes.split(",")]
        result["batched"] = batched(sde, model, x, sizes, args.rtol)
    if "bpd" in sections:
        result["bpd"] = bpd_rows(sde, model, ds, args)
    result["machine"]["load_average_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


def bpd_rows(sde, model, ds, args):
    images = np.asarray(ds.test_int[: args.bpd_images])
    rows = []
    runs = []
    for spec in args.bpd_runs.split(","):
        method, k, estimator = spec.split(":")
        runs.append((method, args.k if k == "K" else int(k), estimator))
    for method, k, estimator in runs:
        start = time.perf_counter()
        kw = dict(method=method) if method != "ode" else dict(rtol=args.rtol, atol=args.rtol)
        if method == "ode" and args.one_at_a_time:
            kw["one_at_a_time"] = True
        values, info = sgm.bits_per_dim(
            model,
            sde,
            images,
            key=jr.key(5),
            n_dequant=k,
            estimator=estimator,
            scaler=ds.scaler,
            return_info=True,
            **kw,
        )
        seconds = time.perf_counter() - start
        row = {"seconds_total": seconds, "seconds_per_image": seconds / len(images)}
        row.update(info.to_dict())
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    main()
