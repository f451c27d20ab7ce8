"""Seconds per call of the minibatch OT couplings (`ExactOTCoupling`: SciPy's assignment on
the host through `jax.pure_callback`; `SinkhornCoupling`: log-domain Sinkhorn in JAX) at
several batch sizes, jitted, median of repeats after compilation, and the transport cost each
reaches relative to the exact plan and to independent pairs; the share of distinct noise
draws among the pairs (1 for a permutation), and for Sinkhorn the largest error of its plan's
data marginal (`max |n * row sum - 1|`; the last half-iteration makes the noise marginal
exact): an unconverged plan draws the nearest noise for many data points, below the exact
plan's cost but not a coupling of the two marginals.

    python benchmarks/coupling_cost.py [--quick] [--dim 2] [--out F]
        [--sweep 0.05,0.01,0.005 --iterations 100,300]

`--sweep EPSILONS` adds `SinkhornCoupling(epsilon=e, iterations=i)` for every `e` given and
every `i` of `--iterations`: how close the drawn pairs come to the exact plan's cost, and at
what price.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _report import report

import sgm
from sgm._coupling import _sq_cost


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="batches 128 and 256, 3 repeats")
    p.add_argument("--dim", type=int, default=2)
    p.add_argument("--batches", default="128,256,1024")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sweep", help="Sinkhorn epsilons, comma-separated")
    p.add_argument("--iterations", default="100,300", help="Sinkhorn iterations of --sweep")
    p.add_argument("--out")
    args = p.parse_args()
    if args.quick:
        args.batches, args.repeats = "128,256", 3
    couplings = {
        "exact": sgm.ExactOTCoupling(),
        "sinkhorn_default": sgm.SinkhornCoupling(),
        "sinkhorn_eps0.05_100": sgm.SinkhornCoupling(epsilon=0.05, iterations=100),
        "sinkhorn_eps0.05_20": sgm.SinkhornCoupling(epsilon=0.05, iterations=20),
    }
    for e in [float(v) for v in (args.sweep.split(",") if args.sweep else [])]:
        for i in [int(v) for v in args.iterations.split(",")]:
            couplings[f"sinkhorn_eps{e:g}_{i}"] = sgm.SinkhornCoupling(epsilon=e, iterations=i)
    rows = []
    for n in [int(b) for b in args.batches.split(",")]:
        x0 = jr.normal(jr.key(0), (n, args.dim))
        noise = jr.normal(jr.key(1), (n, args.dim))
        cost = _sq_cost(x0, noise)
        indep = float(jnp.mean(jnp.diag(cost)))
        exact_cost = None
        for name, c in couplings.items():
            f = jax.jit(lambda a, b, k, c=c: c.pair(a, b, key=k))
            idx = jax.block_until_ready(f(x0, noise, jr.key(2)))
            times = []
            for r in range(args.repeats):
                start = time.perf_counter()
                jax.block_until_ready(f(x0, noise, jr.key(3 + r)))
                times.append(time.perf_counter() - start)
            pair_cost = float(cost[jnp.arange(n), idx].mean())
            marginal_error = None
            if isinstance(c, sgm.SinkhornCoupling):  # the data marginal the plan misses
                plan = jnp.exp(jax.jit(c.log_plan)(x0, noise))
                marginal_error = float(jnp.max(jnp.abs(n * plan.sum(1) - 1)))
            exact_cost = pair_cost if name == "exact" else exact_cost
            row = {
                "batch": n,
                "coupling": name,
                "seconds": float(np.median(times)),
                "mean_cost": pair_cost,
                "cost_over_exact": pair_cost / exact_cost if exact_cost else None,
                "cost_over_independent": pair_cost / indep,
                "distinct_noise": float(len(np.unique(np.asarray(idx))) / n),
                "row_marginal_error": marginal_error,
            }
            rows.append(row)
            print(row, flush=True)
    report(
        {"benchmark": "coupling_cost", "dim": args.dim, "jax": jax.__version__, "rows": rows},
        args.out,
    )


if __name__ == "__main__":
    main()
