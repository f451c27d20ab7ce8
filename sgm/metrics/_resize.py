"""Images prepared for Inception as clean-fid prepares them: quantized to 8 bits, then resized
per channel by PIL's antialiased bicubic filter in floating point."""

import numpy as np
from jaxtyping import Float, UInt8

SIZE = 299


def quantize(images: Float[np.ndarray, "n c h w"]) -> UInt8[np.ndarray, "n c h w"]:
    """Images with intensities in `[0, 1]` as 8-bit integers: round(255 x), clipped to
    [0, 255], as saved samples are (Parmar et al. 2022, section 3: FID is computed on the
    quantized images a user would store)."""
    x = np.asarray(images, np.float64)
    if x.ndim != 4:
        raise ValueError(f"images must be (n, c, h, w), got shape {x.shape}.")
    return np.clip(np.round(255.0 * x), 0, 255).astype(np.uint8)


def clean_resize(images: UInt8[np.ndarray, "n c h w"], size: int = SIZE) -> np.ndarray:
    """8-bit images resized to `size` x `size` as clean-fid does (Parmar et al. 2022, "On
    aliased resizing and surprising subtleties in GAN evaluation", section 4; clean-fid's
    `make_resizer("PIL", False, "bicubic", (299, 299))`): each channel as a float32 PIL image
    (mode "F") resized with `Image.BICUBIC`, which antialiases when shrinking, clipped to
    [0, 255]. One channel (grayscale, MNIST) is repeated to three.

    **Returns:** float32 `(n, 3, size, size)` in [0, 255]."""
    from PIL import Image  # noqa: PLC0415  (an image stack, imported when used)

    x = np.asarray(images)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 (n, 1 or 3, h, w) (see quantize), got {x.dtype} {x.shape}."
        )
    out = np.empty((len(x), x.shape[1], size, size), np.float32)
    for i, image in enumerate(x):
        for c, channel in enumerate(image):
            pil = Image.fromarray(channel.astype(np.float32))  # mode "F"
            out[i, c] = np.asarray(pil.resize((size, size), resample=Image.Resampling.BICUBIC))
    out = np.clip(out, 0, 255)
    return np.repeat(out, 3, axis=1) if x.shape[1] == 1 else out
