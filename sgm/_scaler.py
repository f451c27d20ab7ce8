"""Maps between the data range [0, 1] and the model's range."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


class AffineScaler(eqx.Module):
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
