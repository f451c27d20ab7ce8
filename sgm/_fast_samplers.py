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

from ._samplers import AbstractSampler, _check_steps, _check_t_end, end_time
from ._sde import AbstractSDE


def _time_at_sigma(sde: AbstractSDE, sigma, t_lo: float):
    """The `t` in `[t_lo, t1]` with `s(t) / m(t) = sigma`."""
    return jnp.clip(sde.time_at_log_snr(-2 * jnp.log(sigma)), t_lo, sde.t1)


def _half_log_snr(sde, t):
    return 0.5 * sde.log_snr(t)


def _few_steps_at_large_sigma(sampler, sde, least: int, measured: str, advice: str):
    """The warning for fewer than `least` steps where Karras et al.'s largest noise level
    `sigma_max = s / m` at `t1` is large (148 for the VP and subVP SDEs, 50 for the default VE),
    measured on a 2-D mixture (`benchmarks/sampler_accuracy.py`)."""
    sigma_max = float(jnp.exp(-0.5 * sde.log_snr(sde.t1)))
    if sampler.steps >= least or sigma_max < 100:
        return None
    return (
        f"{type(sampler).__name__} with {sampler.steps} steps on {type(sde).__name__}, whose "
        f"sigma_max = s/m is {sigma_max:.0f} at t1, measured far off ({measured} on a 2-D "
        f"mixture under VP); {advice}."
    )


def karras_sigmas(sde: AbstractSDE, n: int, t_end: float, rho: float):
    """Karras et al. (2022, eq. 5): `n` noise levels `sigma = s/m` from `sigma(t1)` down to
    `sigma(t_end)`, evenly spaced in `sigma^(1/rho)`."""
    sig = lambda t: sde.marginal(t)[1] / sde.marginal(t)[0]  # noqa: E731
    hi, lo = sig(sde.t1) ** (1 / rho), sig(t_end) ** (1 / rho)
    return (hi + jnp.linspace(0, 1, n) * (lo - hi)) ** rho


SIGMA_END = 0.01
TimeGrid = Literal["logsnr", "karras", "time_uniform", "time_quadratic"]
_GRIDS = ("logsnr", "karras", "time_uniform", "time_quadratic")


def _check_sigma_end(name: str, sigma_end) -> None:
    if sigma_end is not None and not (isinstance(sigma_end, float | int) and sigma_end > 0):
        raise ValueError(f"{name}: sigma_end must be a positive float or None, got {sigma_end!r}.")


def ode_end_time(sde: AbstractSDE, t_end: float | None, sigma_end: float | None):
    """Where a deterministic solver stops: the later of the end time (`t_end`, or the SDE's
    `sampling_eps`) and the time at which the noise level `sigma = s/m` has fallen to
    `sigma_end`. The solvers act in `(lambda, x / m)`, where every linear SDE has the same
    flow; only the noise levels matter, and below about 1% of the data's scale a step buys
    nothing (the subVP SDE reaches `sigma = 1e-4` at `t = 1e-3`, the VP SDE `0.0105`)."""
    t = end_time(sde, t_end)
    if sigma_end is None:
        return jnp.asarray(t)
    m, s = sde.marginal(t)
    return jnp.where(s / m >= sigma_end, t, _time_at_sigma(sde, sigma_end, t))


