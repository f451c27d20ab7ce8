"""The cost of the trainer's held-out variational bound (`sgm.HeldOutBound`) against a
training step, on the mnist_vp network (UNet, 32 channels, multipliers (1, 2, 2), attention at
level 2, 28x28) with random 8-bit images (the cost does not depend on the data).

    python benchmarks/heldout_bound_cost.py [--batch-size 64] [--settings 64x16,32x16,64x8]

Prints JSON: seconds per training step (median of `--steps`), and per setting
`n_examples x n_times` the first call (compilation included) and the median of two more,
with the bound's cost in training steps.
"""

import argparse
import platform
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from _report import report

import sgm
from sgm._training._state import bound_inputs, eval_bound, init_state, train_step


def _seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - tick)
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--settings", default="64x16,32x16,64x8")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    shape = (1, 28, 28)
    sde = sgm.VPSDE()
    net = sgm.nets.UNet(
        data_shape=shape, channels=32, channel_mults=(1, 2, 2), attention_levels=(2,), key=jr.key(0)
    )
    model = sgm.ScoreModel(net, sde)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, *shape)).astype(np.uint8)
    x = np.asarray(sgm.AffineScaler()(images / 255.0), np.float32)

    optimizer = optax.adam(1e-4)
    loss = sgm.DSMLoss()
    state = init_state(model, optimizer, key=jr.key(1))
    state = jax.tree.map(lambda a: jnp.copy(a) if eqx.is_array(a) else a, state)  # donated
    batch = jax.numpy.asarray(np.tile(x, (args.batch_size // 64 + 1, 1, 1, 1))[: args.batch_size])

    def step():
        nonlocal state
        state, value = train_step(batch, state, None, loss, optimizer, 0.999)
        return value

    step()  # compile
    step_s = float(np.median(_seconds(step, args.steps)))
    result = {
        "machine": platform.processor() or platform.machine(),
        "devices": jax.device_count(),
        "batch_size": args.batch_size,
        "train_step_s": step_s,
        "settings": [],
    }
    print(result, flush=True)
    for setting in args.settings.split(","):
        n_examples, n_times = (int(v) for v in setting.split("x"))
        bound = sgm.HeldOutBound(n_examples=n_examples, n_times=n_times, images=images)
        inputs = bound_inputs(bound, x, None)
        fn = lambda b=bound, xy=inputs: eval_bound(model, b, *xy)  # noqa: E731
        first, *rest = _seconds(fn, 3)
        seconds = float(np.median(rest))
        result["settings"].append(
            {
                "n_examples": n_examples,
                "n_times": n_times,
                "score_evaluations": 2 * n_examples * n_times,
                "first_call_s": first,
                "bound_s": seconds,
                "train_steps_equivalent": seconds / step_s,
            }
        )
        print(result["settings"][-1], flush=True)
    report(result, args.out)


if __name__ == "__main__":
    main()
