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
    """Shards the leading (batch) axis over the `'data'` mesh axis."""
    return NamedSharding(mesh or data_mesh(), P("data"))


def replicated(mesh: Mesh | None = None) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh or data_mesh(), P())


def pad_to_devices(tree, n: int, num_devices: int):
    """Pads every leaf's leading axis from `n` to a multiple of `num_devices` by repeating the
    last entry (the padding is computed and discarded)."""
    extra = (-n) % num_devices
    if extra == 0:
        return tree
    return jax.tree.map(
        lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)], axis=0), tree
    )


def shard_batch(tree, n: int, mesh: Mesh | None = None):
    """Pads to a multiple of the device count and places the batch axis across devices."""
    mesh = mesh or data_mesh()
    tree = pad_to_devices(tree, n, mesh.devices.size)
    return jax.device_put(tree, batch_sharding(mesh))
