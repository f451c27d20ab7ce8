"""Time series: an exact Ornstein-Uhlenbeck generator, a CSV loader and delay embeddings."""

import csv
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._scaler import Standardizer
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
    """Series `(n, L)` as a Dataset, the first `n_test` held out: shape `(1, L)` for the 1-D
    UNet, or delay-embedded to `(1, L - w + 1, w)` for the 2-D UNet. Model scale: centred on
    the training series' mean and divided by their standard deviation; the dataset's
    `scaler` (a `Standardizer`) maps data units there and back."""
    series = np.asarray(series, np.float32)
    if series.ndim != 2:
        raise ValueError(f"{name}: series must be (n_series, length), got shape {series.shape}.")
    n = len(series)
    if not isinstance(n_test, int) or not 1 <= n_test < n:
        raise ValueError(
            f"{name}: n_test={n_test!r} must be at least 1 and below the {n} series; pass "
            f"n_test={max(1, n // 10)} (a tenth) or give more series."
        )
    return series_dataset(name, series[n_test:], series[:n_test], embed_width=embed_width)


def series_dataset(name: str, train, test, *, embed_width: int | None = None) -> Dataset:
    """Training and test series `(n, L)` in data units as a standardised Dataset (one mean
    and standard deviation, the training split's), optionally delay-embedded."""
    if not np.all(np.isfinite(train)) or not np.all(np.isfinite(test)):
        raise ValueError(f"{name}: the series contain NaN or infinite values.")
    scaler = Standardizer.fit(train, per_feature=False)
    norm = lambda s: np.asarray(scaler(s), np.float32)  # noqa: E731
    if embed_width:
        emb = lambda s: np.asarray(jax.vmap(lambda r: delay_embed(r, embed_width))(norm(s)))  # noqa: E731
        train_x, test_x = emb(train), emb(test)
    else:
        train_x, test_x = norm(train)[:, None], norm(test)[:, None]
    return Dataset(
        name=name,
        data_shape=tuple(train_x.shape[1:]),
        train=train_x,
        test=test_x,
        scaler=scaler,  # elementwise, so it applies to embedded series too
    )


def windows(series, window: int, stride: int | None = None) -> np.ndarray:
    """Every window of `window` consecutive values, `stride` apart (default `window`: no
    overlap), of each series `(n, L)`: `(n * k, window)`, the windows of series 0 first."""
    series = np.asarray(series, np.float32)
    stride = window if stride is None else stride
    if series.ndim != 2 or window > series.shape[1]:
        raise ValueError(
            f"window={window} exceeds the series length {series.shape[-1]}; pass a smaller window."
        )
    starts = np.arange(0, series.shape[1] - window + 1, stride)
    idx = starts[:, None] + np.arange(window)[None, :]
    return series[:, idx].reshape(-1, window)


