"""Maps from data units to model scale (the scale the network sees) and back."""

import abc

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float


class AbstractScaler(eqx.Module):
    """An elementwise, invertible map from data units to model scale: `scaler(u)` is what
    the network sees, `scaler.inverse(x)` brings a sample back to data units."""

    @abc.abstractmethod
    def __call__(self, u: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        """Data units to model scale."""

    @abc.abstractmethod
    def inverse(self, x: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        """Model scale to data units."""


class AffineScaler(AbstractScaler):
    """The elementwise affine map `u -> low + (high - low) * u` from [0, 1] to [low, high].

    Data pipelines use it to put images in model scale (`[-1, 1]` by default) and its
    `inverse` to bring samples back; `bits_per_dim` differentiates it to obtain the
    log-determinant of the change of variables, so no constant is hard-coded anywhere.

    **Arguments:**

    - `low`, `high`: the model-scale values of 0 and 1.
    """

    low: float = eqx.field(static=True, default=-1.0)
    high: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        if not self.high > self.low:
            raise ValueError(
                f"AffineScaler needs high > low, got low={self.low}, high={self.high}."
            )

    def __call__(self, u: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        return self.low + (self.high - self.low) * jnp.asarray(u)

    def inverse(self, x: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        return (jnp.asarray(x) - self.low) / (self.high - self.low)


class Standardizer(AbstractScaler):
    """Standardisation `u -> (u - mean) / std`, with `mean` and `std` scalars or arrays that
    broadcast against one example (per-feature statistics of a training split).

    **Arguments:**

    - `mean`, `std`: the data-unit values sent to 0 and to 1 above it; `std > 0`.
    """

    mean: np.ndarray
    std: np.ndarray

    def __init__(self, mean, std):
        mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        if mean.shape != std.shape:
            raise ValueError(f"Standardizer: mean {mean.shape} and std {std.shape} differ.")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise ValueError("Standardizer needs finite mean and std > 0 (constant data?).")
        self.mean, self.std = mean, std

    @classmethod
    def fit(cls, x, *, per_feature: bool) -> "Standardizer":
        """The statistics of a split `x` `(N, ...)`: per feature (over axis 0) or one pair
        over every value; features with no spread keep `std = 1`."""
        x = np.asarray(x, np.float64)
        axis = 0 if per_feature else None
        mean, std = x.mean(axis=axis), x.std(axis=axis)
        return cls(mean, np.where(std > 0, std, 1.0))

    def __call__(self, u: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        return (jnp.asarray(u) - self.mean) / self.std

    def inverse(self, x: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        return jnp.asarray(x) * self.std + self.mean
