"""Time series: an exact Ornstein-Uhlenbeck generator, a CSV loader and delay embeddings."""

import csv
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from ._dataset import Dataset


def ornstein_uhlenbeck(n_series: int, length: int, *, key, theta=1.0, mu=0.0, sigma=0.5, dt=0.05):
    """Series of `dx = theta (mu - x) dt + sigma dW` sampled exactly on a grid of step `dt`,
    started from the stationary law `N(mu, sigma^2 / (2 theta))`: each step is
    `x' = mu + a (x - mu) + sqrt(v (1 - a^2)) z` with `a = exp(-theta dt)`."""
    a = math.exp(-theta * dt)
    v = sigma**2 / (2 * theta)
    k0, kz = jr.split(key)
    x0 = mu + math.sqrt(v) * jr.normal(k0, (n_series,))
    z = jr.normal(kz, (length - 1, n_series))

    def step(x, z):
        x = mu + a * (x - mu) + math.sqrt(v * (1 - a**2)) * z
        return x, x

    _, rest = jax.lax.scan(step, x0, z)
    return jnp.concatenate([x0[None], rest]).T


def load_csv(path: str | Path, *, column: str | None = None) -> np.ndarray:
    """Series from a CSV with a header: every column is one series (or only `column`).
    Returns `(n_series, length)` float32; non-numeric cells are an error naming the cell."""
    path = Path(path)
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise ValueError(f"{path} needs a header row and at least one row of values.")
    header, body = rows[0], rows[1:]
    cols = (
        range(len(header))
        if column is None
        else [header.index(column)]
        if column in header
        else None
    )
    if cols is None:
        raise ValueError(f"{path} has no column {column!r}; columns: {header}.")
    out = np.empty((len(cols), len(body)), np.float32)
    for j, c in enumerate(cols):
        for i, row in enumerate(body):
            try:
                out[j, i] = float(row[c])
            except (ValueError, IndexError):
                raise ValueError(
                    f"{path}: row {i + 2}, column {header[c]!r} is not a number: "
                    f"{row[c] if c < len(row) else '(missing)'!r}."
                ) from None
    return out


def delay_embed(series, width: int):
    """The delay (Hankel) embedding of a length-L series: an image `(1, L - width + 1, width)`
    whose row `i` is `series[i : i + width]`."""
    series = jnp.asarray(series)
    rows = series.shape[-1] - width + 1
    if rows < 1:
        raise ValueError(f"width {width} exceeds the series length {series.shape[-1]}.")
    idx = jnp.arange(rows)[:, None] + jnp.arange(width)[None, :]
    return series[..., idx][..., None, :, :] if series.ndim > 1 else series[idx][None]


def delay_unembed(image):
    """Inverse of `delay_embed`: averages each anti-diagonal back into one value."""
    image = jnp.asarray(image)[0]
    rows, width = image.shape
    length = rows + width - 1
    idx = (jnp.arange(rows)[:, None] + jnp.arange(width)[None, :]).ravel()
    total = jnp.zeros(length).at[idx].add(image.ravel())
    count = jnp.zeros(length).at[idx].add(1.0)
    return total / count


def timeseries(
    series, *, name="series", n_test: int = 500, embed_width: int | None = None
) -> Dataset:
    """Series `(n, L)` as a Dataset: shape `(1, L)` for the 1-D UNet, or delay-embedded to
    `(1, L - w + 1, w)` for the 2-D UNet. Model scale: divided by the training series'
    standard deviation (and centred on its mean)."""
    series = np.asarray(series, np.float32)
    train, test = series[n_test:], series[:n_test]
    mean, std = float(train.mean()), float(train.std())
    norm = lambda s: (s - mean) / std  # noqa: E731
    if embed_width:
        emb = lambda s: np.asarray(jax.vmap(lambda r: delay_embed(r, embed_width))(norm(s)))  # noqa: E731
        train_x, test_x = emb(train), emb(test)
    else:
        train_x, test_x = norm(train)[:, None], norm(test)[:, None]
    return Dataset(name=name, data_shape=tuple(train_x.shape[1:]), train=train_x, test=test_x)


def ou(
    *, key, n_series: int = 4500, length: int = 64, embed_width: int | None = None, **kw
) -> Dataset:
    """An Ornstein-Uhlenbeck Dataset (last 500 series held out)."""
    series = ornstein_uhlenbeck(n_series, length, key=key, **kw)
    return timeseries(series, name="ou", embed_width=embed_width)
