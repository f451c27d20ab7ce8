"""EDM's Heun sampler (Karras et al. 2022, *Elucidating the design space of diffusion-based
generative models*, algorithm 2)."""

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr

from .._checks import check_float, check_int, check_positive
from .._sde import AbstractSDE
from ._base import AbstractSampler, few_steps_at_large_sigma, plain
from ._grids import SIGMA_END, karras_sigmas, ode_end_time, time_at_sigma


class HeunSampler(AbstractSampler):
    """Karras et al. (2022, algorithm 2) deterministic second-order Heun sampler of the
    probability-flow ODE, with their noise levels (eq. 5)
    `sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho` and
    optional stochastic churn (their algorithm 2 with `S_churn > 0`). It acts on Karras et
    al.'s scaled state `x / m` at the noise level `sigma = s / m`.

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

    steps: int = eqx.field(static=True, default=18, converter=plain)
    rho: float = eqx.field(static=True, default=7.0, converter=plain)
    churn: float = eqx.field(static=True, default=0.0, converter=plain)
    churn_tmin: float = eqx.field(static=True, default=0.0, converter=plain)
    churn_tmax: float = eqx.field(static=True, default=float("inf"), converter=plain)
    churn_noise: float = eqx.field(static=True, default=1.0, converter=plain)
    denoise: bool = eqx.field(static=True, default=True)
    t_end: float | None = eqx.field(static=True, default=None, converter=plain)
    sigma_end: float | None = eqx.field(static=True, default=SIGMA_END, converter=plain)

    def __check_init__(self):
        check_int("HeunSampler.steps", self.steps)
        if self.steps < 2:
            raise ValueError("HeunSampler needs steps >= 2.")
        check_positive("HeunSampler.rho", self.rho)
        check_float("HeunSampler.churn", self.churn, at_least=0.0)
        check_positive("HeunSampler.sigma_end", self.sigma_end, none=True)

    def sigmas(self, sde: AbstractSDE):
        """The `steps` noise levels `sigma_max > ... > sigma_min`."""
        return karras_sigmas(
            sde, self.steps, ode_end_time(sde, self.t_end, self.sigma_end), self.rho
        )

    def sample_one(self, score, sde, x1, *, key):
        t_end = ode_end_time(sde, self.t_end, self.sigma_end)
        sigmas = karras_sigmas(sde, self.steps, t_end, self.rho)
        x = x1 / sde.marginal(sde.t1)[0]  # Karras et al.'s scaled state x / m
        data_shape = x1.shape

        def denoised(sigma, x_hat):
            t = time_at_sigma(sde, sigma, t_end)
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
        return few_steps_at_large_sigma(
            self, sde, 18, "-1.2 nats of mean log-density at 10 levels", "use DPMSolver or more"
        )
