"""Training throughput of one process with 2 devices against 2 processes with 1 device each
(gloo all-reduce over 127.0.0.1): what the cross-process gradient all-reduce costs.

    python benchmarks/multiprocess_throughput.py [--quick] [--model unet|mlp] [--out F]

Each setting trains with `sgm.train` for `--steps` steps of a global batch of `--batch-size`
and reports the median steps/s of the readings after the first (which includes compilation),
and the first step's time. The same global batches, model and optimizer in both settings.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _report import report

HERE = Path(__file__).resolve().parent


def worker(args) -> None:
    import sgm

    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        sgm.distributed.initialize(timeout=120)
    import jax
    import jax.random as jr
    import numpy as np

    if args.model == "unet":
        shape, net = (1, 28, 28), sgm.nets.UNet((1, 28, 28), key=jr.key(0))
    else:
        shape, net = (2,), sgm.nets.MLP((2,), key=jr.key(0), width=128, depth=3)
    x = np.asarray(jr.uniform(jr.key(2), (4096, *shape), minval=-1, maxval=1))
    start = time.perf_counter()
    model = sgm.ScoreModel(net, sgm.VPSDE())
    _, history = sgm.train(
        model,
        sgm.VPSDE(),
        x,
        sgm.Adam(1e-4),
        steps=args.steps,
        batch_size=args.batch_size,
        key=jr.key(1),
        monitor=sgm.Monitor(every=args.log_every, progress=False, history=True),
    )
    total = time.perf_counter() - start
    rates = history["steps_per_s"][1:]
    if jax.process_index() == 0:
        print(
            json.dumps(
                {
                    "processes": jax.process_count(),
                    "devices": jax.device_count(),
                    "median_steps_per_s": statistics.median(rates),
                    "readings": rates,
                    "first_reading_seconds": args.log_every / history["steps_per_s"][0],
                    "total_seconds": total,
                }
            )
        )


def run(args, processes: int) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--model",
        args.model,
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--log-every",
        str(args.log_every),
    ]
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    if processes == 1:
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        procs = []
        for rank in range(processes):
            penv = dict(
                env,
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                JAX_NUM_PROCESSES=str(processes),
                JAX_PROCESS_ID=str(rank),
            )
            procs.append(subprocess.Popen(cmd, env=penv, stdout=subprocess.PIPE, text=True))
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a worker failed: {[p.returncode for p in procs]}")
    return json.loads(outs[0].strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="the MLP, 40 steps")
    p.add_argument("--model", choices=("unet", "mlp"), default="unet")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.quick:
        args.model, args.steps, args.log_every = "mlp", 40, 10
    rows = {"1 process x 2 devices": [], "2 processes x 1 device": []}
    for _ in range(args.repeats):  # interleaved, so that a change in load hits both
        rows["1 process x 2 devices"].append(run(args, 1))
        rows["2 processes x 1 device"].append(run(args, 2))
    medians = {k: statistics.median(r["median_steps_per_s"] for r in v) for k, v in rows.items()}
    report(
        {
            "model": args.model,
            "global_batch": args.batch_size,
            "steps": args.steps,
            "runs": rows,
            "median_steps_per_s": medians,
            "ratio_two_processes_to_one": medians["2 processes x 1 device"]
            / medians["1 process x 2 devices"],
            "cpu_count": os.cpu_count(),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
