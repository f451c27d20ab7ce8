"""Sharded parameters (`sgm.train(fsdp=F)`, issue 33 item 4): the train state a device holds,
and what splitting it costs the step.

1. `state`: for each experiment's full-size network, the bytes of the train state (parameters,
   EMA, Adam's two moments) one device stores at F = 1, 2, 4, 8, 16, from the shardings
   `sgm.train` gives each array (exact; nothing is run).
2. `step`: on `--devices N` simulated CPU devices (XLA's host-platform device count), the
   median time of `sgm.train`'s jitted step at F = 1, 2, ..., N for the experiment's network
   at CPU size, and the bytes of the live state on device 0 after the steps. Simulated devices
   share the host's cores and memory, so the times say what the gathers and reduce-scatters
   cost in XLA's program on a CPU, not on an accelerator's interconnect.

    python benchmarks/fsdp_memory.py [--experiments mnist_vp,cifar10_vp] [--devices 4]
        [--steps 5] [--batch-size 16] [--out F]

Prints JSON.
"""

import argparse
import os
import sys

if __name__ == "__main__":  # the device count must be set before JAX starts
    devices = sys.argv[sys.argv.index("--devices") + 1] if "--devices" in sys.argv else "4"
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"

from pathlib import Path  # noqa: E402

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.random as jr  # noqa: E402
from _report import report  # noqa: E402
from device_bench import SHAPES, median_step, model_of  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
from train_throughput import cpu_model  # noqa: E402

from sgm._sharding import batch_sharding  # noqa: E402
from sgm._training._fsdp import fsdp_mesh, leaf_spec, place_state  # noqa: E402
from sgm._training._state import init_state, train_step  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments import EXPERIMENTS  # noqa: E402


def state_row(name: str) -> dict:
    exp = EXPERIMENTS[name]
    shape = SHAPES[exp.data.name]
    opt = exp.optimizer.transform(1000)
    model = eqx.filter_eval_shape(exp.build_model, shape)
    params = [a for a in jax.tree.leaves(model) if isinstance(a, jax.ShapeDtypeStruct)]
    params = [a for a in params if jax.numpy.issubdtype(a.dtype, jax.numpy.inexact)]
    moments = jax.tree.leaves(jax.eval_shape(opt.init, params))
    arrays = [*params, *params, *moments]  # parameters, EMA, Adam's moments
    arrays = [a for a in arrays if jax.numpy.issubdtype(a.dtype, jax.numpy.inexact)]
    nbytes = [a.size * a.dtype.itemsize for a in arrays]
    whole = sum(nbytes)
    row = {"experiment": name, "params": sum(a.size for a in params), "state_mib": whole / 2**20}
    for f in (1, 2, 4, 8, 16):
        split = [leaf_spec(tuple(a.shape), f) != P() for a in arrays]
        kept = sum(n for n, s in zip(nbytes, split, strict=True) if not s)
        per_device = kept + (whole - kept) / f
        row[f"F{f}_per_device_mib"] = per_device / 2**20
        row[f"F{f}_fraction_split"] = 1 - kept / whole
    return row


def step_row(name: str, f: int, steps: int, batch: int) -> dict:
    exp, model, shape = model_of(name, small=True)
    opt = exp.optimizer.transform(1000)
    mesh = fsdp_mesh(f)
    state = place_state(init_state(model, opt, key=jr.key(1)), mesh)
    x = jax.device_put(
        jr.uniform(jr.key(2), (batch, *shape), minval=-1, maxval=1), batch_sharding(mesh)
    )
    args = (exp.loss, opt, 0.999, "float32", 1, mesh if f > 1 else None)
    state, value = train_step(x, state, None, *args)  # compiles
    jax.block_until_ready(value)
    state, value, median = median_step(train_step, x, state, None, args, steps)
    arrays = jax.tree.leaves(eqx.filter(state, eqx.is_inexact_array))
    first = jax.devices()[0]
    on_first = sum(s.data.nbytes for a in arrays for s in a.addressable_shards if s.device == first)
    return {
        "experiment": name,
        "sizes": "small (CPU)",
        "fsdp": f,
        "batch_size": batch,
        "median_step_s": median,
        "state_mib": sum(a.nbytes for a in arrays) / 2**20,
        "device0_state_mib": on_first / 2**20,
        "loss": float(value),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--experiments", default="mnist_vp,cifar10_vp")
    p.add_argument("--devices", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out")
    args = p.parse_args()
    names = [e for e in args.experiments.split(",") if e]
    result = {
        "benchmark": "fsdp_memory",
        "cpu": cpu_model(),
        "devices": jax.device_count(),
        "jax": jax.__version__,
        "state": [state_row(n) for n in names],
        "step": [],
    }
    for name in names:
        for f in (d for d in range(1, jax.device_count() + 1) if jax.device_count() % d == 0):
            result["step"].append(step_row(name, f, args.steps, args.batch_size))
            print(result["step"][-1], flush=True)
    report(result, args.out)


if __name__ == "__main__":
    main()
