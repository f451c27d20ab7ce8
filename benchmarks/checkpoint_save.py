"""How long the training loop is blocked per checkpoint, synchronous against asynchronous
(`sgm.Checkpoints(asynchronous=True)`), for the train state of a UNet (model, EMA and Adam's
two moments: about 50 MB at the default width 64).

    python benchmarks/checkpoint_save.py [--quick] [--channels 64] [--saves 5] [--out F]

Each save goes through the loop's writer (`CheckpointWriter.save`) on a fresh directory: the
time the call takes is what the loop waits. Asynchronous saves are then waited for outside the
timing (as training would go on meanwhile), and that wait is reported as the background write.
Prints one JSON object: the medians over `--saves` saves, and each save's seconds.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from _report import report
from train_throughput import cpu_model

import sgm
from sgm._training._state import init_state
from sgm._training._writer import CheckpointWriter


def state_of(channels: int):
    """The replicated train state of a 32x32 RGB UNet with `channels` base channels."""
    net = sgm.nets.UNet((3, 32, 32), key=jr.key(0), channels=channels, channel_mults=(1, 2, 2))
    model = sgm.ScoreModel(net, sgm.VPSDE())
    state = init_state(model, optax.adam(1e-3), key=jr.key(1))
    # the state as the loop holds it: on the device, in arrays of its own
    return jax.tree.map(lambda a: jnp.copy(a) if eqx.is_array(a) else a, state)


def megabytes(state) -> float:
    leaves = jax.tree.leaves(eqx.filter(state, eqx.is_array))
    return sum(x.size * x.dtype.itemsize for x in leaves) / 1e6


def saves(state, asynchronous: bool, n: int, root: Path) -> dict:
    """`n` saves of `state` through the writer: seconds blocked, and (asynchronous) the
    seconds the background write took after the call returned."""
    checkpoints = sgm.Checkpoints(root / str(asynchronous), asynchronous=asynchronous, keep=2)
    blocked, background = [], []
    with CheckpointWriter(checkpoints) as writer:
        for step in range(1, n + 2):  # the first save warms up (imports, thread pools)
            t = time.perf_counter()
            writer.save(state, {"step": step}, step)
            returned = time.perf_counter()
            writer.wait()
            done = time.perf_counter()
            if step > 1:
                blocked.append(returned - t)
                background.append(done - returned)
    out = {"blocked_s": statistics.median(blocked), "blocked_each_s": blocked}
    if asynchronous:
        out["background_write_s"] = statistics.median(background)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--saves", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="width 32, 3 saves")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    channels, n = (32, 3) if args.quick else (args.channels, args.saves)
    state = state_of(channels)
    with tempfile.TemporaryDirectory() as root:
        result = {
            "machine": f"{cpu_model()}, {jax.device_count()} device(s), JAX {jax.__version__}",
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "state_mb": round(megabytes(state), 1),
            "saves": n,
            "synchronous": saves(state, False, n, Path(root)),
            "asynchronous": saves(state, True, n, Path(root)),
        }
    report(result, args.out)


if __name__ == "__main__":
    main()
