"""Inception-v3 as FID computes it: the 2015-12-05 TensorFlow graph as pytorch-fid ports it
(`FIDInceptionA`, `FIDInceptionC`, `FIDInceptionE_1`, `FIDInceptionE_2`), in Equinox, on one
channels-first image."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

BN_EPS = 0.001  # the TF graph's batch-norm epsilon


class BasicConv(eqx.Module):
    """A bias-free convolution, batch norm in inference mode folded into a per-channel
    `scale` and `shift` (scale = gamma / sqrt(var + 0.001), shift = beta - mean * scale),
    then ReLU: torchvision's `BasicConv2d`."""

    conv: eqx.nn.Conv2d
    scale: Float[Array, " c"]
    shift: Float[Array, " c"]

    def __init__(self, cin, cout, kernel, *, stride=1, padding=0, key: PRNGKeyArray):
        self.conv = eqx.nn.Conv2d(
            cin, cout, kernel, stride=stride, padding=padding, use_bias=False, key=key
        )
        self.scale, self.shift = jnp.ones(cout), jnp.zeros(cout)

    def __call__(self, x: Float[Array, "c h w"]) -> Float[Array, "c2 h2 w2"]:
        y = self.conv(x)
        return jax.nn.relu(y * self.scale[:, None, None] + self.shift[:, None, None])


def _pool(x, kind: str, stride: int, padding: int):
    """3x3 pooling of one CHW map; `avg` excludes the padding from the count
    (`count_include_pad=False`), as the TF graph's average pools."""
    window, strides = (1, 3, 3), (1, stride, stride)
    pad = ((0, 0), (padding, padding), (padding, padding))
    if kind == "max":
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, pad)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pad)
    ones = jnp.ones((1, *x.shape[1:]), x.dtype)
    count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides, pad)
    return total / count


def _convs(specs, key):
    """`{name: BasicConv}` from `{name: (cin, cout, kernel, stride, padding)}`."""
    keys = jr.split(key, len(specs))
    return {
        n: BasicConv(ci, co, k, stride=s, padding=p, key=kk)
        for (n, (ci, co, k, s, p)), kk in zip(specs.items(), keys, strict=True)
    }


class InceptionBlock(eqx.Module):
    """One mixed block (`kind` A to E of Szegedy et al. 2016, "Rethinking the Inception
    architecture", fig. 5-7): its convolutions by their state-dict names and the pooling of
    its pool branch (`avg`: 3x3 average without padding counted; `max`)."""

    kind: str = eqx.field(static=True)
    pool: str = eqx.field(static=True)
    convs: dict

    def __init__(self, kind: str, cin: int, arg: int = 0, *, pool="avg", key: PRNGKeyArray):
        c = arg
        specs = {
            "A": {
                "branch1x1": (cin, 64, 1, 1, 0),
                "branch5x5_1": (cin, 48, 1, 1, 0),
                "branch5x5_2": (48, 64, 5, 1, 2),
                "branch3x3dbl_1": (cin, 64, 1, 1, 0),
                "branch3x3dbl_2": (64, 96, 3, 1, 1),
                "branch3x3dbl_3": (96, 96, 3, 1, 1),
                "branch_pool": (cin, c, 1, 1, 0),
            },
            "B": {
                "branch3x3": (cin, 384, 3, 2, 0),
                "branch3x3dbl_1": (cin, 64, 1, 1, 0),
                "branch3x3dbl_2": (64, 96, 3, 1, 1),
                "branch3x3dbl_3": (96, 96, 3, 2, 0),
            },
            "C": {
                "branch1x1": (cin, 192, 1, 1, 0),
                "branch7x7_1": (cin, c, 1, 1, 0),
                "branch7x7_2": (c, c, (1, 7), 1, (0, 3)),
                "branch7x7_3": (c, 192, (7, 1), 1, (3, 0)),
                "branch7x7dbl_1": (cin, c, 1, 1, 0),
                "branch7x7dbl_2": (c, c, (7, 1), 1, (3, 0)),
                "branch7x7dbl_3": (c, c, (1, 7), 1, (0, 3)),
                "branch7x7dbl_4": (c, c, (7, 1), 1, (3, 0)),
                "branch7x7dbl_5": (c, 192, (1, 7), 1, (0, 3)),
                "branch_pool": (cin, 192, 1, 1, 0),
            },
            "D": {
                "branch3x3_1": (cin, 192, 1, 1, 0),
                "branch3x3_2": (192, 320, 3, 2, 0),
                "branch7x7x3_1": (cin, 192, 1, 1, 0),
                "branch7x7x3_2": (192, 192, (1, 7), 1, (0, 3)),
                "branch7x7x3_3": (192, 192, (7, 1), 1, (3, 0)),
                "branch7x7x3_4": (192, 192, 3, 2, 0),
            },
            "E": {
                "branch1x1": (cin, 320, 1, 1, 0),
                "branch3x3_1": (cin, 384, 1, 1, 0),
                "branch3x3_2a": (384, 384, (1, 3), 1, (0, 1)),
                "branch3x3_2b": (384, 384, (3, 1), 1, (1, 0)),
                "branch3x3dbl_1": (cin, 448, 1, 1, 0),
                "branch3x3dbl_2": (448, 384, 3, 1, 1),
                "branch3x3dbl_3a": (384, 384, (1, 3), 1, (0, 1)),
                "branch3x3dbl_3b": (384, 384, (3, 1), 1, (1, 0)),
                "branch_pool": (cin, 192, 1, 1, 0),
            },
        }
        if kind not in specs or pool not in ("avg", "max"):
            raise ValueError(f"kind must be one of A-E and pool avg or max, got {kind}, {pool}.")
        self.kind, self.pool, self.convs = kind, pool, _convs(specs[kind], key)

    def __call__(self, x: Float[Array, "c h w"]) -> Float[Array, "c2 h2 w2"]:
        f = self.convs
        if self.kind == "A":
            outs = [
                f["branch1x1"](x),
                f["branch5x5_2"](f["branch5x5_1"](x)),
                f["branch3x3dbl_3"](f["branch3x3dbl_2"](f["branch3x3dbl_1"](x))),
                f["branch_pool"](_pool(x, self.pool, 1, 1)),
            ]
        elif self.kind == "B":
            outs = [
                f["branch3x3"](x),
                f["branch3x3dbl_3"](f["branch3x3dbl_2"](f["branch3x3dbl_1"](x))),
                _pool(x, "max", 2, 0),
            ]
        elif self.kind == "C":
            b7 = f["branch7x7_3"](f["branch7x7_2"](f["branch7x7_1"](x)))
            d = x
            for i in range(1, 6):
                d = f[f"branch7x7dbl_{i}"](d)
            pool = f["branch_pool"](_pool(x, self.pool, 1, 1))
            outs = [f["branch1x1"](x), b7, d, pool]
        elif self.kind == "D":
            b7 = x
            for i in range(1, 5):
                b7 = f[f"branch7x7x3_{i}"](b7)
            outs = [f["branch3x3_2"](f["branch3x3_1"](x)), b7, _pool(x, "max", 2, 0)]
        else:
            b3 = f["branch3x3_1"](x)
            d = f["branch3x3dbl_2"](f["branch3x3dbl_1"](x))
            outs = [
                f["branch1x1"](x),
                f["branch3x3_2a"](b3),
                f["branch3x3_2b"](b3),
                f["branch3x3dbl_3a"](d),
                f["branch3x3dbl_3b"](d),
                f["branch_pool"](_pool(x, self.pool, 1, 1)),
            ]
        return jnp.concatenate(outs, axis=0)


