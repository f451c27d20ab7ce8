"""Training throughput of the MNIST UNet: examples per second and achieved GFLOP/s, and the
first step's time with a cold and with a warm persistent compilation cache.

    python benchmarks/train_throughput.py [--quick] [--batch-size 128] [--steps 10] [--out F]

Prints one JSON object (and writes it to `--out`). FLOPs per step come from XLA's cost
analysis of the compiled step. The cold/warm first step is measured in two fresh processes
sharing a new, empty cache directory: the first compiles and stores, the second loads.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
from _configs import build
from _report import report

import sgm
from sgm._training._state import init_state, train_step


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


def first_step_seconds(batch: int) -> dict:
    """The first training step (trace, compile or load, run) in a fresh process, with the
    cache directory of `SGM_COMPILATION_CACHE_DIR`; and the time from start to its end."""
    start = time.perf_counter()
    sgm.enable_compilation_cache()
    state, x, loss, opt = setup(batch)
    t = time.perf_counter()
    state, value = train_step(x, state, None, loss, opt, 0.999)
    jax.block_until_ready(value)
    now = time.perf_counter()
    return {"first_step_s": now - t, "process_s": now - start}


def cache_check(batch: int) -> dict:
    """First-step times with a cold, then a warm cache, each in a new process."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "SGM_COMPILATION_CACHE": "1", "SGM_COMPILATION_CACHE_DIR": cache}
        out = {}
        for name in ("cold", "warm"):
            proc = subprocess.run(
                [sys.executable, __file__, "--first-step", "--batch-size", str(batch)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        out["cache_mb"] = sum(f.stat().st_size for f in os.scandir(cache)) / 2**20
    return out


def setup(batch: int, config: str | None = None):
    if config is not None:  # a training configuration of train_quality.py, on MNIST shapes
        model, loss, opt, _ = build(config, sgm.VPSDE(), (1, 28, 28), 2000, jr.key(0))
        state = init_state(model, opt, key=jr.key(1))
        x = jr.uniform(jr.key(2), (batch, 1, 28, 28), minval=-1, maxval=1)
        return state, x, loss, opt
    sde = sgm.VPSDE()
    net = sgm.nets.UNet((1, 28, 28), key=jr.key(0))
    model = sgm.ScoreModel(net, sde)
    opt = sgm.Adam().transform()
    loss = sgm.DSMLoss()
    state = init_state(model, opt, key=jr.key(1))
    x = jr.uniform(jr.key(2), (batch, 1, 28, 28), minval=-1, maxval=1)
    return state, x, loss, opt


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="batch 32, 3 timed steps")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--first-step", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--config",
        help="a train_quality.py configuration (MNIST shapes) instead "
        "of the UNet defaults, e.g. default or dit_mnist",
    )
    p.add_argument("--no-cache-check", action="store_true", help="skip the cold/warm check")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    if args.first_step:
        print(json.dumps(first_step_seconds(args.batch_size)))
        return
    batch, steps = (32, 3) if args.quick else (args.batch_size, args.steps)
    compile_cache = None if args.no_cache_check else cache_check(batch)
    # This process runs without the persistent cache: its first step always compiles.
    state, x, loss, opt = setup(batch, args.config)
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
        "model": f"configuration {args.config}" if args.config else "UNet((1,28,28)) defaults",
        "params": sgm.nets.param_count(state.model),
        "batch_size": batch,
        "timed_steps": steps,
        "median_step_s": med,
        "examples_per_s": batch / med,
        "flops_per_step": flops,
        "gflops_per_s": flops / med / 1e9,
        "first_step_s_incl_compile": compile_s,
        **(
            {}
            if compile_cache is None
            else {
                "first_step_s_cold_cache": compile_cache["cold"]["first_step_s"],
                "first_step_s_warm_cache": compile_cache["warm"]["first_step_s"],
                "process_s_to_first_step_cold": compile_cache["cold"]["process_s"],
                "process_s_to_first_step_warm": compile_cache["warm"]["process_s"],
                "cache_mb": compile_cache["cache_mb"],
            }
        ),
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
