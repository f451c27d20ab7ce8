"""Fully sharded data parallelism (FSDP; ZeRO stage 3 of Rajbhandari et al. 2020, "ZeRO:
memory optimizations toward training trillion parameter models").

The devices form a 2-D mesh `('data', 'fsdp')` of `devices / fsdp` rows and `fsdp` columns.
The batch is split over all of them, as in data parallelism. Each floating-point array of the
train state (parameters, EMA, optimizer moments, post-hoc averages) is split along one of its
dimensions over the `'fsdp'` axis, so a device stores `1 / fsdp` of it. The step gathers the
parameters before the network runs; the compiler (GSPMD) turns the gradient of that gather
into a reduce-scatter onto the shards, and the optimizer and EMA update each shard where it
lies. The arithmetic is data parallelism's; only where the state is stored differs.
"""

import math

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .._checks import check_int

AXIS = "fsdp"


def fsdp_mesh(fsdp: int) -> Mesh:
    """The `('data', 'fsdp')` mesh over every device of every process: device `i` of
    `jax.devices()` at row `i // fsdp`, column `i % fsdp`, so that the batch, split over both
    axes, is laid out as on the 1-D data mesh."""
    return Mesh(np.asarray(jax.devices()).reshape(-1, fsdp), ("data", AXIS))


def leaf_spec(shape: tuple[int, ...], fsdp: int) -> P:
    """How one array is split: its largest dimension that `fsdp` divides (the first of equals)
    over the `'fsdp'` axis; replicated where `fsdp` divides none."""
    dims = [i for i, n in enumerate(shape) if n > 0 and n % fsdp == 0]
    if not dims:
        return P()
    axis = max(dims, key=lambda i: (shape[i], -i))
    return P(*([None] * axis), AXIS)


def _shardable(leaf) -> bool:
    return eqx.is_inexact_array(leaf) or (
        isinstance(leaf, jax.ShapeDtypeStruct) and jax.numpy.issubdtype(leaf.dtype, np.inexact)
    )


def leaf_sharding(leaf, mesh: Mesh) -> NamedSharding:
    """Where one array of the train state lies: a floating-point array split by `leaf_spec`,
    an integer one (the step, the key, counters) replicated."""
    spec = leaf_spec(tuple(leaf.shape), mesh.shape[AXIS]) if _shardable(leaf) else P()
    return NamedSharding(mesh, spec)


def _map_arrays(fn, tree, mesh: Mesh):
    arrays, static = eqx.partition(tree, eqx.is_array)
    return eqx.combine(jax.tree.map(lambda a: fn(a, leaf_sharding(a, mesh)), arrays), static)


def place_state(tree, mesh: Mesh):
    """Copies of `tree`'s arrays placed by `leaf_sharding` (outside the step), through host
    memory: a restored checkpoint's arrays are committed to a device of this process, which
    a job of several processes cannot put onto the global mesh directly."""
    return _map_arrays(lambda a, s: jax.device_put(np.array(a, copy=True), s), tree, mesh)


def constrain_state(tree, mesh: Mesh):
    """`tree`'s arrays constrained to `leaf_sharding` (inside the step: its outputs stay
    sharded as its inputs were)."""
    return _map_arrays(jax.lax.with_sharding_constraint, tree, mesh)


def gathered(tree, mesh: Mesh):
    """`tree`'s arrays constrained to be whole on every device: inside the step, the gather of
    the parameters before the network runs."""
    whole = NamedSharding(mesh, P())
    return jax.tree.map(
        lambda a: jax.lax.with_sharding_constraint(a, whole) if eqx.is_array(a) else a, tree
    )


def check_fsdp(fsdp, num_devices: int, params=None) -> int:
    """`fsdp` must divide the device count and split at least one of `params` (arrays or
    `jax.ShapeDtypeStruct`s of an abstract model; `None`: not checked)."""
    fsdp = check_int("fsdp", fsdp)
    if num_devices % fsdp:
        raise ValueError(
            f"fsdp={fsdp} must divide the {num_devices} devices (the mesh is "
            f"{num_devices} / fsdp data rows x fsdp parameter shards); use a divisor of "
            f"{num_devices}."
        )
    if fsdp == 1 or params is None:
        return fsdp
    shapes = [tuple(a.shape) for a in jax.tree.leaves(params) if _shardable(a)]
    if not any(leaf_spec(s, fsdp) != P() for s in shapes):
        largest = max(shapes, key=math.prod, default=())
        raise ValueError(
            f"fsdp={fsdp} splits no parameter: it divides no dimension of any of them (the "
            f"largest is {largest}); use fsdp=1 or a value that divides a parameter's "
            "dimension."
        )
    return fsdp