def ou(
    *,
    key,
    n_series: int = 4500,
    length: int = 64,
    n_test: int | None = None,
    embed_width: int | None = None,
    **kw,
) -> Dataset:
    """An Ornstein-Uhlenbeck Dataset; the first `n_test` series held out (default 500, at
    most a fifth of them)."""
    series = ornstein_uhlenbeck(n_series, length, key=key, **kw)
    n_test = min(500, max(1, n_series // 5)) if n_test is None else n_test
    return timeseries(series, name="ou", n_test=n_test, embed_width=embed_width)


def ou_family(
    *,
    key,
    n_series: int = 4500,
    length: int = 64,
    theta_range: tuple[float, float] = (0.5, 4.0),
    dt: float = 0.05,
    n_test: int = 500,
) -> Dataset:
    """A family of stationary Ornstein-Uhlenbeck series with unit variance, each with its own
    mean-reversion rate `theta`, log-uniform in `theta_range`, and conditioned on the parameter
    vector `y = (log theta,)`: a simulator emulated by a conditional model.

    Given `theta`, a series is exactly `N(0, Sigma)` with `Sigma_ij = exp(-theta dt |i - j|)`
    (an AR(1) chain `x_{i+1} = a x_i + sqrt(1 - a^2) z`, `a = exp(-theta dt)`); the dataset's
    `check_conditional` measures samples against that law. The first `n_test` series are the
    test split. Data are used as they are (unit variance by construction)."""
    if not isinstance(n_test, int) or not 1 <= n_test < n_series:
        raise ValueError(
            f"ou_theta: n_test={n_test!r} must be at least 1 and below the {n_series} series; "
            f"pass n_test={max(1, n_series // 10)} (a tenth) or more series (n_series)."
        )
    lo, hi = theta_range
    if not 0 < lo < hi:
        raise ValueError(f"theta_range must be 0 < low < high, got {theta_range}.")
    tkey, xkey = jr.split(key)
    log_theta = jr.uniform(tkey, (n_series,), minval=math.log(lo), maxval=math.log(hi))
    series = np.asarray(_ar1(jnp.exp(-jnp.exp(log_theta) * dt), length, xkey), np.float32)
    y = np.asarray(log_theta, np.float32)[:, None]
    return Dataset(
        name="ou_theta",
        data_shape=(1, length),
        train=series[n_test:, None],
        test=series[:n_test, None],
        train_cond=y[n_test:],
        test_cond=y[:n_test],
        check_conditional=lambda x, y: ou_family_check(x, y, dt=dt),
    )


def _ar1(a, length: int, key):
    """Unit-variance stationary AR(1) series with coefficients `a` (one per series)."""
    k0, kz = jr.split(key)
    z = jr.normal(kz, (length - 1, *a.shape))

    def step(x, z):
        x = a * x + jnp.sqrt(1 - a**2) * z
        return x, x

    x0 = jr.normal(k0, a.shape)
    _, rest = jax.lax.scan(step, x0, z)
    return jnp.concatenate([x0[None], rest]).T


def ou_family_check(x, y, *, dt: float) -> dict:
    """Samples `x` `(n, 1, L)` of the OU family given `y = (log theta,)` against the exact law.

    - `delta_log_density_per_dim`: the mean of `log N(x; 0, Sigma_theta) / L` over the samples
      minus its exact expectation under the true law (0 is perfect; negative: samples sit where
      the true density is low).
    - `lag1_mean_error`: the mean of `a_hat - a`, the lag-1 autocorrelation estimate
      `a_hat = sum x_i x_{i+1} / sum x_i^2` against `a = exp(-theta dt)`, and
      `lag1_mean_error_exact`: the same for exact series with the same `theta` (the
      estimator's own bias at this length); `lag1_rms_error(_exact)`: its RMS.
    - `variance`: the samples' mean square (1 exactly)."""
    x = jnp.asarray(x).reshape(len(x), -1)
    a = jnp.exp(-jnp.exp(jnp.asarray(y)[:, 0]) * dt)
    length = x.shape[1]
    v = 1 - a**2

    def log_density(s, a, v):
        rest = s[1:] - a * s[:-1]
        return -0.5 * (
            s[0] ** 2
            + jnp.sum(rest**2) / v
            + length * math.log(2 * math.pi)
            + (length - 1) * jnp.log(v)
        )

    expected = -0.5 * (length + length * math.log(2 * math.pi) + (length - 1) * jnp.log(v))
    lp = jax.vmap(log_density)(x, a, v)
    lag1 = lambda s: jnp.sum(s[:, 1:] * s[:, :-1], 1) / jnp.sum(s[:, :-1] ** 2, 1)  # noqa: E731
    exact = _ar1(a, length, jr.key(12345))
    return {
        "delta_log_density_per_dim": float(jnp.mean(lp - expected)) / length,
        "lag1_mean_error": float(jnp.mean(lag1(x) - a)),
        "lag1_mean_error_exact": float(jnp.mean(lag1(exact) - a)),
        "lag1_rms_error": float(jnp.sqrt(jnp.mean((lag1(x) - a) ** 2))),
        "lag1_rms_error_exact": float(jnp.sqrt(jnp.mean((lag1(exact) - a) ** 2))),
        "variance": float(jnp.mean(x**2)),
    }
