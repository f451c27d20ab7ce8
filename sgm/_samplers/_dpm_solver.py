"""DPM-Solver++ multistep (Lu et al. 2022, *DPM-Solver++: fast solver for guided sampling of
diffusion probabilistic models*, algorithm 2)."""

from typing import ClassVar

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp

from ._base import few_steps_at_large_sigma, plain
from ._grids import SIGMA_END, TimeGrid
from ._multistep import AbstractMultistepSolver


class DPMSolver(AbstractMultistepSolver):
    """DPM-Solver++ multistep (Lu et al. 2022, *DPM-Solver++*, algorithm 2): an exponential
    integrator of the probability-flow ODE in the data-prediction form, order 1 (DDIM) or 2,
    one score evaluation per step. With `h = lambda_(i+1) - lambda_i` and `r = h_(i-1) / h`,
    the step is `x_(i+1) = (s_(i+1) / s_i) x_i - m_(i+1) (e^(-h) - 1) D_used` with
    `D_used = (1 + 1/(2r)) D_i - D_(i-1) / (2r)` at order 2 and `D_i` at order 1.

    **Arguments:**

    - `steps`: number of steps (= NFE, plus one with `denoise`).
    - `order`: 1 or 2.
    - `time_grid`: `"karras"` (Karras et al.'s `sigma^(1/rho)` spacing), `"logsnr"` (uniform
      in `lambda`, Lu et al.'s choice), `"time_uniform"` or `"time_quadratic"`; compared in
      `benchmarks/sampler_accuracy.py`. Grids whose step ratio jumps (time-uniform near
      `t_end`) make the multistep extrapolation unstable.
    - `rho`: the exponent of the Karras grid.
    - `lower_order_final`: use first order in the last step when `steps < 15` (Lu et al.'s
      stabilising choice).
    - `denoise`: finish with Tweedie's formula at the end time.
    - `t_end`: end time; `None` uses `sde.sampling_eps`.
    - `sigma_end`: stop no lower than this noise level `s/m` (see `ode_end_time`; `None`:
      at `t_end`). The default `SIGMA_END` is below VP's noise level at its `sampling_eps`,
      so it leaves VP unchanged and makes subVP give VP's samples (see
      `benchmarks/sampler_accuracy.py`).

    Returns the scaled state `x / m` at the end time, like every sampler.
    """

    # equinox's AbstractClassVar is made concrete by a ClassVar, which pyright does not model
    orders: ClassVar[tuple[int, ...]] = (1, 2)  # pyright: ignore[reportIncompatibleVariableOverride]
    steps: int = eqx.field(static=True, default=20, converter=plain)
    order: int = eqx.field(static=True, default=2, converter=plain)
    time_grid: TimeGrid = eqx.field(static=True, default="karras")
    rho: float = eqx.field(static=True, default=7.0, converter=plain)
    lower_order_final: bool = eqx.field(static=True, default=True)
    denoise: bool = eqx.field(static=True, default=False)
    t_end: float | None = eqx.field(static=True, default=None, converter=plain)
    sigma_end: float | None = eqx.field(static=True, default=SIGMA_END, converter=plain)

    def sample_one(self, score, sde, x1, *, key):
        ts, lam = self._times_and_lambdas(sde)
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
        return few_steps_at_large_sigma(
            self, sde, 15, "-0.8 nats of mean log-density at 10 steps", "use 15-20 steps"
        )
