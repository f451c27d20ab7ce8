"""Inception features of a set of images, in batches."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from ._inception import InceptionV3
from ._resize import SIZE, clean_resize, quantize


@eqx.filter_jit
def _forward(model, x):
    return jax.vmap(model)(x / 255.0)


def inception_features(
    model: InceptionV3, images: Float[np.ndarray, "n c h w"], *, batch_size: int = 50
) -> tuple[Float[np.ndarray, "n 2048"], Float[np.ndarray, "n 1008"]]:
    """The pool3 features and logits of `images` (intensities in `[0, 1]`, channels first, one
    or three channels), prepared as clean-fid does: `quantize`, then `clean_resize` to
    299x299, then [0, 255] -> [0, 1] (which the model maps to [-1, 1]). Batches of
    `batch_size`; the last is padded so that every call has one shape."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    x = quantize(images)
    feats, logits = [], []
    for a in range(0, len(x), batch_size):
        part = clean_resize(x[a : a + batch_size])
        n = len(part)
        if n < batch_size:
            part = np.concatenate([part, np.zeros((batch_size - n, 3, SIZE, SIZE), np.float32)])
        f, z = _forward(model, jnp.asarray(part))
        feats.append(np.asarray(f[:n], np.float64))
        logits.append(np.asarray(z[:n], np.float64))
    return np.concatenate(feats), np.concatenate(logits)
