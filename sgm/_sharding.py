"""Data parallelism over local devices: a 1-D mesh `('data',)`, batch sharded, the rest
replicated. One device is the same code path."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def data_mesh() -> Mesh:
    """A 1-D mesh named `'data'` over this process's devices."""
    return Mesh(np.asarray(jax.local_devices()), ("data",))


def batch_sharding(mesh: Mesh | None = None) -> NamedSharding:
    """Shards the leading (batch) axis over the `'data'` mesh axis (over every axis of a
    mesh of several, `('data', 'fsdp')`: all devices take part of the batch)."""
    mesh = mesh or data_mesh()
    names = mesh.axis_names
    return NamedSharding(mesh, P(names[0] if len(names) == 1 else tuple(names)))


def replicated(mesh: Mesh | None = None) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh or data_mesh(), P())


def pad_batch(tree, n: int, size: int):
    """Pads every leaf's leading axis from `n` to `size >= n` by repeating the last entry (the
    padding is computed and discarded). The one place the library pads a batch."""
    if size == n:
        return tree
    return jax.tree.map(
        lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], size - n, axis=0)], axis=0), tree
    )


def pad_to_devices(tree, n: int, num_devices: int):
    """Pads the leading axis from `n` to a multiple of `num_devices`."""
    return pad_batch(tree, n, n + (-n) % num_devices)


def shard_batch(tree, n: int, mesh: Mesh | None = None):
    """Pads to a multiple of the device count and places the batch axis across devices."""
    mesh = mesh or data_mesh()
    tree = pad_to_devices(tree, n, mesh.devices.size)
    return jax.device_put(tree, batch_sharding(mesh))


def example_keys(key, n: int, start: int = 0):
    """Example `i`'s key `fold_in(key, start + i)`: it depends on the example's index alone,
    not on how many examples share the call (as `jr.split(key, n)[i]` would)."""
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(start, start + n))


def map_examples(fn, args, mesh: Mesh | None = None, *, batched: bool = False):
    """`fn`, written for one example, applied to each device's shard of `args`.

    With `batched=False`, one example at a time (`lax.map`): every example runs the same
    batch-1 program whatever its companions and the device count, bit for bit. With
    `batched=True`, the shard at once (`vmap`): the examples' products are batched, and their
    values agree with one-at-a-time only up to float rounding. The leading axis of `args` must
    be a multiple of the device count (`pad_to_devices`)."""
    mesh = mesh or data_mesh()

    def local(*shard):
        if batched:
            return jax.vmap(fn)(*shard)
        return jax.lax.map(lambda one: fn(*one), shard)

    if mesh.devices.size == 1:
        # the same program without the manual-sharding wrapper, through which equinox's
        # closure conversion (diffrax's checkpointed loop) cannot be differentiated
        return local(*args)
    spec = P("data")
    run = jax.shard_map(local, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
    return run(*args)