def solver_times(
    sde: AbstractSDE,
    steps: int,
    t_end: float | None,
    grid: str,
    rho: float = 7.0,
    sigma_end: float | None = None,
):
    """`steps + 1` times from `t1` down to `ode_end_time`: uniform in the half log-SNR
    `lambda` (`"logsnr"`), in Karras et al.'s `sigma^(1/rho)` (`"karras"`), in `t` or in
    `sqrt(t)`."""
    t_end_ = ode_end_time(sde, t_end, sigma_end)
    if grid == "time_uniform":
        return jnp.linspace(sde.t1, t_end_, steps + 1)
    if grid == "time_quadratic":
        return jnp.linspace(jnp.sqrt(sde.t1), jnp.sqrt(t_end_), steps + 1) ** 2
    if grid == "karras":
        sigmas = karras_sigmas(sde, steps + 1, t_end_, rho)
    else:
        lam = jnp.linspace(_half_log_snr(sde, sde.t1), _half_log_snr(sde, t_end_), steps + 1)
        sigmas = jnp.exp(-lam)
    ts = jax.vmap(lambda sig: _time_at_sigma(sde, sig, t_end_))(sigmas)
    return ts.at[0].set(sde.t1).at[-1].set(t_end_)


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
    - `sigma_end`: stop no lower than this noise level `s/m` (see `ode_end_time`; `None`:
      at `t_end`). The default 0.01 leaves VP (`sigma = 0.0105` at `t = 1e-3`) unchanged and
      makes subVP give VP's samples; measured in `benchmarks/sampler_accuracy.py`.

    Returns the scaled state `x / m` at the end time, like every sampler.
    """

    steps: int = eqx.field(static=True, default=20)
    order: int = eqx.field(static=True, default=2)
    time_grid: TimeGrid = eqx.field(static=True, default="karras")
    rho: float = eqx.field(static=True, default=7.0)
    lower_order_final: bool = eqx.field(static=True, default=True)
    denoise: bool = eqx.field(static=True, default=False)
    t_end: float | None = eqx.field(static=True, default=None)
    sigma_end: float | None = eqx.field(static=True, default=SIGMA_END)

    def __check_init__(self):
        _check_steps("DPMSolver", self.steps)
        _check_t_end("DPMSolver", self.t_end)
        _check_sigma_end("DPMSolver", self.sigma_end)
        if self.order not in (1, 2):
            raise ValueError(f"DPMSolver order must be 1 or 2, got {self.order!r}.")
        if self.time_grid not in _GRIDS:
            raise ValueError(f"unknown time_grid {self.time_grid!r}; one of {_GRIDS}.")

    def times(self, sde: AbstractSDE):
        return solver_times(sde, self.steps, self.t_end, self.time_grid, self.rho, self.sigma_end)

    def sample_one(self, score, sde, x1, *, key):
        ts = self.times(sde)
        lam = jax.vmap(lambda t: _half_log_snr(sde, t))(ts)
        final_first_order = self.lower_order_final and self.steps < 15

        def step(carry, i):
            x, d_prev, h_prev = carry
            t, t_next = ts[i], ts[i + 1]
            m_next, s_next = sde.marginal(t_next)
            h = lam[i + 1] - lam[i]
            d = sde.denoise(score, t, x)
            second = (self.order == 2) & (i > 0)
            if final_first_order:
                second = second & (i < self.steps - 1)
            r = h_prev / h
            d_used = jnp.where(second, (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * d_prev, d)
            x = (s_next / sde.marginal(t)[1]) * x - m_next * jnp.expm1(-h) * d_used
            return (x, d, h), None

        init = (x1, jnp.zeros_like(x1), jnp.ones(()))
        (x, _, _), _ = lax.scan(step, init, jnp.arange(self.steps))
        return self._finish(score, sde, ts[-1], x, self.steps)

    def poor_combination(self, sde):
        return _few_steps_at_large_sigma(
            self, sde, 15, "-0.8 nats of mean log-density at 10 steps", "use 15-20 steps"
        )


def _unipc_coefficients(p: int, rks, hh, variant: str):
    """UniPC's `R_p(h)` rows `r_k^(i-1)` and `b = h phi_(i+1)(h) i! / B(h)` (Zhao et al. 2023,
    algorithm 1; `hh = -h` for the data prediction), for orders `i = 1..p`."""
    h_phi_1 = jnp.expm1(hh)
    b_h = hh if variant == "bh1" else h_phi_1
    h_phi_k, factorial = h_phi_1 / hh - 1, 1.0
    rows, b = [], []
    for i in range(1, p + 1):
        rows.append(rks ** (i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return jnp.stack(rows), jnp.stack(b), h_phi_1, b_h


class UniPC(AbstractSampler):
    """UniPC (Zhao et al. 2023, *UniPC: a unified predictor-corrector framework for fast
    sampling of diffusion models*): a multistep exponential integrator of the probability-flow
    ODE in the data-prediction form (UniP, order `p`) followed by the corrector UniC, which
    reuses the score evaluation at the predicted point, needed for the next step anyway, to
    raise the order to `p + 1` at no extra cost. NFE = `steps` (+1 with `denoise`).

    **Arguments:**

    - `steps`: number of steps.
    - `order`: the predictor's order, 1 to 3 (the first steps warm up from order 1).
    - `variant`: `"bh2"` (`B(h) = e^h - 1`) or `"bh1"` (`B(h) = h`).
    - `time_grid`, `rho`: as for `DPMSolver`; uniform in log-SNR by default, measured the
      most robust with this solver in `benchmarks/sampler_accuracy.py`.
    - `lower_order_final`: lower the order over the last steps (to 1 in the last).
    - `denoise`, `t_end`, `sigma_end`: as for `DPMSolver`.
    """

    steps: int = eqx.field(static=True, default=20)
    order: int = eqx.field(static=True, default=3)
    variant: Literal["bh1", "bh2"] = eqx.field(static=True, default="bh2")
    time_grid: TimeGrid = eqx.field(static=True, default="logsnr")
    rho: float = eqx.field(static=True, default=7.0)
    lower_order_final: bool = eqx.field(static=True, default=True)
    denoise: bool = eqx.field(static=True, default=False)
    t_end: float | None = eqx.field(static=True, default=None)
    sigma_end: float | None = eqx.field(static=True, default=SIGMA_END)

    def __check_init__(self):
        _check_steps("UniPC", self.steps)
        _check_t_end("UniPC", self.t_end)
        _check_sigma_end("UniPC", self.sigma_end)
        if self.order not in (1, 2, 3):
            raise ValueError(f"UniPC order must be 1, 2 or 3, got {self.order!r}.")
        if self.variant not in ("bh1", "bh2"):
            raise ValueError(f"UniPC variant must be 'bh1' or 'bh2', got {self.variant!r}.")
        if self.time_grid not in _GRIDS:
            raise ValueError(f"unknown time_grid {self.time_grid!r}; one of {_GRIDS}.")

    def times(self, sde: AbstractSDE):
        return solver_times(sde, self.steps, self.t_end, self.time_grid, self.rho, self.sigma_end)

    def _order_at(self, i):
        p = jnp.minimum(self.order, i + 1)
        return jnp.minimum(p, self.steps - i) if self.lower_order_final else p

    def _update(self, sde, ts, lam, i, x, m, corrected_with=None):
        """From `ts[i]` to `ts[i + 1]`: UniP's prediction, or with `corrected_with` (the data
        prediction at the predicted point) UniC's correction. `m = (m_i, m_(i-1), m_(i-2))`."""
        h = lam[i + 1] - lam[i]
        m_next, s_next = sde.marginal(ts[i + 1])
        k = jnp.arange(1, 3)
        rks = jnp.where(i - k >= 0, (lam[jnp.maximum(i - k, 0)] - lam[i]) / h, -k.astype(h.dtype))
        d1s = [(m[j] - m[0]) / rks[j - 1] for j in (1, 2)]
        p_i = self._order_at(i)
        outs = []
        for p in range(1, self.order + 1):
            rows, b, h_phi_1, b_h = _unipc_coefficients(
                p, jnp.append(rks[: p - 1], 1.0), -h, self.variant
            )
            base = (s_next / sde.marginal(ts[i])[1]) * x - m_next * h_phi_1 * m[0]
            if corrected_with is None:
                if p == 1:
                    res = 0.0
                else:
                    rho = jnp.array([0.5]) if p == 2 else jnp.linalg.solve(rows[:-1, :-1], b[:-1])
                    res = sum(rho[j] * d1s[j] for j in range(p - 1))
            else:
                rho = jnp.array([0.5]) if p == 1 else jnp.linalg.solve(rows, b)
                res = sum(rho[j] * d1s[j] for j in range(p - 1))
                res = res + rho[p - 1] * (corrected_with - m[0])
            outs.append(base - m_next * b_h * res)
        return jnp.select([p_i == p for p in range(1, self.order + 1)], outs, outs[0])

    def sample_one(self, score, sde, x1, *, key):
        ts = self.times(sde)
        lam = jax.vmap(lambda t: _half_log_snr(sde, t))(ts)
        x = x1
        d = sde.denoise(score, ts[0], x)

        def step(carry, i):
            x, m = carry
            x_pred = self._update(sde, ts, lam, i, x, m)
            d_next = sde.denoise(score, ts[i + 1], x_pred)
            x_corr = self._update(sde, ts, lam, i, x, m, corrected_with=d_next)
            return (x_corr, (d_next, m[0], m[1])), None

        m = (d, jnp.zeros_like(d), jnp.zeros_like(d))
        (x, m), _ = lax.scan(step, (x, m), jnp.arange(self.steps - 1))
        x = self._update(sde, ts, lam, self.steps - 1, x, m)  # the last step: no evaluation
        return self._finish(score, sde, ts[-1], x, self.steps)


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
    - `t_end`, `sigma_end`: the last level `sigma_min` is the noise level at
      `ode_end_time(sde, t_end, sigma_end)`; see `DPMSolver`. Without `denoise` the sample is
      the scaled state `x / m` there.
    """

    steps: int = eqx.field(static=True, default=18)
    rho: float = eqx.field(static=True, default=7.0)
    churn: float = eqx.field(static=True, default=0.0)
    churn_tmin: float = eqx.field(static=True, default=0.0)
    churn_tmax: float = eqx.field(static=True, default=float("inf"))
    churn_noise: float = eqx.field(static=True, default=1.0)
    denoise: bool = eqx.field(static=True, default=True)
    t_end: float | None = eqx.field(static=True, default=None)
    sigma_end: float | None = eqx.field(static=True, default=SIGMA_END)

    def __check_init__(self):
        _check_steps("HeunSampler", self.steps)
        _check_t_end("HeunSampler", self.t_end)
        _check_sigma_end("HeunSampler", self.sigma_end)
        if self.steps < 2:
            raise ValueError("HeunSampler needs steps >= 2.")
        if self.churn < 0 or self.rho <= 0:
            raise ValueError(f"need churn >= 0 and rho > 0, got {self.churn}, {self.rho}.")

    def sigmas(self, sde: AbstractSDE):
        return karras_sigmas(
            sde, self.steps, ode_end_time(sde, self.t_end, self.sigma_end), self.rho
        )

    def sample_one(self, score, sde, x1, *, key):
        t_end = ode_end_time(sde, self.t_end, self.sigma_end)
        sigmas = karras_sigmas(sde, self.steps, t_end, self.rho)
        x = x1 / sde.marginal(sde.t1)[0]  # Karras et al.'s scaled state x / m
        data_shape = x1.shape

        def denoised(sigma, x_hat):
            t = _time_at_sigma(sde, sigma, t_end)
            return sde.denoise(score, t, sde.marginal(t)[0] * x_hat)

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

        keys = jr.split(key, self.steps - 1)
        x, _ = lax.scan(step, x, (sigmas[:-1], sigmas[1:], keys))
        return self._finish(score, sde, t_end, sde.marginal(t_end)[0] * x, 2 * (self.steps - 1))

    def poor_combination(self, sde):
        return _few_steps_at_large_sigma(
            self, sde, 18, "-1.2 nats of mean log-density at 10 levels", "use DPMSolver or more"
        )


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

    def sample_one(self, score, sde, x1, *, key):
        # Reverse time as tau = -t runs forward from -t1 to -t_end:
        # dx = -(f - g^2 score)(t) dtau + g(t) dW(tau).
        t_end = end_time(sde, self.t_end)
        x0, bkey, data_shape = x1, key, x1.shape
        drift = diffrax.ODETerm(lambda tau, x, args: -sde.reverse_drift(score, -tau, x))
        diffusion = lambda tau, x, args: lx.DiagonalLinearOperator(  # noqa: E731
            jnp.full(data_shape, sde.diffusion(-tau))
        )
        brownian = diffrax.VirtualBrownianTree(
            -sde.t1,
            -t_end,
            tol=(sde.t1 - t_end) / (4 * self.steps),
            shape=data_shape,
            key=bkey,
            levy_area=diffrax.SpaceTimeLevyArea,
        )
        terms = diffrax.MultiTerm(drift, diffrax.ControlTerm(diffusion, brownian))
        sol = diffrax.diffeqsolve(
            terms,
            self.solver,
            -sde.t1,
            -t_end,
            dt0=(sde.t1 - t_end) / self.steps,
            y0=x0,
            saveat=diffrax.SaveAt(t1=True),
            max_steps=self.steps + 1,
        )
        nfe = self.steps * drift_evaluations(self.solver)
        return self._finish(score, sde, t_end, sol.ys[0], nfe)


def drift_evaluations(solver: diffrax.AbstractSRK) -> int:
    """Drift (hence score) evaluations per step of a stochastic Runge-Kutta tableau."""
    tableau = solver.tableau
    ignored = 0 if tableau.ignore_stage_f is None else int(sum(tableau.ignore_stage_f))
    return len(tableau.b_sol) - ignored
