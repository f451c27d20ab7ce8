"""`sgm.data.load(name)`: every dataset by name."""

import jax.random as jr

from ._dataset import Dataset
from ._files import csv, image_folder, npz
from ._images import cifar10, digits, flowers, mnist
from ._timeseries import ou, ou_family
from ._toys import TOYS, toy

# Datasets read from a user's files (option `path`), apart from the built-in ones.
FILES = ("npz", "csv", "image_folder")
NAMES = ("mnist", "cifar10", "flowers", "digits", *TOYS, "ou", "ou_theta", *FILES)

# Each loader's options that an experiment's `Data` may set, with their types (for
# `config.json` and the command line's overrides).
OPTIONS = {
    "flowers": {"resolution": int},
    "ou": {"length": int, "n_series": int, "theta": float, "sigma": float, "dt": float},
    "npz": {"path": str, "standardize": bool, "test_fraction": float},
    "csv": {
        "path": str,
        "layout": str,
        "window": int | None,
        "stride": int | None,
        "test_fraction": float,
        "embed_width": int | None,
    },
    "image_folder": {
        "path": str,
        "resolution": int | None,
        "grayscale": bool | None,
        "test_fraction": float,
    },
    "ou_theta": {"length": int, "n_series": int, "dt": float},
}


def load(name: str, *, data_dir=None, key=None, train_rows=None, **kwargs) -> Dataset:
    """Loads a dataset by name (one of `NAMES`); `data_dir` is the IDX directory for MNIST and
    a tfds data_dir holding the prepared data for CIFAR-10 and Flowers (nothing is downloaded;
    without it, tfds's default data_dir).
    `train_rows = (rank, count, limit)` asks the tfds datasets (MNIST without `data_dir`,
    CIFAR-10, Flowers) to read only a process's share of the first `limit` training examples
    (the result's `shard` says so); the others ignore it. The user's own files: "npz",
    "csv" and "image_folder" (`path=...`; see `sgm.data.npz`, `csv`, `image_folder`)."""
    key = jr.key(0) if key is None else key
    if name == "mnist":
        return mnist(data_dir, train_rows=None if data_dir is not None else train_rows)
    if name == "cifar10":
        return cifar10(tfds_dir=data_dir, train_rows=train_rows)
    if name == "flowers":
        return flowers(**kwargs, tfds_dir=data_dir, train_rows=train_rows)
    if data_dir is not None:
        raise ValueError(
            f"--data-dir applies to mnist (IDX files), cifar10 and flowers (a tfds data_dir), "
            f"not {name!r}."
        )
    if name == "digits":
        return digits(key=key)
    if name in TOYS:
        return toy(name, key=key, **kwargs)
    if name == "ou":
        return ou(key=key, **kwargs)
    if name == "ou_theta":
        return ou_family(key=key, **kwargs)
    if name == "npz":
        return npz(**kwargs)
    if name == "csv":
        return csv(**kwargs)
    if name == "image_folder":
        return image_folder(**kwargs)
    raise ValueError(f"unknown dataset {name!r}; one of {', '.join(NAMES)}.")
