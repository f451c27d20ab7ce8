"""The device benchmark (issue 33, item 7), the part `device_bench.sh` runs: for each
experiment's network and each compute precision, training examples/s of the jitted step
(`sgm.train`'s own `train_step`), its FLOPs from XLA's cost analysis and the achieved
fraction of the chip's peak, and the device's peak memory; then likelihood examples/s,
batched against one at a time. Data are random arrays of the experiment's shape (the step's
cost does not depend on the values); the likelihood runs on the untrained network, so its
solver steps are those of an untrained field, not of a trained model.

    python benchmarks/device_bench.py [--experiments mnist_vp,cifar10_vp]
        [--precisions float32,bfloat16] [--batch-size 128] [--steps 20] [--small] [--out F]

`--small` (batch 8, 3 steps, 4 likelihood images, channels 16, one residual block per
level) checks the script on a CPU; its figures are labelled with the device and the sizes.
Prints JSON.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from _report import report
from train_throughput import cpu_model

import sgm
from sgm._model_checks import class_count
from sgm._training._state import init_state, train_step

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments import EXPERIMENTS  # noqa: E402

# Dense peak TFLOP/s by device kind and precision (vendor data sheets; float32 without TF32).
PEAK_TFLOPS = {
    "NVIDIA H100": {"bfloat16": 989.0, "float32": 67.0},
    "NVIDIA H200": {"bfloat16": 989.0, "float32": 67.0},
    "NVIDIA A100": {"bfloat16": 312.0, "float32": 19.5},
    "TPU v4": {"bfloat16": 275.0, "float32": 275.0 / 4},
    "TPU v5 lite": {"bfloat16": 197.0, "float32": 197.0 / 4},
}
SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def peak_tflops(kind: str, precision: str) -> float | None:
    for name, peaks in PEAK_TFLOPS.items():
        if kind.startswith(name):
            return peaks[precision]
    return None


def peak_memory_gib() -> float | None:
    stats = jax.devices()[0].memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None  # the CPU keeps no such statistics
    return stats["peak_bytes_in_use"] / 2**30


def model_of(name: str, small: bool):
    exp = EXPERIMENTS[name]
    if small:  # the same network class at a width a CPU runs in seconds
        small_net = {"model.channels": "16", "model.num_groups": "4", "model.num_res_blocks": "1"}
        exp = sgm.experiment.override(exp, small_net)
    shape = SHAPES[exp.data.name]
    return exp, exp.build_model(shape), shape


def median_step(step, x, state, y, args, steps: int):
    """`steps` more calls of the compiled `step(x, state, y, *args)`: the last state and
    loss, and the median seconds of a call (waiting for its loss)."""
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, value = step(x, state, y, *args)
        jax.block_until_ready(value)
        times.append(time.perf_counter() - t)
    return state, value, statistics.median(times)


def train_row(name: str, precision: str, batch: int, steps: int, small: bool) -> dict:
    exp, model, shape = model_of(name, small)
    opt = exp.optimizer.transform(1000)
    state = init_state(model, opt, key=jr.key(1))
    x = jr.uniform(jr.key(2), (batch, *shape), minval=-1, maxval=1)
    n = class_count(model)
    y = None if n is None else jnp.arange(batch) % n
    args = (exp.loss, opt, 0.999, precision, 1)
    arrays, static = eqx.partition(state, eqx.is_array)

    def step(arrays, x, y):
        new, value = train_step(x, eqx.combine(arrays, static), y, *args)
        return eqx.filter(new, eqx.is_array), value

    cost = jax.jit(step).lower(arrays, x, y).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    t = time.perf_counter()
    state, value = train_step(x, state, y, *args)
    jax.block_until_ready(value)
    first = time.perf_counter() - t
    state, value, med = median_step(train_step, x, state, y, args, steps)
    kind = jax.devices()[0].device_kind
    peak = peak_tflops(kind, precision)
    achieved = flops / med / 1e12
    return {
        "experiment": name,
        "precision": precision,
        "params": sgm.nets.param_count(model),
        "batch_size": batch,
        "first_step_s": first,
        "median_step_s": med,
        "examples_per_s": batch / med,
        "flops_per_step": flops,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "fraction_of_peak": None if peak is None else achieved / peak,
        "peak_memory_gib": peak_memory_gib(),
        "loss": float(value),
    }


def likelihood_row(name: str, n: int, small: bool) -> dict:
    exp, model, shape = model_of(name, small)
    x = jr.uniform(jr.key(3), (n, *shape), minval=-1, maxval=1)
    row = {"experiment": name, "n_images": n}
    for label, one in (("batched", False), ("one_at_a_time", True)):
        ll = sgm.LogLikelihood(model, exp.sde, trace=sgm.Hutchinson(), one_at_a_time=one)
        jax.block_until_ready(ll(x[:1], key=jr.key(0), progress=False))  # compile
        t = time.perf_counter()
        jax.block_until_ready(ll(x, key=jr.key(0), progress=False))
        row[f"{label}_examples_per_s"] = n / (time.perf_counter() - t)
    row["batched_speedup"] = row["batched_examples_per_s"] / row["one_at_a_time_examples_per_s"]
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--experiments", default="mnist_vp,cifar10_vp")
    p.add_argument("--precisions", default="float32,bfloat16")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--likelihood-images", type=int, default=64)
    p.add_argument("--small", action="store_true", help="CPU-sized check of the script")
    p.add_argument("--sections", default="train,likelihood")
    p.add_argument("--out")
    args = p.parse_args()
    batch, steps, n_ll = (8, 3, 4) if args.small else (args.batch_size, args.steps, None)
    n_ll = n_ll or args.likelihood_images
    names = [e for e in args.experiments.split(",") if e]
    unknown = [e for e in names if e not in EXPERIMENTS]
    if unknown:
        raise SystemExit(f"unknown experiments {unknown}; one of {sorted(EXPERIMENTS)}.")
    device = jax.devices()[0]
    result = {
        "benchmark": "device_bench",
        "device": device.device_kind,
        "platform": device.platform,
        "cpu": cpu_model(),
        "sizes": "small (CPU check)" if args.small else "full",
        "jax": jax.__version__,
        "train": [],
        "likelihood": [],
    }
    sections = args.sections.split(",")
    for name in names if "train" in sections else ():
        for precision in args.precisions.split(","):
            result["train"].append(train_row(name, precision, batch, steps, args.small))
            print(result["train"][-1], flush=True)
    for name in names if "likelihood" in sections else ():
        result["likelihood"].append(likelihood_row(name, n_ll, args.small))
        print(result["likelihood"][-1], flush=True)
    report(result, args.out)


if __name__ == "__main__":
    main()
