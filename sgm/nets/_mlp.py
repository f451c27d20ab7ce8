"""A residual MLP score network for vector data."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_data_shape, check_key
from ._embedding import Conditioning, check_input, check_no_condition, dropout


class _Block(eqx.Module):
    norm: eqx.nn.LayerNorm
    inner: eqx.nn.Linear
    emb: eqx.nn.Linear
    outer: eqx.nn.Linear
    rate: float = eqx.field(static=True)

    def __init__(self, width, embed_dim, rate, *, key):
        k1, k2, k3 = jr.split(key, 3)
        self.norm = eqx.nn.LayerNorm(width)
        self.inner = eqx.nn.Linear(width, width, key=k1)
        self.emb = eqx.nn.Linear(embed_dim, width, key=k2)
        self.outer = eqx.nn.Linear(width, width, key=k3)
        self.rate = rate

    def __call__(self, h, emb, key):
        z = jax.nn.silu(self.inner(self.norm(h)) + self.emb(emb))
        return h + self.outer(dropout(z, self.rate, key))


class MLP(eqx.Module):
    """Residual MLP on vectors (flattened when `data_shape` has several axes), the time
    embedding added inside every block.

    **Arguments:**

    - `data_shape`: the shape of one example, e.g. `(2,)`.
    - `key`: initialisation key.
    - `width`, `depth`: hidden width and number of residual blocks.
    - `embed_dim`: size of the time/condition embedding.
    - `num_classes` / `cond_dim`: condition on a class label or on a parameter vector.
    - `dropout`: dropout rate inside the blocks (active when called with a key).
    - `fourier_scale`: standard deviation of the noise embedding's Fourier frequencies: 1 suits
      `EDMPreconditioning`'s conditioning `log(sigma) / 4`, 16 a conditioning on `t` in `[0, 1]`
      (`NoisePrediction`); the comparison is in `benchmarks/train_quality.py`.
    """

    data_shape: tuple[int, ...] = eqx.field(static=True)
    cond: Conditioning
    inp: eqx.nn.Linear
    blocks: list[_Block]
    norm: eqx.nn.LayerNorm
    out: eqx.nn.Linear

    def __init__(
        self,
        data_shape,
        *,
        key: PRNGKeyArray,
        width=128,
        depth=3,
        embed_dim=128,
        num_classes=None,
        cond_dim=None,
        dropout=0.0,
        fourier_scale=1.0,
    ):
        self.data_shape = check_data_shape("MLP data_shape", data_shape)
        key = check_key(key)
        d = math.prod(self.data_shape)
        ckey, ikey, okey, *bkeys = jr.split(key, 3 + depth)
        self.cond = Conditioning(
            embed_dim,
            key=ckey,
            num_classes=num_classes,
            cond_dim=cond_dim,
            fourier_scale=fourier_scale,
        )
        self.inp = eqx.nn.Linear(d, width, key=ikey)
        self.blocks = [_Block(width, embed_dim, dropout, key=k) for k in bkeys]
        self.norm = eqx.nn.LayerNorm(width)
        self.out = eqx.nn.Linear(width, d, key=okey)

    def __call__(
        self, t, x: Float[Array, "*shape"], *, y=None, key: PRNGKeyArray | None = None
    ) -> Float[Array, "*shape"]:
        check_input("MLP", x, self.data_shape)
        if self.cond.num_classes is None and self.cond.cond_dim is None:
            check_no_condition("MLP", y)
        emb = self.cond(t, y)
        keys = [None] * len(self.blocks) if key is None else list(jr.split(key, len(self.blocks)))
        h = self.inp(jnp.ravel(x))
        for block, k in zip(self.blocks, keys, strict=True):
            h = block(h, emb, k)
        return self.out(self.norm(h)).reshape(self.data_shape)
