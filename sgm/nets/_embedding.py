"""Time and condition embeddings shared by every network."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._traced_checks import error_if


def fourier_features(
    c: Float[Array, ""], dim: int, scale: float, seed: int
) -> Float[Array, " dim"]:
    """Gaussian Fourier features `[sin(2 pi W c), cos(2 pi W c)]`, `W ~ N(0, scale^2)` fixed
    (Tancik et al. 2020; Song et al. 2021, appendix H). `W` is regenerated from `seed`, a
    constant under jit, so it is never a trainable parameter."""
    w = scale * jr.normal(jr.key(seed), (dim // 2,))
    angle = 2 * math.pi * w * c
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)])


class Conditioning(eqx.Module):
    """Embeds the noise-level scalar `c` and the optional condition `y` into one vector:
    Fourier features of `c` through a two-layer MLP, plus a label embedding (`num_classes`,
    with label `num_classes` meaning "no label", for classifier-free guidance) or a linear map of
    a parameter vector (`cond_dim`)."""

    time_mlp: eqx.nn.MLP
    label_table: eqx.nn.Embedding | None
    cond_proj: eqx.nn.Linear | None
    embed_dim: int = eqx.field(static=True)
    num_classes: int | None = eqx.field(static=True)
    cond_dim: int | None = eqx.field(static=True)
    fourier_scale: float = eqx.field(static=True)

    def __init__(self, embed_dim: int, *, key, num_classes=None, cond_dim=None, fourier_scale=16.0):
        if num_classes is not None and cond_dim is not None:
            raise ValueError("give at most one of num_classes and cond_dim.")
        tkey, lkey = jr.split(key)
        self.time_mlp = eqx.nn.MLP(
            embed_dim, embed_dim, embed_dim, 1, activation=jax.nn.silu, key=tkey
        )
        self.label_table = (
            eqx.nn.Embedding(num_classes + 1, embed_dim, key=lkey) if num_classes else None
        )
        self.cond_proj = eqx.nn.Linear(cond_dim, embed_dim, key=lkey) if cond_dim else None
        self.embed_dim, self.num_classes, self.cond_dim = embed_dim, num_classes, cond_dim
        self.fourier_scale = fourier_scale

    def __call__(self, c, y=None) -> Float[Array, " embed_dim"]:
        # the features in float32 whatever the parameters' dtype (their angles need it), then
        # in that dtype, so that a bfloat16 network computes in bfloat16 throughout
        dtype = self.time_mlp.layers[0].weight.dtype
        features = fourier_features(jnp.asarray(c, float), self.embed_dim, self.fourier_scale, 0)
        emb = self.time_mlp(features.astype(dtype))
        if self.label_table is not None:
            assert self.num_classes is not None  # a label table has num_classes + 1 rows
            y = jnp.asarray(self.num_classes if y is None else y)
            if y.shape != ():
                raise ValueError(f"y must be one integer label per example, got shape {y.shape}.")
            bad = (y < 0) | (y > self.num_classes)
            y = error_if(y, bad, f"label out of range [0, {self.num_classes}]")
            emb = emb + self.label_table(y)
        elif self.cond_proj is not None:
            if y is None:
                raise ValueError(
                    f"this network is conditioned on a vector y of length {self.cond_dim}."
                )
            y = jnp.asarray(y, self.cond_proj.weight.dtype)
            if y.shape != (self.cond_dim,):
                raise ValueError(f"y must have shape ({self.cond_dim},), got {y.shape}.")
            emb = emb + self.cond_proj(y)
        return emb


def check_input(name: str, x, data_shape: tuple[int, ...]) -> None:
    if x.shape != tuple(data_shape):
        raise ValueError(
            f"{name} expects one example of shape {tuple(data_shape)}, got {x.shape}; networks "
            "act on one unbatched example (use jax.vmap for a batch)."
        )


def check_no_condition(name: str, y) -> None:
    if y is not None:
        raise ValueError(
            f"{name} is unconditional but got y; build it with num_classes=, "
            "cond_dim= or cond_channels= to condition it."
        )


def param_count(module) -> int:
    """The number of trainable parameters (float array entries) of a module."""
    leaves = jax.tree.leaves(eqx.filter(module, eqx.is_inexact_array))
    return int(sum(leaf.size for leaf in leaves))


def dropout(x, rate: float, key: PRNGKeyArray | None):
    """Inverted dropout; the identity when `key` is None (inference) or `rate` is 0."""
    if key is None or rate == 0:
        return x
    keep = jr.bernoulli(key, 1 - rate, x.shape)
    return jnp.where(keep, x / (1 - rate), 0)
