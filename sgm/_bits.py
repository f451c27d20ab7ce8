"""Bits per dimension of integer images through the probability-flow likelihood, under
uniform dequantization (Theis et al. 2016; Song et al. 2021, appendix D.2)."""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ._checks import check_int, check_integer_images, check_key, check_sde
from ._likelihood import log_likelihood
from ._model_checks import check_model_sde
from ._scaler import AffineScaler
from ._sde import AbstractSDE
from ._sharding import example_keys


def bits_per_dim(
    score,
    sde: AbstractSDE,
    images: Int[ArrayLike, "n *data_shape"],
    *,
    key: PRNGKeyArray,
    num_bits: int = 8,
    n_dequant: int = 1,
    scaler=AffineScaler(),
    **likelihood_kwargs,
) -> Float[Array, " n"]:
    """Bits per dimension of integer images under uniform dequantization (Theis et al. 2016;
    Song et al. 2021, appendix D.2).

    `v = images + u`, `u ~ U[0, 1)^D`, is a continuous variable on `[0, 2^b)^D` whose density
    lower-bounds the discrete likelihood. The model sees `x = scaler(v / 2^b)`, so
    `log p(v) = log p_x(x) + sum log |scaler'(v / 2^b)| - D log 2^b`, the log-determinant being
    obtained by differentiating `scaler` (it must act elementwise). Returns
    `-log p(v) / (D log 2)`, averaged over `n_dequant` draws of `u`.

    **Arguments:**

    - `score`, `sde`: the model.
    - `images`: integers in `[0, 2^num_bits)`, shaped `(n, *data_shape)`.
    - `key`: for the dequantization noise (example `i`'s from `fold_in`, like its probes).
    - `num_bits`: bits per pixel of the data.
    - `n_dequant`: dequantization draws per image.
    - `scaler`: elementwise map from `[0, 1]` to model scale (default `[-1, 1]`).
    - `likelihood_kwargs`: passed to `log_likelihood` (`trace`, `rtol`, `batch_size`, ...).

    Float images are refused unless they hold integer levels and not only 0s and 1s (data in
    `[0, 1]` are not pixel levels: pass `np.round(x * 255).astype(np.uint8)`).
    """
    check_sde(sde)
    check_model_sde(score, sde)
    key = check_key(key)
    images = check_integer_images(images, num_bits)
    levels = 2**num_bits
    n_dequant = check_int("n_dequant", n_dequant)
    n, dim = images.shape[0], math.prod(images.shape[1:])
    total = jnp.zeros(n)
    for rkey in jr.split(key, n_dequant):
        ukey, lkey = jr.split(rkey)
        noise = jax.vmap(lambda k: jr.uniform(k, images.shape[1:]))(example_keys(ukey, n))
        u = (images + noise) / levels
        x, slope = jax.jvp(scaler, (u,), (jnp.ones_like(u),))
        log_det = jnp.sum(jnp.log(jnp.abs(slope)).reshape(n, -1), axis=1)
        lp = log_likelihood(score, sde, x, key=lkey, **likelihood_kwargs)
        total = total + (lp + log_det - dim * math.log(levels))
    return -total / n_dequant / (dim * math.log(2))
