"""Time grids of the samplers, for any linear SDE `x_t = m(t) x_0 + s(t) eps`.

The fixed-step SDE samplers step uniformly in `t` (`time_grid`). The deterministic solvers work
with the half log-SNR `lambda = log(m / s)` and Karras et al.'s (2022, *EDM*) noise level
`sigma = s / m`; they stop at `ode_end_time` and step on `solver_times`, one of the grids in
`GRIDS`.
"""

from typing import Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, ScalarLike

from .._sde import AbstractSDE
from ._base import end_time

# The noise level `s / m` the deterministic solvers stop at by default (see `ode_end_time`).
SIGMA_END = 0.01
TimeGrid = Literal["logsnr", "karras", "time_uniform", "time_quadratic"]
GRIDS = ("logsnr", "karras", "time_uniform", "time_quadratic")


def time_grid(sde: AbstractSDE, steps: int, t_end: float | None) -> Float[Array, " steps+1"]:
    """`steps + 1` equally spaced times from `t1` down to the end time. Each step goes from
    `ts[i]` to `ts[i + 1]` with `dt = ts[i + 1] - ts[i]`, so the grid and the step agree."""
    return jnp.linspace(sde.t1, end_time(sde, t_end), steps + 1)


def half_log_snr(sde: AbstractSDE, t):
    """`lambda(t) = log(m / s)`."""
    return 0.5 * sde.log_snr(t)


def time_at_sigma(sde: AbstractSDE, sigma, t_lo: ScalarLike):
    """The `t` in `[t_lo, t1]` with `s(t) / m(t) = sigma`."""
    return jnp.clip(sde.time_at_log_snr(-2 * jnp.log(sigma)), t_lo, sde.t1)


def karras_sigmas(sde: AbstractSDE, n: int, t_end: ScalarLike, rho: float):
    """Karras et al. (2022, eq. 5): `n` noise levels `sigma = s/m` from `sigma(t1)` down to
    `sigma(t_end)`, evenly spaced in `sigma^(1/rho)`."""
    sig = lambda t: sde.marginal(t)[1] / sde.marginal(t)[0]  # noqa: E731
    hi, lo = sig(sde.t1) ** (1 / rho), sig(t_end) ** (1 / rho)
    return (hi + jnp.linspace(0, 1, n) * (lo - hi)) ** rho


def ode_end_time(sde: AbstractSDE, t_end: float | None, sigma_end: float | None):
    """Where a deterministic solver stops: the later of the end time (`t_end`, or the SDE's
    `sampling_eps`) and the time at which the noise level `sigma = s/m` has fallen to
    `sigma_end`. The solvers act in `(lambda, x / m)`, where every linear SDE has the same
    flow, so only the noise levels matter; steps below `SIGMA_END` were measured to buy
    nothing (`benchmarks/sampler_accuracy.py`)."""
    t = end_time(sde, t_end)
    if sigma_end is None:
        return jnp.asarray(t)
    m, s = sde.marginal(t)
    return jnp.where(s / m >= sigma_end, t, time_at_sigma(sde, sigma_end, t))


def solver_times(
    sde: AbstractSDE,
    steps: int,
    t_end: float | None,
    grid: str,
    rho: float = 7.0,
    sigma_end: float | None = None,
):
    """`steps + 1` times from `t1` down to `ode_end_time`: uniform in the half log-SNR
    `lambda` (`"logsnr"`, Lu et al. 2022), in Karras et al.'s `sigma^(1/rho)` (`"karras"`),
    in `t` (`"time_uniform"`) or in `sqrt(t)` (`"time_quadratic"`)."""
    t_end_ = ode_end_time(sde, t_end, sigma_end)
    if grid == "time_uniform":
        return jnp.linspace(sde.t1, t_end_, steps + 1)
    if grid == "time_quadratic":
        return jnp.linspace(jnp.sqrt(sde.t1), jnp.sqrt(t_end_), steps + 1) ** 2
    if grid == "karras":
        sigmas = karras_sigmas(sde, steps + 1, t_end_, rho)
    else:
        lam = jnp.linspace(half_log_snr(sde, sde.t1), half_log_snr(sde, t_end_), steps + 1)
        sigmas = jnp.exp(-lam)
    ts = jax.vmap(lambda sig: time_at_sigma(sde, sig, t_end_))(sigmas)
    return ts.at[0].set(sde.t1).at[-1].set(t_end_)
