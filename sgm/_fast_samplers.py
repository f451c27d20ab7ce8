"""Few-step samplers: DPM-Solver++ (Lu et al. 2022), EDM's Heun sampler (Karras et al. 2022),
and diffrax's stochastic Runge-Kutta methods for the reverse SDE.

All are written for any linear SDE through `x_t = m(t) x_0 + s(t) eps`: the data prediction is
`D(t, x) = (x + s^2 score(t, x)) / m` (Tweedie), the half log-SNR `lambda = log(m / s)`, and
Karras et al.'s noise level `sigma = s / m` with scaled state `x / m`.
"""

from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx

from ._losses import _invert_rho
from ._samplers import AbstractSampler, _check_steps, _check_t_end, end_time, time_grid
from ._sde import AbstractSDE


def _time_at_sigma(sde: AbstractSDE, sigma, t_lo: float):
    """The `t` in `[t_lo, t1]` with `s(t) / m(t) = sigma` (`log(s^2/m^2)` is monotone)."""
    return _invert_rho(sde, 2 * jnp.log(sigma), t_lo, sde.t1)


def _data_prediction(score, sde, t, x):
    m, s = sde.marginal(t)
    return (x + s**2 * score(t, x)) / m


def _half_log_snr(sde, t):
    m, s = sde.marginal(t)
    return jnp.log(m) - jnp.log(s)


def karras_sigmas(sde: AbstractSDE, n: int, t_end: float, rho: float):
    """Karras et al. (2022, eq. 5): `n` noise levels `sigma = s/m` from `sigma(t1)` down to
    `sigma(t_end)`, evenly spaced in `sigma^(1/rho)`."""
    sig = lambda t: sde.marginal(t)[1] / sde.marginal(t)[0]  # noqa: E731
    hi, lo = sig(sde.t1) ** (1 / rho), sig(t_end) ** (1 / rho)
    return (hi + jnp.linspace(0, 1, n) * (lo - hi)) ** rho


