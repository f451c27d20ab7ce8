"""A transformer score network (DiT; Peebles & Xie 2023) with adaLN-Zero conditioning."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from einops import rearrange
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_data_shape, check_key
from ._embedding import Conditioning, check_input, check_no_condition, dropout


def _zero_linear(cin, cout, *, key):
    lin = eqx.nn.Linear(cin, cout, key=key)
    assert lin.bias is not None  # use_bias=True
    return eqx.tree_at(
        lambda m: (m.weight, m.bias), lin, (jnp.zeros_like(lin.weight), jnp.zeros_like(lin.bias))
    )


def _modulate(x, shift, scale):
    return x * (1 + scale) + shift


class _DiTBlock(eqx.Module):
    """Pre-norm attention and MLP, each modulated (shift, scale) and gated by the condition;
    the modulation is zero-initialised so the block starts as the identity (adaLN-Zero)."""

    norm1: eqx.nn.LayerNorm
    attn: eqx.nn.MultiheadAttention
    norm2: eqx.nn.LayerNorm
    mlp: eqx.nn.MLP
    ada: eqx.nn.Linear
    rate: float = eqx.field(static=True)

    def __init__(self, hidden, heads, mlp_ratio, rate, *, key):
        k1, k2, k3 = jr.split(key, 3)
        self.norm1 = eqx.nn.LayerNorm(hidden, use_weight=False, use_bias=False)
        self.attn = eqx.nn.MultiheadAttention(heads, hidden, key=k1)
        self.norm2 = eqx.nn.LayerNorm(hidden, use_weight=False, use_bias=False)
        self.mlp = eqx.nn.MLP(hidden, hidden, hidden * mlp_ratio, 1, activation=jax.nn.gelu, key=k2)
        self.ada = _zero_linear(hidden, 6 * hidden, key=k3)
        self.rate = rate

    def __call__(self, x, c, key):
        s1, sc1, g1, s2, sc2, g2 = jnp.split(self.ada(jax.nn.silu(c)), 6)
        h = _modulate(jax.vmap(self.norm1)(x), s1, sc1)
        x = x + g1 * self.attn(h, h, h)
        h = _modulate(jax.vmap(self.norm2)(x), s2, sc2)
        return x + g2 * dropout(jax.vmap(self.mlp)(h), self.rate, key)


class DiT(eqx.Module):
    """Diffusion transformer on images `(C, H, W)`: patchify (padding H and W up to a multiple
    of `patch_size`), learned position embeddings, adaLN-Zero blocks conditioned on the sum of
    the time and label embeddings, a modulated linear head, unpatchify.

    **Arguments:**

    - `data_shape`: `(C, H, W)`.
    - `key`: initialisation key.
    - `patch_size`, `hidden`, `depth`, `heads`, `mlp_ratio`: transformer sizes.
    - `num_classes` / `cond_dim`: condition on a class label or a parameter vector.
    - `dropout`: dropout in the MLPs (active with a key).
    - `fourier_scale`: standard deviation of the noise embedding's Fourier frequencies: 1 suits
      `EDMPreconditioning`'s conditioning `log(sigma) / 4`, 16 a conditioning on `t` in `[0, 1]`
      (`NoisePrediction`); the comparison is in `benchmarks/train_quality.py`.
    """

    data_shape: tuple[int, ...] = eqx.field(static=True)
    patch_size: int = eqx.field(static=True)
    cond: Conditioning
    patch_in: eqx.nn.Linear
    pos: Float[Array, "n hidden"]
    blocks: list[_DiTBlock]
    norm_out: eqx.nn.LayerNorm
    ada_out: eqx.nn.Linear
    head: eqx.nn.Linear

    def __init__(
        self,
        data_shape,
        *,
        key: PRNGKeyArray,
        patch_size=2,
        hidden=128,
        depth=4,
        heads=4,
        mlp_ratio=4,
        num_classes=None,
        cond_dim=None,
        dropout=0.0,
        fourier_scale=1.0,
    ):
        data_shape = check_data_shape("DiT data_shape", data_shape)
        key = check_key(key)
        if len(data_shape) != 3:
            raise ValueError(f"DiT takes images (C, H, W), got data_shape {data_shape}.")
        if hidden % heads:
            raise ValueError(f"hidden={hidden} must be divisible by heads={heads}.")
        c, h, w = data_shape
        p = patch_size
        n_tokens = math.ceil(h / p) * math.ceil(w / p)
        ckey, ikey, pkey, okey, hkey, *bkeys = jr.split(key, 5 + depth)
        self.data_shape, self.patch_size = data_shape, p
        self.cond = Conditioning(
            hidden,
            key=ckey,
            num_classes=num_classes,
            cond_dim=cond_dim,
            fourier_scale=fourier_scale,
        )
        self.patch_in = eqx.nn.Linear(c * p * p, hidden, key=ikey)
        self.pos = 0.02 * jr.normal(pkey, (n_tokens, hidden))
        self.blocks = [_DiTBlock(hidden, heads, mlp_ratio, dropout, key=k) for k in bkeys]
        self.norm_out = eqx.nn.LayerNorm(hidden, use_weight=False, use_bias=False)
        self.ada_out = _zero_linear(hidden, 2 * hidden, key=okey)
        self.head = _zero_linear(hidden, c * p * p, key=hkey)

    def __call__(
        self, t, x: Float[Array, "c h w"], *, y=None, key: PRNGKeyArray | None = None
    ) -> Float[Array, "c h w"]:
        check_input("DiT", x, self.data_shape)
        if self.cond.num_classes is None and self.cond.cond_dim is None:
            check_no_condition("DiT", y)
        c, h, w = self.data_shape
        p = self.patch_size
        hp, wp = math.ceil(h / p) * p, math.ceil(w / p) * p
        xp = jnp.pad(x, ((0, 0), (0, hp - h), (0, wp - w)))
        tokens = rearrange(xp, "c (i p) (j q) -> (i j) (c p q)", p=p, q=p)
        z = jax.vmap(self.patch_in)(tokens) + self.pos
        emb = self.cond(t, y)
        keys = [None] * len(self.blocks) if key is None else list(jr.split(key, len(self.blocks)))
        for block, k in zip(self.blocks, keys, strict=True):
            z = block(z, emb, k)
        shift, scale = jnp.split(self.ada_out(jax.nn.silu(emb)), 2)
        out = jax.vmap(self.head)(_modulate(jax.vmap(self.norm_out)(z), shift, scale))
        img = rearrange(out, "(i j) (c p q) -> c (i p) (j q)", i=hp // p, p=p, q=p, c=c)
        return img[:, :h, :w]
