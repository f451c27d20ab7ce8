"""Turning a noise-prediction network into a score."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, ScalarLike

from ._sde import AbstractSDE, _check_time


def noise_conditioning(sde: AbstractSDE, t: ScalarLike) -> Float[Array, ""]:
    """The scalar a network is conditioned on, `sde.noise_conditioning(t)`: `log s(t)` for the
    VE SDE, whose noise scale spans several decades, and `t` otherwise (Song et al. 2021,
    appendix C)."""
    return sde.noise_conditioning(t)


class ScoreModel(eqx.Module):
    """A score `score(t, x) = -net(c(t), c_in(t) x) / s(t)` built from a noise-prediction network.

    The network predicts the noise `eps` of `x_t = m(t) x_0 + s(t) eps`; since
    `grad log p_t(x_t | x_0) = -eps / s(t)`, dividing by the marginal std gives the score
    (Song et al. 2021, appendix C; Ho et al. 2020). The input is divided by
    `sqrt(m(t)^2 + s(t)^2)`, the std of `x_t` for unit-variance data, so that it is O(1) at every
    `t` (as in Karras et al. 2022's `c_in`); `c(t)` is `noise_conditioning(sde, t)`.

    **Arguments:**

    - `net`: a module called as `net(c, x, *, y=None, key=None)` on one example.
    - `sde`: the SDE whose marginal std scales the output.

    Called as `model(t, x, *, y=None, key=None)` on one example; `key` enables dropout.
    """

    net: eqx.Module
    sde: AbstractSDE

    def noise_prediction(
        self,
        t: ScalarLike,
        x: Float[Array, "*shape"],
        *,
        y: Array | None = None,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "*shape"]:
        """The network's estimate of `eps` at `(t, x)`."""
        t = _check_time(self.sde, t)
        mean, std = self.sde.marginal(t)
        c_in = jnp.reciprocal(jnp.sqrt(mean**2 + std**2))
        return self.net(noise_conditioning(self.sde, t), c_in * x, y=y, key=key)

    def __call__(
        self,
        t: ScalarLike,
        x: Float[Array, "*shape"],
        *,
        y: Array | None = None,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "*shape"]:
        std = self.sde.marginal(t)[1]
        return -self.noise_prediction(t, x, y=y, key=key) / std