class DPMSolver(AbstractSampler):
    """DPM-Solver++ multistep (Lu et al. 2022, *DPM-Solver++*, algorithm 2): an exponential
    integrator of the probability-flow ODE in the data-prediction form, order 1 (DDIM) or 2,
    one score evaluation per step.

    **Arguments:**

    - `steps`: number of steps (= NFE, plus one with `denoise`).
    - `order`: 1 or 2.
    - `time_grid`: `"karras"` (Karras et al.'s `sigma^(1/rho)` spacing, measured best here
      at 10-20 steps), `"logsnr"` (uniform in `lambda`, Lu et al.'s choice), `"time_uniform"`
      or `"time_quadratic"`. Grids whose step ratio jumps (time-uniform near `t_end`) make the
      multistep extrapolation unstable.
    - `rho`: the exponent of the Karras grid.
    - `lower_order_final`: use first order in the last step when `steps < 15` (Lu et al.'s
      stabilising choice).
    - `denoise`: finish with Tweedie's formula at the end time.
    - `t_end`: end time; `None` uses `sde.sampling_eps`.
    """

    steps: int = eqx.field(static=True, default=20)
    order: int = eqx.field(static=True, default=2)
    time_grid: Literal["logsnr", "karras", "time_uniform", "time_quadratic"] = eqx.field(
        static=True, default="karras"
    )
    rho: float = eqx.field(static=True, default=7.0)
    lower_order_final: bool = eqx.field(static=True, default=True)
    denoise: bool = eqx.field(static=True, default=False)
    t_end: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        _check_steps("DPMSolver", self.steps)
        _check_t_end("DPMSolver", self.t_end)
        if self.order not in (1, 2):
            raise ValueError(f"DPMSolver order must be 1 or 2, got {self.order!r}.")
        if self.time_grid not in ("logsnr", "karras", "time_uniform", "time_quadratic"):
            raise ValueError(f"unknown time_grid {self.time_grid!r}.")

    def times(self, sde: AbstractSDE):
        t_end = end_time(sde, self.t_end)
        if self.time_grid == "time_uniform":
            return time_grid(sde, self.steps, self.t_end)
        if self.time_grid == "time_quadratic":
            u = jnp.linspace(jnp.sqrt(sde.t1), jnp.sqrt(t_end), self.steps + 1)
            return u**2
        if self.time_grid == "karras":
            sigmas = karras_sigmas(sde, self.steps + 1, t_end, self.rho)
        else:
            lam = jnp.linspace(
                _half_log_snr(sde, sde.t1), _half_log_snr(sde, t_end), self.steps + 1
            )
            sigmas = jnp.exp(-lam)
        ts = jax.vmap(lambda sig: _time_at_sigma(sde, sig, t_end))(sigmas)
        return ts.at[0].set(sde.t1).at[-1].set(t_end)

    def sample_one(self, score, sde, key, data_shape):
        ts = self.times(sde)
        lam = jax.vmap(lambda t: _half_log_snr(sde, t))(ts)
        final_first_order = self.lower_order_final and self.steps < 15

        def step(carry, i):
            x, d_prev, h_prev = carry
            t, t_next = ts[i], ts[i + 1]
            m_next, s_next = sde.marginal(t_next)
            h = lam[i + 1] - lam[i]
            d = _data_prediction(score, sde, t, x)
            second = (self.order == 2) & (i > 0)
            if final_first_order:
                second = second & (i < self.steps - 1)
            r = h_prev / h
            d_used = jnp.where(second, (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * d_prev, d)
            x = (s_next / sde.marginal(t)[1]) * x - m_next * jnp.expm1(-h) * d_used
            return (x, d, h), None

        x0 = sde.prior_sample(key, data_shape)
        init = (x0, jnp.zeros(data_shape), jnp.ones(()))
        (x, _, _), _ = lax.scan(step, init, jnp.arange(self.steps))
        return self._finish(score, sde, x, self.steps)


class HeunSampler(AbstractSampler):
    """Karras et al. (2022, algorithm 2) deterministic second-order Heun sampler of the
    probability-flow ODE, with their noise levels
    `sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho` and
    optional stochastic churn (their algorithm 2 with `S_churn > 0`).

    **Arguments:**

    - `steps`: number of noise levels `N`; NFE is `2 N - 1` (the last step, to `sigma = 0`, is
      an Euler step: Tweedie's denoising).
    - `rho`: the schedule's exponent (7 in the paper).
    - `churn`, `churn_tmin`, `churn_tmax`, `churn_noise`: `S_churn`, `S_tmin`, `S_tmax`,
      `S_noise`; `churn = 0` is deterministic.
    - `denoise`: take the final step to `sigma = 0` (otherwise stop at `sigma_min`).
    - `t_end`: the time of `sigma_min`; `None` uses `sde.sampling_eps`.
    """

    steps: int = eqx.field(static=True, default=18)
    rho: float = eqx.field(static=True, default=7.0)
    churn: float = eqx.field(static=True, default=0.0)
    churn_tmin: float = eqx.field(static=True, default=0.0)
    churn_tmax: float = eqx.field(static=True, default=float("inf"))
    churn_noise: float = eqx.field(static=True, default=1.0)
    denoise: bool = eqx.field(static=True, default=True)
    t_end: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        _check_steps("HeunSampler", self.steps)
        _check_t_end("HeunSampler", self.t_end)
        if self.steps < 2:
            raise ValueError("HeunSampler needs steps >= 2.")
        if self.churn < 0 or self.rho <= 0:
            raise ValueError(f"need churn >= 0 and rho > 0, got {self.churn}, {self.rho}.")

    def sigmas(self, sde: AbstractSDE):
        return karras_sigmas(sde, self.steps, end_time(sde, self.t_end), self.rho)

    def sample_one(self, score, sde, key, data_shape):
        t_end = end_time(sde, self.t_end)
        sigmas = self.sigmas(sde)
        pkey, ckey = jr.split(key)
        m1 = sde.marginal(sde.t1)[0]
        x = sde.prior_sample(pkey, data_shape) / m1  # Karras et al.'s scaled state x / m

        def denoised(sigma, x_hat):
            t = _time_at_sigma(sde, sigma, t_end)
            return _data_prediction(score, sde, t, sde.marginal(t)[0] * x_hat)

        gamma = min(self.churn / self.steps, 2**0.5 - 1)

        def step(x, inputs):
            sigma, sigma_next, k = inputs
            if gamma > 0:
                g = jnp.where((sigma >= self.churn_tmin) & (sigma <= self.churn_tmax), gamma, 0.0)
                sigma_hat = jnp.minimum(sigma * (1 + g), sigmas[0])
                z = jr.normal(k, data_shape) * self.churn_noise
                x = x + jnp.sqrt(jnp.maximum(sigma_hat**2 - sigma**2, 0.0)) * z
            else:
                sigma_hat = sigma
            d = (x - denoised(sigma_hat, x)) / sigma_hat
            x_euler = x + (sigma_next - sigma_hat) * d
            d_next = (x_euler - denoised(sigma_next, x_euler)) / sigma_next
            return x + (sigma_next - sigma_hat) * 0.5 * (d + d_next), None

        keys = jr.split(ckey, self.steps - 1)
        x, _ = lax.scan(step, x, (sigmas[:-1], sigmas[1:], keys))
        nfe = 2 * (self.steps - 1)
        if self.denoise:
            return denoised(sigmas[-1], x), jnp.asarray(nfe + 1)
        return x * sde.marginal(t_end)[0], jnp.asarray(nfe)


class ReverseSDESolver(AbstractSampler):
    """The reverse-time SDE solved with a diffrax stochastic Runge-Kutta method for additive
    noise (`diffrax.SRA1`, `diffrax.ShARK`, ...; Roessler 2010, Foster et al. 2023) on a fixed
    grid, with space-time Levy area. Validated against `EulerMaruyama` on closed forms.

    **Arguments:**

    - `solver`: a diffrax SDE solver for additive noise.
    - `steps`, `denoise`, `t_end`: as for `EulerMaruyama`.
    """

    solver: diffrax.AbstractSolver = diffrax.SRA1()
    steps: int = eqx.field(static=True, default=100)
    denoise: bool = eqx.field(static=True, default=True)
    t_end: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        _check_steps("ReverseSDESolver", self.steps)
        _check_t_end("ReverseSDESolver", self.t_end)
        if not isinstance(self.solver, diffrax.AbstractSRK):
            raise ValueError(
                f"solver must be a diffrax stochastic Runge-Kutta solver such as diffrax.SRA1() or "
                f"diffrax.ShARK(), got {type(self.solver).__name__}."
            )

    def sample_one(self, score, sde, key, data_shape):
        # Reverse time as tau = -t runs forward from -t1 to -t_end:
        # dx = -(f - g^2 score)(t) dtau + g(t) dW(tau).
        t_end = end_time(sde, self.t_end)
        pkey, bkey = jr.split(key)
        x0 = sde.prior_sample(pkey, data_shape)
        drift = diffrax.ODETerm(lambda tau, x, args: -sde.reverse_drift(score, -tau, x))
        diffusion = lambda tau, x, args: lx.DiagonalLinearOperator(  # noqa: E731
            jnp.full(data_shape, sde.diffusion(-tau))
        )
        brownian = diffrax.VirtualBrownianTree(
            -sde.t1, -t_end, tol=(sde.t1 - t_end) / (4 * self.steps), shape=data_shape,
            key=bkey, levy_area=diffrax.SpaceTimeLevyArea,
        )  # fmt: skip
        terms = diffrax.MultiTerm(drift, diffrax.ControlTerm(diffusion, brownian))
        sol = diffrax.diffeqsolve(
            terms, self.solver, -sde.t1, -t_end, dt0=(sde.t1 - t_end) / self.steps, y0=x0,
            saveat=diffrax.SaveAt(t1=True), max_steps=self.steps + 1,
        )  # fmt: skip
        return self._finish(score, sde, sol.ys[0], self.steps * drift_evaluations(self.solver))


def drift_evaluations(solver: diffrax.AbstractSRK) -> int:
    """Drift (hence score) evaluations per step of a stochastic Runge-Kutta tableau."""
    tableau = solver.tableau
    ignored = 0 if tableau.ignore_stage_f is None else int(sum(tableau.ignore_stage_f))
    return len(tableau.b_sol) - ignored
