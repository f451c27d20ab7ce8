"""Figures: sample grids, scatter plots, loss curves, SDE marginals. File output lives here,
outside the numerical core; every figure is written atomically (`sgm.save_model`'s writer).

Figures are drawn on `matplotlib.figure.Figure` objects, not through `pyplot`: matplotlib is
imported when a figure is drawn, and the backend of an interactive session is never changed.
"""

from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write


def _subplots(*args, figsize) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args)


def _save(fig, path) -> Path:
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=110, bbox_inches="tight"))
    return path


def image_grid(images, ncol: int | None = None) -> np.ndarray:
    """Tiles `(n, C, H, W)` images in [0, 1] into one `(rows*H, cols*W, C)` array."""
    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    n, c, h, w = images.shape
    ncol = ncol or int(np.ceil(np.sqrt(n)))
    nrow = int(np.ceil(n / ncol))
    grid = np.ones((nrow * (h + 1) + 1, ncol * (w + 1) + 1, c), np.float32)
    for i in range(n):
        r, k = divmod(i, ncol)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + k * (w + 1) : 1 + k * (w + 1) + w] = images[
            i
        ].transpose(1, 2, 0)
    return grid


def save_image_grid(images, path, *, title: str | None = None, ncol: int | None = None) -> Path:
    """Saves images `(n, C, H, W)` with values in [0, 1] as one grid."""
    grid = image_grid(images, ncol)
    fig, ax = _subplots(figsize=(4, 4 * grid.shape[0] / grid.shape[1]))
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def save_scatter(points, path, *, reference=None, title: str | None = None, lim=None) -> Path:
    """Saves 2-D points, optionally over reference points (the data) in grey."""
    fig, ax = _subplots(figsize=(3.6, 3.6))
    if reference is not None:
        ref = np.asarray(reference)
        ax.scatter(ref[:, 0], ref[:, 1], s=2, c="0.75", label="data")
    pts = np.asarray(points)
    ax.scatter(pts[:, 0], pts[:, 1], s=2, c="C0", label="samples")
    if lim is not None:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def save_series(series, path, *, reference=None, title: str | None = None) -> Path:
    """Saves a few series `(n, L)` as lines, optionally with reference series in grey."""
    fig, ax = _subplots(figsize=(5, 2.6))
    if reference is not None:
        for s in np.asarray(reference)[:8]:
            ax.plot(s, c="0.7", lw=0.8)
    for s in np.asarray(series)[:8]:
        ax.plot(s, lw=0.9)
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


_BOUND_UNITS = {"bits_per_dim": "bits/dim", "nats_per_dim": "nats/dim"}


def save_loss_curve(history: dict, path) -> Path:
    """Training loss (and held-out loss where recorded) against step; where the history
    holds held-out variational bound readings (`eval_bound_bits_per_dim` or
    `eval_bound_nats_per_dim`), a second panel shows them with +-2 standard errors."""
    unit = next((u for u in _BOUND_UNITS if history.get(f"eval_bound_{u}")), None)
    if unit is None:
        fig, ax = _subplots(figsize=(4.5, 3))
    else:
        fig, (ax, bx) = _subplots(1, 2, figsize=(9, 3))
        values = np.asarray(history[f"eval_bound_{unit}"])
        se = np.asarray(history.get(f"eval_bound_{unit}_se", np.zeros_like(values)))
        steps = np.asarray(history["eval_step"])[-len(values) :]  # readings since it was on
        bx.errorbar(steps, values, yerr=2 * se, fmt="o-", c="C1", capsize=2)
        bx.set_xlabel("step")
        bx.set_ylabel(f"variational bound ({_BOUND_UNITS[unit]})")
        bx.set_title("held-out bound (EMA), +-2 s.e.", fontsize=9)
    ax.plot(history["step"], history["loss"], label="train")
    if history.get("eval_step"):
        ax.plot(history["eval_step"], history["eval_loss"], "o-", label="held-out (EMA)")
    ax.set_xlabel("step")
    ax.set_ylabel("DSM loss")
    ax.set_yscale("log")
    ax.legend()
    return _save(fig, path)


def save_marginals(sde, path, *, x0=(-1.0, 0.0, 1.0)) -> Path:
    """The perturbation kernels of `sde`: mean `m(t) x0` with `+-2 s(t)` bands, and `s(t)`."""
    import jax
    import jax.numpy as jnp

    t = jnp.linspace(sde.t0, sde.t1, 200)
    m, s = (np.asarray(a) for a in jax.vmap(sde.marginal)(t))
    fig, (a, b) = _subplots(1, 2, figsize=(8, 3))
    for k, v in enumerate(x0):
        a.plot(t, m * v, c=f"C{k}", label=f"x0 = {v:g}")
        a.fill_between(t, m * v - 2 * s, m * v + 2 * s, color=f"C{k}", alpha=0.15)
    a.set_xlabel("t")
    a.set_title(f"{type(sde).__name__}: m(t) x0 +- 2 s(t)", fontsize=9)
    a.legend(fontsize=7)
    b.plot(t, s, label="s(t)")
    b.plot(t, m, label="m(t)")
    b.set_yscale("log")
    b.set_xlabel("t")
    b.legend(fontsize=7)
    return _save(fig, path)


def save_parameter_response(
    param, stat, path, *, reference=None, exact=None, xlabel="y", ylabel="statistic", title=None
) -> Path:
    """A statistic of conditional samples against the parameter they were drawn at: `stat`
    (one per sample) and `reference` `(param, stat)` of real data as points, `exact`
    `(param_grid, values)` as a line."""
    fig, ax = _subplots(figsize=(4.5, 3.2))
    if reference is not None:
        ax.scatter(*reference, s=6, c="0.6", label="data")
    ax.scatter(param, stat, s=6, c="C0", label="samples")
    if exact is not None:
        ax.plot(*exact, c="k", lw=1.2, label="exact")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)
