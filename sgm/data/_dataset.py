"""The dataset container every loader returns."""

import dataclasses

import jax.random as jr
import numpy as np

from .._scaler import AffineScaler


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train and test splits in model scale, with labels, integer images and the scaler.

    **Fields:**

    - `name`, `data_shape` (one example, channels first: `(1, 28, 28)`, `(2,)`, `(1, L)`).
    - `train`, `test`: float32 arrays `(N, *data_shape)` in model scale.
    - `train_labels`, `test_labels`, `num_classes`: int32 labels, or None.
    - `train_int`, `test_int`, `num_bits`: integer images in `[0, 2**num_bits)` for bits/dim
      (None for non-image data).
    - `scaler`: maps data in `[0, 1]` to model scale (`.inverse` goes back); None when the data
      are used as they are (the 2-D toys).
    """

    name: str
    data_shape: tuple[int, ...]
    train: np.ndarray
    test: np.ndarray
    train_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    num_classes: int | None = None
    train_int: np.ndarray | None = None
    test_int: np.ndarray | None = None
    num_bits: int | None = None
    scaler: AffineScaler | None = None

    def __post_init__(self):
        for split in ("train", "test"):
            x = getattr(self, split)
            if x.ndim != 1 + len(self.data_shape) or tuple(x.shape[1:]) != tuple(self.data_shape):
                raise ValueError(
                    f"{self.name}: {split} has shape {x.shape}, expected (N, *{self.data_shape})."
                )
            if not np.all(np.isfinite(x)):
                raise ValueError(f"{self.name}: {split} contains NaN or infinite values.")
            labels = getattr(self, f"{split}_labels")
            if labels is not None:
                if labels.shape != (len(x),):
                    raise ValueError(f"{self.name}: {split}_labels must have shape ({len(x)},).")
                if self.num_classes is None or labels.min() < 0 or labels.max() >= self.num_classes:
                    raise ValueError(
                        f"{self.name}: {split}_labels must lie in [0, {self.num_classes})."
                    )
            ints = getattr(self, f"{split}_int")
            if ints is not None and (ints.shape != x.shape or self.num_bits is None):
                raise ValueError(f"{self.name}: {split}_int must match {split} and set num_bits.")

    def shuffled(self, key) -> "Dataset":
        """The same data with the training split permuted by `key` (labels and integer images
        consistently)."""
        perm = np.asarray(jr.permutation(key, len(self.train)))
        take = lambda a: None if a is None else a[perm]  # noqa: E731
        return dataclasses.replace(
            self,
            train=self.train[perm],
            train_labels=take(self.train_labels),
            train_int=take(self.train_int),
        )

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "Dataset":
        """The first `n_train` training and `n_test` test examples (None keeps all)."""
        cut = lambda a, n: None if a is None else a[:n]  # noqa: E731
        return dataclasses.replace(
            self,
            train=self.train[:n_train],
            test=self.test[:n_test],
            train_labels=cut(self.train_labels, n_train),
            test_labels=cut(self.test_labels, n_test),
            train_int=cut(self.train_int, n_train),
            test_int=cut(self.test_int, n_test),
        )


def image_dataset(name, train_int, test_int, train_labels, test_labels, num_classes, num_bits=8):
    """A Dataset from integer images `(N, C, H, W)` scaled to [-1, 1]."""
    scaler = AffineScaler(-1.0, 1.0)
    levels = 2**num_bits - 1
    to_model = lambda a: np.asarray(scaler(a.astype(np.float32) / levels), np.float32)  # noqa: E731
    as_labels = lambda a: None if a is None else np.asarray(a, np.int32)  # noqa: E731
    return Dataset(
        name=name,
        data_shape=tuple(train_int.shape[1:]),
        train=to_model(train_int),
        test=to_model(test_int),
        train_labels=as_labels(train_labels),
        test_labels=as_labels(test_labels),
        num_classes=num_classes,
        train_int=train_int,
        test_int=test_int,
        num_bits=num_bits,
        scaler=scaler,
    )
