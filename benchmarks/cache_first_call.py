"""First calls of a likelihood and a sampler in a fresh process, with the persistent
compilation cache in a given directory: run it twice on a new, empty directory to see the cold
and the warm cache.

    d=$(mktemp -d); for i in cold warm; do
      python benchmarks/cache_first_call.py $d RUN_DIR ../shared/data/mnist-subset; done

Prints one JSON line: seconds of the first `bits_per_dim` call (2 test images), of the first
`sample` call (DPM-Solver, 20 steps, 2 samples), the process's total, and the values (equal
bit for bit whether the programs were compiled or loaded).
"""

import json
import sys
import time

t_start = time.perf_counter()
import jax  # noqa: E402
import jax.random as jr  # noqa: E402

import sgm  # noqa: E402
import sgm.experiment  # noqa: E402


def main():
    cache, run_dir, data_dir = sys.argv[1:4]
    sgm.enable_compilation_cache(cache, min_compile_seconds=0)
    run = sgm.experiment.load_run(run_dir)
    ds = sgm.data.load("mnist", data_dir=data_dir)
    t = time.perf_counter()
    bpd = sgm.bits_per_dim(run.model, run.sde, ds.test_int[:2], key=jr.key(0), progress=False)
    jax.block_until_ready(bpd)
    t1 = time.perf_counter()
    x = sgm.sample(
        run.model, run.sde, sgm.DPMSolver(steps=20), key=jr.key(1), shape=(2, *run.data_shape)
    )
    jax.block_until_ready(x)
    t2 = time.perf_counter()
    out = {
        "bits_per_dim_first_call_s": t1 - t,
        "dpm_sample_first_call_s": t2 - t1,
        "process_s": t2 - t_start,
        "bits_per_dim": [float(b) for b in bpd],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
