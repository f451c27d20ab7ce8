"""The dataset container every loader returns."""

import dataclasses
from collections.abc import Callable

import jax.random as jr
import numpy as np

from .._scaler import AbstractScaler, AffineScaler


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train and test splits in model scale, with labels, integer images and the scaler.

    *Model scale* is the scale the network sees: images in `[-1, 1]`; series and standardised
    data with zero mean and unit variance; other data as given.

    **Fields:**

    - `name`, `data_shape` (one example, channels first: `(1, 28, 28)`, `(2,)`, `(1, L)`).
    - `train`, `test`: float32 arrays `(N, *data_shape)` in model scale.
    - `train_labels`, `test_labels`, `num_classes`: int32 labels, or None.
    - `train_int`, `test_int`, `num_bits`: integer images in `[0, 2**num_bits)` for bits/dim
      (None for non-image data).
    - `scaler`: maps data units to model scale (`.inverse` brings samples back): for images,
      intensities in `[0, 1]` (`v / (2**num_bits - 1)`) to `[-1, 1]` (`AffineScaler`); for
      series and standardised files, `(u - mean) / std` with the training split's statistics
      (`Standardizer`). None when data units are model scale (the 2-D toys, float files used
      as given).
    - `train_cond`, `test_cond`: per-example conditioning inputs, float32: a parameter vector
      `(N, p)` (physical parameters of a simulation) or a map `(N, C, *spatial)` with the data's
      spatial shape (another image, concatenated as extra channels). A conditional model
      conditions on these when present, else on the labels.
    - `check_conditional`: optional closed-form check `(samples, y) -> dict` of samples drawn
      given `y` (for example, the exact conditional density of a simulator's output).
    - `shard`: `(rank, count)` when the training split holds only the rows `rank::count` of
      the full one, one process's share in a multi-process job (`sharded`); None otherwise.
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
    scaler: AbstractScaler | None = None
    train_cond: np.ndarray | None = None
    test_cond: np.ndarray | None = None
    check_conditional: Callable[[np.ndarray, np.ndarray], dict] | None = None
    shard: tuple[int, int] | None = None

    @property
    def cond_shape(self) -> tuple[int, ...] | None:
        """The shape of one example's conditioning input, or None."""
        return None if self.train_cond is None else tuple(self.train_cond.shape[1:])

    @property
    def condition(self) -> str | None:
        """What a conditional model conditions on: "vector", "map", "class" or None."""
        if self.train_cond is not None:
            return "vector" if self.train_cond.ndim == 2 else "map"
        return "class" if self.train_labels is not None and self.num_classes else None

    def __post_init__(self):
        if (self.train_cond is None) != (self.test_cond is None):
            raise ValueError(f"{self.name}: give both train_cond and test_cond, or neither.")
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
            cond = getattr(self, f"{split}_cond")
            if cond is not None:
                self._check_cond(split, cond, len(x))
            ints = getattr(self, f"{split}_int")
            if ints is not None and (ints.shape != x.shape or self.num_bits is None):
                raise ValueError(f"{self.name}: {split}_int must match {split} and set num_bits.")

    def _check_cond(self, split: str, cond: np.ndarray, n: int) -> None:
        spatial = tuple(self.data_shape[1:])
        ok = cond.ndim == 2 or (cond.ndim >= 3 and tuple(cond.shape[2:]) == spatial)
        if len(cond) != n or not ok:
            raise ValueError(
                f"{self.name}: {split}_cond has shape {cond.shape}; expected ({n}, p) for a "
                f"parameter vector or ({n}, C, *{spatial}) for a map."
            )
        if cond.dtype != np.float32 or not np.all(np.isfinite(cond)):
            raise ValueError(f"{self.name}: {split}_cond must be finite float32.")
        if self.train_cond is not None and self.test_cond is not None:
            if self.train_cond.shape[1:] != self.test_cond.shape[1:]:
                raise ValueError(f"{self.name}: train_cond and test_cond shapes differ.")

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
            train_cond=take(self.train_cond),
        )

    def sharded(self, rank: int, count: int) -> "Dataset":
        """Process `rank`'s share of the training split, rows `rank::count` (labels, integer
        images and conditions with them), as `sgm.train` takes it in a job of `count`
        processes; the test split stays whole."""
        if self.shard is not None:
            raise ValueError(f"{self.name} is already sharded ({self.shard}).")
        if not (
            isinstance(count, int) and count >= 1 and isinstance(rank, int) and 0 <= rank < count
        ):
            raise ValueError(f"need 0 <= rank < count, got rank={rank!r}, count={count!r}.")
        take = lambda a: None if a is None else a[rank::count]  # noqa: E731
        return dataclasses.replace(
            self,
            train=take(self.train),
            train_labels=take(self.train_labels),
            train_int=take(self.train_int),
            train_cond=take(self.train_cond),
            shard=(rank, count),
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
            train_cond=cut(self.train_cond, n_train),
            test_cond=cut(self.test_cond, n_test),
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


def _pool(x: np.ndarray, factor: int) -> np.ndarray:
    """Mean over `factor x factor` blocks of `(N, C, H, W)` images."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // factor, factor, w // factor, factor).mean(axis=(3, 5))


def lowres_check(x, y, *, factor: int) -> dict:
    """Samples `x` drawn given low-resolution maps `y`: `lowres_rmse` is the RMS difference
    between the samples' block means and the maps' (model scale; 0 = consistent), and
    `lowres_rmse_unmatched` the same against the next example's map (what ignoring the
    condition would score)."""
    px, py = _pool(np.asarray(x, np.float32), factor), _pool(np.asarray(y, np.float32), factor)
    rmse = lambda a, b: float(np.sqrt(np.mean((a - b) ** 2)))  # noqa: E731
    return {"lowres_rmse": rmse(px, py), "lowres_rmse_unmatched": rmse(px, np.roll(py, 1, 0))}


def with_lowres_condition(ds: Dataset, factor: int) -> Dataset:
    """`ds` conditioned on maps: each image's `factor x factor` block means, upsampled back to
    full size (nearest), as one extra input per channel (super-resolution; Saharia et al. 2022
    condition the same way by concatenating the upsampled low-resolution image)."""
    if len(ds.data_shape) != 3 or any(s % factor for s in ds.data_shape[1:]) or factor < 2:
        raise ValueError(
            f"lowres_factor {factor} needs images (C, H, W) with H and W divisible by it and "
            f"factor >= 2; {ds.name} has shape {ds.data_shape}."
        )

    def lowres(x):
        up = _pool(x, factor).repeat(factor, axis=2).repeat(factor, axis=3)
        return np.ascontiguousarray(up, np.float32)

    return dataclasses.replace(
        ds,
        train_cond=lowres(ds.train),
        test_cond=lowres(ds.test),
        check_conditional=lambda x, y: lowres_check(x, y, factor=factor),
    )
