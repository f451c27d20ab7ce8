"""A U-Net score network for images (2-D) and series (1-D) (Ronneberger et al. 2015, in the
form of Ho et al. 2020 and Song et al. 2021: residual blocks with GroupNorm, self-attention at
low resolutions, skip connections)."""

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
from einops import rearrange
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_data_shape, check_key
from ._embedding import Conditioning, check_input, check_no_condition, dropout


def _conv(ndim, cin, cout, kernel, *, key, stride=1):
    return eqx.nn.Conv(ndim, cin, cout, kernel, stride=stride, padding=kernel // 2, key=key)


def conv(layer: eqx.nn.Conv, x: Float[Array, "c *spatial"]) -> Float[Array, "o *spatial"]:
    """`layer(x)` computed channel-last. Same parameters and result as `layer(x)`; XLA:CPU runs
    channel-first convolutions inside loop bodies (`lax.scan`, diffrax's while loops) several
    times slower than outside them (jax-ml/jax#12868; `benchmarks/train_throughput.py`), and
    channel-last ones at full speed."""
    spatial = "DHW"[-layer.num_spatial_dims :]
    lhs = jnp.moveaxis(x, 0, -1)[None]
    rhs = jnp.moveaxis(layer.weight, (0, 1), (-1, -2))  # (O, I, *k) -> (*k, I, O)
    dims = lax.conv_dimension_numbers(
        lhs.shape, rhs.shape, (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")
    )
    out = lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides=layer.stride,
        padding=layer.padding,
        rhs_dilation=layer.dilation,
        dimension_numbers=dims,
        feature_group_count=layer.groups,
    )
    out = jnp.moveaxis(out[0], -1, 0)
    return out if layer.bias is None else out + layer.bias  # None exactly when not use_bias


class _ResBlock(eqx.Module):
    norm1: eqx.nn.GroupNorm
    conv1: eqx.nn.Conv
    emb: eqx.nn.Linear
    norm2: eqx.nn.GroupNorm
    conv2: eqx.nn.Conv
    skip: eqx.nn.Conv | None
    rate: float = eqx.field(static=True)

    def __init__(self, ndim, cin, cout, embed_dim, groups, rate, *, key):
        k1, k2, k3, k4 = jr.split(key, 4)
        self.norm1 = eqx.nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = _conv(ndim, cin, cout, 3, key=k1)
        self.emb = eqx.nn.Linear(embed_dim, cout, key=k2)
        self.norm2 = eqx.nn.GroupNorm(min(groups, cout), cout)
        self.conv2 = _conv(ndim, cout, cout, 3, key=k3)
        self.skip = _conv(ndim, cin, cout, 1, key=k4) if cin != cout else None
        self.rate = rate

    def __call__(self, x, emb, key):
        h = conv(self.conv1, jax.nn.silu(self.norm1(x)))
        h = h + self.emb(emb).reshape(-1, *([1] * (x.ndim - 1)))
        h = conv(self.conv2, dropout(jax.nn.silu(self.norm2(h)), self.rate, key))
        return h + (x if self.skip is None else conv(self.skip, x))


class _Attention(eqx.Module):
    """Multi-head self-attention over all positions, residual."""

    norm: eqx.nn.GroupNorm
    attn: eqx.nn.MultiheadAttention

    def __init__(self, channels, groups, *, key):
        self.norm = eqx.nn.GroupNorm(min(groups, channels), channels)
        heads = max(1, channels // 32)
        self.attn = eqx.nn.MultiheadAttention(heads, channels, key=key)

    def __call__(self, x):
        tokens = rearrange(self.norm(x), "c ... -> (...) c")
        out = self.attn(tokens, tokens, tokens)
        return x + rearrange(out, "n c -> c n").reshape(x.shape)


def _upsample_to(x, shape):
    """Nearest-neighbour upsampling by 2, cropped to the skip connection's spatial shape (so
    that odd sizes such as 7 -> 4 -> 7 come back exactly)."""
    for axis in range(1, x.ndim):
        x = jnp.repeat(x, 2, axis=axis)
    return x[(slice(None), *(slice(0, n) for n in shape))]


class UNet(eqx.Module):
    """U-Net for data shaped `(C, H, W)` (images) or `(C, L)` (series), any channel count and
    odd sizes.

    **Arguments:**

    - `data_shape`: `(C, H, W)` or `(C, L)`.
    - `key`: initialisation key.
    - `channels`: base width; level `i` has `channels * channel_mults[i]`.
    - `channel_mults`: one per resolution; all but the last halve the resolution.
    - `num_res_blocks`: residual blocks per level.
    - `attention_levels`: levels (indices into `channel_mults`) with self-attention.
    - `dropout`, `num_groups`: residual-block dropout and GroupNorm groups.
    - `embed_dim`: time/condition embedding size (default `4 * channels`).
    - `num_classes` / `cond_dim` / `cond_channels`: condition on a class label, a parameter
      vector, or an image/map with `cond_channels` channels concatenated to the input.
    - `fourier_scale`: standard deviation of the noise embedding's Fourier frequencies: 1 suits
      `EDMPreconditioning`'s conditioning `log(sigma) / 4`, 16 a conditioning on `t` in `[0, 1]`
      (`NoisePrediction`); the comparison is in `benchmarks/train_quality.py`.
    """

    data_shape: tuple[int, ...] = eqx.field(static=True)
    cond_channels: int = eqx.field(static=True)
    attention_levels: tuple[int, ...] = eqx.field(static=True)
    cond: Conditioning
    conv_in: eqx.nn.Conv
    down_blocks: list[list[_ResBlock]]
    down_attn: list[_Attention | None]
    downsample: list[eqx.nn.Conv]
    mid1: _ResBlock
    mid_attn: _Attention
    mid2: _ResBlock
    up_blocks: list[list[_ResBlock]]
    up_attn: list[_Attention | None]
    up_conv: list[eqx.nn.Conv]
    norm_out: eqx.nn.GroupNorm
    conv_out: eqx.nn.Conv

    def __init__(
        self,
        data_shape,
        *,
        key: PRNGKeyArray,
        channels=32,
        channel_mults=(1, 2, 2),
        num_res_blocks=1,
        attention_levels=(2,),
        dropout=0.0,
        num_groups=8,
        embed_dim=None,
        num_classes=None,
        cond_dim=None,
        cond_channels=0,
        fourier_scale=1.0,
    ):
        data_shape = check_data_shape("UNet data_shape", data_shape)
        key = check_key(key)
        if len(data_shape) not in (2, 3):
            raise ValueError(f"UNet takes data_shape (C, H, W) or (C, L), got {data_shape}.")
        if channels % num_groups:
            raise ValueError(f"channels={channels} must be divisible by num_groups={num_groups}.")
        if any(not 0 <= lvl < len(channel_mults) for lvl in attention_levels):
            raise ValueError(f"attention_levels {attention_levels} must index channel_mults.")
        ndim = len(data_shape) - 1
        embed_dim = embed_dim or 4 * channels
        self.data_shape, self.cond_channels = data_shape, cond_channels
        self.attention_levels = tuple(attention_levels)
        keys = iter(jr.split(key, 8 + 4 * len(channel_mults) * (num_res_blocks + 2)))
        self.cond = Conditioning(
            embed_dim,
            key=next(keys),
            num_classes=num_classes,
            cond_dim=cond_dim,
            fourier_scale=fourier_scale,
        )
        self.conv_in = _conv(ndim, data_shape[0] + cond_channels, channels, 3, key=next(keys))
        widths = [channels * m for m in channel_mults]

        def block(cin, cout):
            return _ResBlock(ndim, cin, cout, embed_dim, num_groups, dropout, key=next(keys))

        def attn(lvl, c):
            return _Attention(c, num_groups, key=next(keys)) if lvl in attention_levels else None

        self.down_blocks, self.down_attn, self.downsample = [], [], []
        cin = channels
        for lvl, w in enumerate(widths):
            self.down_blocks.append([block(cin if i == 0 else w, w) for i in range(num_res_blocks)])
            self.down_attn.append(attn(lvl, w))
            if lvl < len(widths) - 1:
                self.downsample.append(_conv(ndim, w, w, 3, key=next(keys), stride=2))
            cin = w
        self.mid1 = block(cin, cin)
        self.mid_attn = _Attention(cin, num_groups, key=next(keys))
        self.mid2 = block(cin, cin)
        self.up_blocks, self.up_attn, self.up_conv = [], [], []
        for lvl in reversed(range(len(widths))):
            w = widths[lvl]
            if lvl < len(widths) - 1:
                self.up_conv.append(_conv(ndim, cin, w, 3, key=next(keys)))
                cin = w
            self.up_blocks.append(
                [block(cin + w if i == 0 else w, w) for i in range(num_res_blocks)]
            )
            self.up_attn.append(attn(lvl, w))
            cin = w
        self.norm_out = eqx.nn.GroupNorm(min(num_groups, cin), cin)
        conv_out = _conv(ndim, cin, data_shape[0], 3, key=next(keys))
        assert conv_out.bias is not None  # use_bias=True
        # Zero-initialised output: the network starts as the zero noise prediction.
        zeros = (jnp.zeros_like(conv_out.weight), jnp.zeros_like(conv_out.bias))
        self.conv_out = eqx.tree_at(lambda c: (c.weight, c.bias), conv_out, zeros)

    def __call__(
        self, t, x: Float[Array, "c *spatial"], *, y=None, key: PRNGKeyArray | None = None
    ) -> Float[Array, "c *spatial"]:
        check_input("UNet", x, self.data_shape)
        if self.cond_channels:
            if y is None or y.shape != (self.cond_channels, *self.data_shape[1:]):
                raise ValueError(
                    f"this UNet is conditioned on a map y of shape "
                    f"{(self.cond_channels, *self.data_shape[1:])}, got "
                    f"{None if y is None else y.shape}."
                )
            x, y = jnp.concatenate([x, jnp.asarray(y, x.dtype)], axis=0), None
        elif self.cond.num_classes is None and self.cond.cond_dim is None:
            check_no_condition("UNet", y)
        emb = self.cond(t, y)
        n_blocks = sum(len(b) for b in self.down_blocks + self.up_blocks) + 2
        keys = iter([None] * n_blocks if key is None else list(jr.split(key, n_blocks)))
        h = conv(self.conv_in, x)
        skips = []
        for lvl, blocks in enumerate(self.down_blocks):
            for b in blocks:
                h = b(h, emb, next(keys))
            if (down_attn := self.down_attn[lvl]) is not None:
                h = down_attn(h)
            skips.append(h)
            if lvl < len(self.downsample):
                h = conv(self.downsample[lvl], h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb, next(keys))), emb, next(keys))
        up_convs = iter(self.up_conv)
        for i, blocks in enumerate(self.up_blocks):
            skip = skips[len(skips) - 1 - i]
            if i > 0:
                h = conv(next(up_convs), _upsample_to(h, skip.shape[1:]))
            h = jnp.concatenate([h, skip], axis=0)
            for b in blocks:
                h = b(h, emb, next(keys))
            if (up_attn := self.up_attn[i]) is not None:
                h = up_attn(h)
        return conv(self.conv_out, jax.nn.silu(self.norm_out(h)))
