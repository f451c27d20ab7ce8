"""A small noise-conditional classifier network for classifier guidance."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_data_shape, check_key
from ._embedding import Conditioning, check_input
from ._unet import conv


class Classifier(eqx.Module):
    """Logits of `num_classes` classes from a noisy example `x_t` and the noise level `c`
    (Song et al. 2021, appendix I.1; Dhariwal & Nichol 2021 use the UNet's encoder): for images
    and series, stride-2 convolutions with GroupNorm and SiLU, the noise embedding added after
    each, then a global mean and a linear head; for vectors `(d,)`, an MLP with the embedding
    added to each hidden layer. Called `net(c, x, *, key=None)` on one example.

    **Arguments:**

    - `data_shape`: `(C, H, W)`, `(C, L)` or `(d,)`.
    - `num_classes`: number of logits.
    - `key`: initialisation key.
    - `width`: channels (convolutional) or hidden units (vectors); `depth`: number of layers.
    """

    data_shape: tuple[int, ...] = eqx.field(static=True)
    cond: Conditioning
    layers: list
    norms: list
    embs: list[eqx.nn.Linear]
    head: eqx.nn.Linear

    def __init__(self, data_shape, num_classes: int, *, key: PRNGKeyArray, width=32, depth=3):
        self.data_shape = check_data_shape("Classifier data_shape", data_shape)
        key = check_key(key)
        if num_classes < 2:
            raise ValueError(f"a classifier needs num_classes >= 2, got {num_classes}.")
        keys = iter(jr.split(key, 3 * depth + 2))
        embed_dim = 4 * width
        self.cond = Conditioning(embed_dim, key=next(keys))
        vector = len(self.data_shape) == 1
        ndim = len(self.data_shape) - 1
        cin = self.data_shape[0]
        self.layers, self.norms, self.embs = [], [], []
        for i in range(depth):
            if vector:
                self.layers.append(eqx.nn.Linear(cin, width, key=next(keys)))
                self.norms.append(eqx.nn.LayerNorm(width))
            else:
                self.layers.append(
                    eqx.nn.Conv(
                        ndim, cin, width, 3, stride=1 if i == 0 else 2, padding=1, key=next(keys)
                    )
                )
                self.norms.append(eqx.nn.GroupNorm(min(8, width), width))
            self.embs.append(eqx.nn.Linear(embed_dim, width, key=next(keys)))
            cin = width
        self.head = eqx.nn.Linear(width, num_classes, key=next(keys))

    def __call__(
        self, t, x: Float[Array, "..."], *, y=None, key: PRNGKeyArray | None = None
    ) -> Float[Array, " num_classes"]:
        del key  # no dropout
        check_input("Classifier", x, self.data_shape)
        if y is not None:
            raise ValueError("Classifier predicts y; call it as net(c, x).")
        emb = jax.nn.silu(self.cond(t))
        h = x
        vector = len(self.data_shape) == 1
        for layer, norm, lin in zip(self.layers, self.norms, self.embs, strict=True):
            h = layer(h) if vector else conv(layer, h)
            e = lin(emb)
            h = jax.nn.silu(norm(h) + (e if vector else e.reshape(-1, *([1] * (h.ndim - 1)))))
        pooled = h if vector else jnp.mean(h.reshape(h.shape[0], -1), axis=1)
        return self.head(pooled)