class InceptionV3(eqx.Module):
    """Inception-v3 of the FID (Szegedy et al. 2016; the TF graph of 2015-12-05 that FID
    (Heusel et al. 2017) and the Inception Score (Salimans et al. 2016) use), as pytorch-fid's
    `fid_inception_v3`: average pools exclude padding in the A, C and first E blocks, the last
    E block pools by max. Called on one channels-first RGB image in `[0, 1]` (299x299 as the
    protocol has it; any size from 75x75 runs), which it maps to `2x - 1`; returns the
    2048-d pool3 features and the 1008 logits of the graph's classifier.

    Random weights here; `load_inception` reads the published ones."""

    stem: dict
    blocks: dict
    fc: eqx.nn.Linear

    def __init__(self, *, key: PRNGKeyArray):
        kstem, kblocks, kfc = jr.split(key, 3)
        self.stem = _convs(
            {
                "Conv2d_1a_3x3": (3, 32, 3, 2, 0),
                "Conv2d_2a_3x3": (32, 32, 3, 1, 0),
                "Conv2d_2b_3x3": (32, 64, 3, 1, 1),
                "Conv2d_3b_1x1": (64, 80, 1, 1, 0),
                "Conv2d_4a_3x3": (80, 192, 3, 1, 0),
            },
            kstem,
        )
        specs = {
            "Mixed_5b": ("A", 192, 32, "avg"),
            "Mixed_5c": ("A", 256, 64, "avg"),
            "Mixed_5d": ("A", 288, 64, "avg"),
            "Mixed_6a": ("B", 288, 0, "max"),
            "Mixed_6b": ("C", 768, 128, "avg"),
            "Mixed_6c": ("C", 768, 160, "avg"),
            "Mixed_6d": ("C", 768, 160, "avg"),
            "Mixed_6e": ("C", 768, 192, "avg"),
            "Mixed_7a": ("D", 768, 0, "max"),
            "Mixed_7b": ("E", 1280, 0, "avg"),
            "Mixed_7c": ("E", 2048, 0, "max"),
        }
        keys = jr.split(kblocks, len(specs))
        self.blocks = {
            n: InceptionBlock(kind, cin, arg, pool=pool, key=k)
            for (n, (kind, cin, arg, pool)), k in zip(specs.items(), keys, strict=True)
        }
        self.fc = eqx.nn.Linear(2048, 1008, key=kfc)

    def __call__(
        self, image: Float[Array, "3 h w"]
    ) -> tuple[Float[Array, " 2048"], Float[Array, " 1008"]]:
        if image.ndim != 3 or image.shape[0] != 3 or min(image.shape[1:]) < 75:
            raise ValueError(
                f"InceptionV3 takes one RGB image (3, H, W) with H, W >= 75, got {image.shape}."
            )
        s = self.stem
        x = 2.0 * image - 1.0
        x = s["Conv2d_2b_3x3"](s["Conv2d_2a_3x3"](s["Conv2d_1a_3x3"](x)))
        x = _pool(x, "max", 2, 0)
        x = s["Conv2d_4a_3x3"](s["Conv2d_3b_1x1"](x))
        x = _pool(x, "max", 2, 0)
        for block in self.blocks.values():
            x = block(x)
        pool3 = x.mean(axis=(1, 2))
        return pool3, self.fc(pool3)
