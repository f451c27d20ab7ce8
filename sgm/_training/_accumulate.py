"""Gradient accumulation: the loss and gradient of a global batch computed `K` micro-batches
at a time inside the jitted step, in one `lax.scan`, so that a batch too large for the
devices' memory costs `K` sequential passes and one optimizer update."""

import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr


def micro_batches(a, k: int):
    """`a` `(B, ...)` as `(k, B / k, ...)`, micro-batch `j` holding the rows `j, j + k, ...`.
    The batch is sharded over the devices in contiguous blocks of rows; taking every `k`-th
    row gives each micro-batch an equal share of every device's block, so no micro-batch
    moves between devices."""
    return jnp.swapaxes(a.reshape(a.shape[0] // k, k, *a.shape[1:]), 0, 1)


def value_and_grad(objective, params, x, y, key, accumulate: int):
    """`(loss, gradient)` of `objective(params, x, y, key)`, the mean loss of the batch `x`
    (labels `y` or None). With `accumulate = K > 1`, the mean over `K` micro-batches of
    `B / K` examples (`micro_batches`) of their losses and gradients: the mean loss of the
    whole batch, since the micro-batches are of equal size. Micro-batch `j` draws its times,
    noise and dropout from `fold_in(key, j)`; the losses draw their randomness per batch
    (stratified and antithetic times, couplings are joint over a batch), so an accumulated
    step is the unaccumulated one in distribution, not draw for draw."""
    if accumulate == 1:
        return jax.value_and_grad(objective)(params, x, y, key)

    def body(total, inputs):
        j, xj, yj = inputs
        part = jax.value_and_grad(objective)(params, xj, yj, jr.fold_in(key, j))
        return jax.tree.map(jnp.add, total, part), None

    zero = (jnp.zeros((), jnp.result_type(float)), jax.tree.map(jnp.zeros_like, params))
    ys = None if y is None else micro_batches(y, accumulate)
    inputs = (jnp.arange(accumulate), micro_batches(x, accumulate), ys)
    total, _ = lax.scan(body, zero, inputs)
    return jax.tree.map(lambda a: a / accumulate, total)
