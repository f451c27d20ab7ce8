"""The arrays of a checkpoint through orbax-checkpoint: written from host (numpy) arrays by
the calling process alone, read back onto the shardings of a target's arrays, so that a state
saved from any number of devices restores onto any other.

The arrays are saved as a flat dict `{"leaf_00000": ..., "leaf_00001": ...}` in the order of
`jax.tree.leaves`; the structure around them comes from the target when reading.
"""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


def _name(i: int) -> str:
    return f"leaf_{i:05d}"


def _checkpointer() -> ocp.Checkpointer:
    """A synchronous checkpointer that synchronises with no other process: in a job of several
    processes, process 0 writes alone and every process reads alone."""
    me = jax.process_index()
    options = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    handler = ocp.PyTreeCheckpointHandler(multiprocessing_options=options)
    return ocp.Checkpointer(handler, multiprocessing_options=options)


def write_arrays(path: str | os.PathLike, leaves: list[np.ndarray]) -> None:
    """Writes host arrays `leaves` as an orbax checkpoint in the new folder `path`."""
    tree = {_name(i): np.asarray(leaf) for i, leaf in enumerate(leaves)}
    checkpointer = _checkpointer()
    try:
        # orbax takes absolute paths only
        checkpointer.save(os.path.abspath(path), args=ocp.args.PyTreeSave(tree))
    finally:
        checkpointer.close()


def _restore_args(target) -> ocp.RestoreArgs:
    """A jax.Array comes back with the target's sharding (any device count); anything else as
    a numpy array."""
    if isinstance(target, jax.Array):
        return ocp.ArrayRestoreArgs(
            sharding=target.sharding, global_shape=target.shape, dtype=target.dtype
        )
    return ocp.RestoreArgs(restore_type=np.ndarray, dtype=np.asarray(target).dtype)


def read_arrays(path: str | os.PathLike, targets: list) -> list:
    """The arrays written by `write_arrays` in `path`, one per target (a jax.Array on any
    sharding, or a numpy or host array), each placed and typed like its target."""
    item = {_name(i): t for i, t in enumerate(targets)}
    args = ocp.args.PyTreeRestore(
        item=item, restore_args={k: _restore_args(t) for k, t in item.items()}
    )
    checkpointer = _checkpointer()
    try:
        restored = checkpointer.restore(os.path.abspath(path), args=args)
    finally:
        checkpointer.close()
    return [restored[_name(i)] for i in range(len(targets))]
