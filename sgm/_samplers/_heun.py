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

# Karras et al. (2022, algorithm 2): the churn per step at most doubles the noise variance.
_GAMMA_MAX = 2**0.5 - 1


class HeunSampler(AbstractSampler):
    """Karras et al.'s (2022) second-order Heun sampler of the probability-flow ODE: their
    algorithm 1 (deterministic, `churn = 0`, the default) and algorithm 2 (stochastic, with
    churn), on their noise levels (eq. 5)
    `sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`.
    It acts on the scaled state `x / m` at the noise level `sigma = s / m`, where every linear
    SDE (VP, subVP, VE, ...) has the same flow `dx/dsigma = (x - D(x; sigma)) / sigma` with `D`
    Tweedie's denoiser.

    With churn, each step first raises the noise level from `sigma_i` to
    `sigma_hat = (1 + gamma_i) sigma_i`, `gamma_i = min(S_churn / N, sqrt(2) - 1)` for
    `S_tmin <= sigma_i <= S_tmax` (else 0), by adding fresh noise
    `sqrt(sigma_hat^2 - sigma_i^2) S_noise z` to the scaled state (noise in units of `sigma`,
    so the same step under every SDE), then takes the Heun step from `sigma_hat` to
    `sigma_{i+1}`. The noise level is never raised above `sigma(t1)`, where the score ends, and
    the final step to `sigma = 0` (`denoise`) takes no churn.

    **Arguments:**

    - `steps`: number of noise levels `N`; NFE is `2 N - 1` (the last step, to `sigma = 0`, is
      an Euler step: Tweedie's denoising), with churn or without. Below 18 levels at a large
      `sigma_max` (VP, subVP, rectified flow: 148-199) the steps in `(sigma, x / m)` are far
      off (-1.2 to -5 nats of mean log-density at 10 levels on the mixtures of
      `benchmarks/sampler_accuracy.py`); for 20 NFE or fewer take Heun steps in the normalised
      state, `ProbabilityFlowODE(solver=diffrax.Heun(), steps=9, sigma_end=0.01)` (19 NFE,
      within 0.08 nats there under VP, VE, subVP, rectified flow and the trigonometric path).
    - `rho`: the schedule's exponent (7 in the paper).
    - `churn`, `churn_tmin`, `churn_tmax`, `churn_noise`: `S_churn`, `S_tmin`, `S_tmax`
      (noise levels `sigma = s / m`) and `S_noise`; `churn = 0` is deterministic. With exact
      scores churn only adds error that later steps must remove (it corrects a learned
      score's errors, Karras et al. sec. 4): on a 2-D mixture `churn = 5` at 64 levels is
      within 0.03 nats of the deterministic sampler, at 32 levels 0.05-0.1 nats worse.
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
        check_float("HeunSampler.churn_tmin", self.churn_tmin, at_least=0.0)
        check_positive("HeunSampler.churn_noise", self.churn_noise)
        if not (isinstance(self.churn_tmax, int | float) and self.churn_tmax > self.churn_tmin):
            raise ValueError(
                f"HeunSampler.churn_tmax must be a number above churn_tmin={self.churn_tmin} "
                f"(the window of noise levels that get churn), got {self.churn_tmax!r}."
            )
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

        gamma = min(self.churn / self.steps, _GAMMA_MAX)

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
        if self.churn > 0 and self.churn / self.steps > _GAMMA_MAX:
            return (
                f"HeunSampler churn={self.churn:g} at {self.steps} steps: gamma = churn / steps "
                f"is capped at sqrt(2) - 1 (Karras et al. 2022, algorithm 2), so churn above "
                f"{_GAMMA_MAX * self.steps:.1f} adds nothing; lower it or use more steps."
            )
        if self.churn > 0 and self.steps < 64:
            return (
                f"HeunSampler with churn at {self.steps} steps, measured far off (-0.10 to -0.17 "
                "nats of mean log-density at 32 levels on a 2-D mixture under VP with exact "
                "scores, against -0.02 without churn): churn's noise needs many steps to be "
                "removed again; use 64 or more steps, or churn=0."
            )
        return few_steps_at_large_sigma(
            self,
            sde,
            18,
            "-1.2 nats of mean log-density at 10 levels",
            "Heun steps in the normalised coordinates, ProbabilityFlowODE(solver=diffrax.Heun(), "
            "steps=9, sigma_end=0.01) (19 NFE), stay within 0.08 nats there; or more levels",
        )
