"""Dequantization: continuous data from integer images, for training and for bits/dim.

An image `k` of integers in `[0, 2^b)` becomes `v = k + u`, `u in [0, 1)^D` drawn from
`q(u | k)`; a density `p(v)` of the continuous variable bounds the discrete likelihood,
`log P(k) >= E_q[log p(k + u) - log q(u | k)]` (Theis et al. 2016; Ho et al. 2019, Flow++,
sec. 3.1). The model sees `x = scaler(v / 2^b)`. Uniform dequantization takes `q = 1`; a
variational dequantizer learns `q` jointly with the score model (Song et al. 2021, *Maximum
Likelihood Training of Score-Based Diffusion Models*, sec. 5).

A dequantizer acts on ONE example `x0` in model scale on the grid `scaler(k / (2^b - 1))`,
which is how `sgm.data` stores images.
"""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray, Scalar

from ._checks import check_int, check_integer_images
from ._scaler import AffineScaler


class AbstractDequantizer(eqx.Module):
    """Draws `x = scaler((k + u) / 2^b)`, `u ~ q(u | k)`, and returns `log q(u | k)`."""

    num_bits: eqx.AbstractVar[int]
    scaler: eqx.AbstractVar[AffineScaler]

    def integers(self, x0: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """The integers `k` of data `x0 = scaler(k / (2^b - 1))`, as floats."""
        levels = 2**self.num_bits - 1
        return jnp.clip(jnp.round(self.scaler.inverse(x0) * levels), 0, levels)

    def to_model(self, k, u) -> Array:
        """`scaler((k + u) / 2^b)`: the continuous variable in model scale."""
        return self.scaler((k + u) / 2**self.num_bits)

    def log_det(self, shape: tuple[int, ...]) -> float:
        """`log |d x / d v|` summed over an example of `shape` (the scaler is affine)."""
        slope = (self.scaler.high - self.scaler.low) / 2**self.num_bits
        return math.prod(shape) * math.log(slope)

    @abc.abstractmethod
    def noise(self, k: Array, key: PRNGKeyArray) -> tuple[Array, Scalar]:
        """`(u, log q(u | k))` for the integers `k` of one example."""

    def __call__(self, x0: Float[Array, "*shape"], *, key: PRNGKeyArray):
        """`(x, log q(u | k))`: the dequantized example in model scale."""
        k = self.integers(x0)
        u, log_q = self.noise(k, key)
        return self.to_model(k, u), log_q


class UniformDequantizer(AbstractDequantizer):
    """`u ~ U[0, 1)^D`, `log q = 0` (Theis et al. 2016; what `bits_per_dim` uses).

    **Arguments:** `num_bits` (8) and `scaler` (`AffineScaler()`, to `[-1, 1]`).
    """

    num_bits: int = eqx.field(static=True, default=8)
    scaler: AffineScaler = AffineScaler()

    def noise(self, k, key):
        return jr.uniform(key, k.shape), jnp.zeros(())


class VariationalDequantizer(AbstractDequantizer):
    """A learned `q(u | k)`: `u = sigmoid(mu + sigma z)`, `z ~ N(0, I)`, with `mu` and
    `log sigma` per entry from a small convolutional network of the image (a logit-normal
    dequantizer, a one-layer instance of Flow++'s conditional flow). Starts at `mu = 0`,
    `sigma = 1`.

    **Arguments:**

    - `data_shape`: `(C, H, W)` or `(C, L)`.
    - `key`: initialisation key.
    - `channels`: hidden channels of the network.
    - `num_bits`, `scaler`: as for `UniformDequantizer`.
    """

    layers: list[eqx.nn.Conv]
    num_bits: int = eqx.field(static=True)
    scaler: AffineScaler

    def __init__(
        self,
        data_shape,
        *,
        key: PRNGKeyArray,
        channels: int = 16,
        num_bits: int = 8,
        scaler: AffineScaler = AffineScaler(),
    ):
        if len(data_shape) not in (2, 3):
            raise ValueError(f"VariationalDequantizer takes (C, H, W) or (C, L), got {data_shape}.")
        nd, c = len(data_shape) - 1, data_shape[0]
        k1, k2, k3 = jr.split(key, 3)
        last = eqx.nn.Conv(nd, channels, 2 * c, 3, padding=1, key=k3)
        assert last.bias is not None  # use_bias=True
        last = eqx.tree_at(
            lambda m: (m.weight, m.bias),
            last,
            (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)),
        )
        self.layers = [
            eqx.nn.Conv(nd, c, channels, 3, padding=1, key=k1),
            eqx.nn.Conv(nd, channels, channels, 3, padding=1, key=k2),
            last,
        ]
        self.num_bits, self.scaler = num_bits, scaler

    def noise(self, k, key):
        h = 2 * k / (2**self.num_bits - 1) - 1
        for layer in self.layers[:-1]:
            h = jax.nn.silu(layer(h))
        mu, log_sigma = jnp.split(self.layers[-1](h), 2)
        z = jr.normal(key, k.shape)
        a = mu + jnp.exp(log_sigma) * z
        u = jnp.minimum(jax.nn.sigmoid(a), 1 - 2**-23)  # stay inside the bin in float32
        # log q(u) = log N(z) - log sigma - log sigmoid'(a), sigmoid' = sigmoid(a) sigmoid(-a).
        log_q = (
            -0.5 * z**2
            - 0.5 * math.log(2 * math.pi)
            - log_sigma
            - jax.nn.log_sigmoid(a)
            - jax.nn.log_sigmoid(-a)
        )
        return u, jnp.sum(log_q)


def dequantized_bits_per_dim(
    score,
    sde,
    images: Int[ArrayLike, "n *data_shape"],
    dequantizer: AbstractDequantizer,
    *,
    key: PRNGKeyArray,
    n_dequant: int = 1,
    **likelihood_kwargs,
) -> Float[Array, " n"]:
    """Bits per dimension of integer images, `E_q[-log p(k + u) + log q(u | k)] / (D log 2)`,
    with `u` from `dequantizer` (a variational bound when `q` is learned; with a
    `UniformDequantizer` it is what `bits_per_dim` computes).

    **Arguments:**

    - `score`, `sde`: the model; `log p` comes from `sgm.log_likelihood`.
    - `images`: integers in `[0, 2^num_bits)`, shaped `(n, *data_shape)`.
    - `dequantizer`: an `AbstractDequantizer` (e.g. `model.dequantizer` after training).
    - `key`: for the dequantization noise and Hutchinson's probes.
    - `n_dequant`: draws of `u` per image, averaged.
    - `likelihood_kwargs`: passed to `sgm.log_likelihood` (`trace`, `rtol`, ...).
    """
    from ._likelihood import log_likelihood

    k = check_integer_images(images, dequantizer.num_bits)
    n_dequant = check_int("n_dequant", n_dequant)
    shape = k.shape[1:]
    total = jnp.zeros(k.shape[0])
    for rkey in jr.split(key, n_dequant):
        ukey, lkey = jr.split(rkey)
        u, log_q = eqx.filter_vmap(dequantizer.noise)(k, jr.split(ukey, len(k)))
        lp = log_likelihood(score, sde, dequantizer.to_model(k, u), key=lkey, **likelihood_kwargs)
        total = total + lp + dequantizer.log_det(shape) - log_q
    return -total / n_dequant / (math.prod(shape) * math.log(2))
