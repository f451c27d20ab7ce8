"""Checks of `sgm.train`'s inputs at the boundary: the training examples, their labels and
the batch size, before anything is compiled."""

import jax
import numpy as np

from .._checks import check_int, check_labels
from .._model_checks import class_count
from .._score import ScoreModel


def as_arrays(data, labels):
    """`(x, labels, sharded)`: the training examples, and whether they are this process's
    share already (a `Dataset` from `sharded`)."""
    if isinstance(data, np.ndarray | jax.Array):
        return data, labels, False
    from ..data import Dataset

    if isinstance(data, Dataset):
        here = (jax.process_index(), jax.process_count())
        if data.shard is not None and tuple(data.shard) != here:
            raise ValueError(
                f"the data are the share of process {data.shard[0]} of {data.shard[1]}, but this "
                f"is process {here[0]} of {here[1]}: shard with dataset.sharded{here}."
            )
        # labels only when asked for: conditional models
        return data.train, labels, data.shard is not None
    raise ValueError(
        f"data must be an array (N, *data_shape) or an sgm.data.Dataset, got {type(data).__name__}."
    )


def check_class_labels(model: ScoreModel, name: str, y, n: int) -> None:
    """A class-conditional model needs labels, integers in `[0, num_classes]` (`num_classes`
    is the null label, given explicitly to train the unconditional score only); checked here
    on the host because the training step is traced without checks."""
    num_classes = class_count(model)
    if num_classes is not None:
        check_labels(y, n, num_classes=num_classes, name=name)
    elif y is not None:
        check_labels(y, n, name=name)


def check_data(x, labels, batch_size: int, mesh, sharded: bool) -> None:
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"data must be floats in model scale, got dtype {x.dtype}: integer images go "
            "through a scaler first (sgm.AffineScaler()(images / 255), or an sgm.data Dataset's "
            "`train`)."
        )
    if x.ndim < 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"data must be a finite array (N, *data_shape), got shape {x.shape}.")
    if labels is not None and len(labels) != len(x):
        raise ValueError(
            f"labels must have one entry per example: {len(labels)} labels for {len(x)} examples."
        )
    n_proc = jax.process_count()
    n_local = len(x) if sharded else len(x) // n_proc  # this process's examples
    if batch_size % mesh.devices.size or batch_size // n_proc > n_local:
        raise ValueError(
            f"batch_size={batch_size} must be a multiple of the {mesh.devices.size} devices and "
            f"at most the {n_local * n_proc} examples."
        )


def check_random_flip(random_flip, data_shape) -> None:
    """Horizontal flips mirror images: data of one example shaped `(C, H, W)`."""
    if not isinstance(random_flip, bool | np.bool_):
        raise ValueError(f"random_flip must be True or False, got {random_flip!r}.")
    if random_flip and len(data_shape) != 3:
        raise ValueError(
            f"random_flip mirrors images (C, H, W) left-right; these examples have shape "
            f"{tuple(data_shape)}: train without it (a flip of a series or a vector is no "
            "augmentation)."
        )


def check_accumulate(accumulate, batch_size: int, mesh) -> int:
    """`accumulate` micro-batches must split the global batch evenly over every device."""
    accumulate = check_int("accumulate", accumulate)
    devices = mesh.devices.size
    if batch_size % (devices * accumulate):
        raise ValueError(
            f"batch_size={batch_size} must be a multiple of the {devices} devices times "
            f"accumulate={accumulate} (micro-batches of equal size on every device)."
        )
    return accumulate
