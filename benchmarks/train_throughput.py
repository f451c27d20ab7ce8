"""Training throughput of the MNIST UNet: examples per second and achieved GFLOP/s.

    python benchmarks/train_throughput.py [--quick] [--batch-size 128] [--steps 10] [--out F]

Prints one JSON object (and writes it to `--out`). FLOPs per step come from XLA's cost
analysis of the compiled step.
"""

import argparse
import os
import platform
import statistics
import time

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
from _report import report

import sgm
from sgm._train import init_state, train_step


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="batch 32, 3 timed steps")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    batch, steps = (32, 3) if args.quick else (args.batch_size, args.steps)
    sde = sgm.VPSDE()
    net = sgm.nets.UNet((1, 28, 28), key=jr.key(0))
    model = sgm.ScoreModel(net, sde)
    opt = sgm.default_optimizer()
    loss = sgm.DSMLoss()
    state = init_state(model, opt, key=jr.key(1))
    x = jr.uniform(jr.key(2), (batch, 1, 28, 28), minval=-1, maxval=1)
    arrays, static = eqx.partition(state, eqx.is_array)

    def step(arrays, x):
        new_state, value = train_step(x, eqx.combine(arrays, static), None, loss, opt, 0.999)
        return eqx.filter(new_state, eqx.is_array), value

    cost = jax.jit(step).lower(arrays, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    t = time.perf_counter()
    state, value = train_step(x, state, None, loss, opt, 0.999)
    jax.block_until_ready(value)
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, value = train_step(x, state, None, loss, opt, 0.999)
        jax.block_until_ready(value)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    result = {
        "benchmark": "train_throughput",
        "model": "UNet((1,28,28)) defaults",
        "params": sgm.nets.param_count(net),
        "batch_size": batch,
        "timed_steps": steps,
        "median_step_s": med,
        "examples_per_s": batch / med,
        "flops_per_step": flops,
        "gflops_per_s": flops / med / 1e9,
        "first_step_s_incl_compile": compile_s,
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "machine": f"{platform.machine()}, {jax.local_device_count()} device(s), "
        f"{os.cpu_count()} CPU cores, {cpu_model()}",
        "jax": jax.__version__,
        "loss_finite": bool(np.isfinite(float(value))),
    }
    report(result, args.out)


if __name__ == "__main__":
    main()
