"""Predictor-corrector sampling (Song et al. 2021, sec. 4.2, algorithms 2 and 3)."""

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr

from .._checks import check_int, check_positive
from ._base import BATCH_AXIS, AbstractSampler, plain
from ._euler_maruyama import euler_maruyama_step, scan_steps
from ._grids import time_grid

PREDICTORS = ("reverse_diffusion", "euler_maruyama")


class PredictorCorrector(AbstractSampler):
    """Predictor-corrector sampling (Song et al. 2021, algorithms 2 and 3): at each time a
    Langevin corrector then a predictor step of the reverse SDE.

    The corrector's step is `eps = 2 alpha (snr ||z|| / ||score||)^2` with `alpha = a^2`, the
    squared signal coefficient of one forward step, and the norms averaged over the batch (as in
    Song et al.'s code). With per-example norms the step would depend on `x` and explode where
    the score nearly vanishes (in two dimensions, near every mode), biasing the chain. Its
    `sample_one` therefore runs under `jax.vmap(..., axis_name=BATCH_AXIS)`, as `sgm.sample`
    does; a batch of one falls back to per-example norms.

    **Arguments:**

    - `steps`: number of predictor steps.
    - `snr`: the corrector's signal-to-noise ratio `r`.
    - `corrector_steps`: Langevin steps per time (0 gives the predictor alone).
    - `predictor`: `"reverse_diffusion"` (Song et al.'s discretisation of the forward SDE,
      eq. 46) or `"euler_maruyama"`.
    - `denoise`, `t_end`, `unroll`: as for `EulerMaruyama`.
    """

    steps: int = eqx.field(static=True, default=1000, converter=plain)
    snr: float = eqx.field(static=True, default=0.16, converter=plain)
    corrector_steps: int = eqx.field(static=True, default=1, converter=plain)
    predictor: str = eqx.field(static=True, default="reverse_diffusion")
    denoise: bool = eqx.field(static=True, default=True)
    t_end: float | None = eqx.field(static=True, default=None, converter=plain)
    unroll: int = eqx.field(static=True, default=1, converter=plain)

    def __check_init__(self):
        check_int("PredictorCorrector.steps", self.steps)
        check_positive("PredictorCorrector.snr", self.snr)
        check_int("PredictorCorrector.corrector_steps", self.corrector_steps, minimum=0)
        if self.predictor not in PREDICTORS:
            raise ValueError(
                f"PredictorCorrector.predictor must be one of {PREDICTORS}, got {self.predictor!r}."
            )

    def _langevin(self, score, sde, t, t_next, x, key):
        alpha = sde.transition(t_next, t)[0] ** 2
        grad = score(t, x)
        z = jr.normal(key, x.shape)
        # Norms averaged over the batch, as in Song et al.'s reference code: a per-example ratio
        # makes the step depend on x and explodes where the score nearly vanishes (in 2-D, at
        # every mode and saddle), which biases the chain towards those regions.
        noise_norm = lax.pmean(jnp.sqrt(jnp.sum(z**2)), BATCH_AXIS)
        grad_norm = lax.pmean(jnp.sqrt(jnp.sum(grad**2)), BATCH_AXIS)
        eps = 2 * alpha * (self.snr * noise_norm / jnp.maximum(grad_norm, 1e-12)) ** 2
        return x + eps * grad + jnp.sqrt(2 * eps) * z

    def _predict(self, score, sde, t, t_next, x, z):
        if self.predictor == "euler_maruyama":
            return euler_maruyama_step(score, sde, t, t_next, x, z)
        # Song et al.'s reverse diffusion predictor (eq. 46) through the forward transition
        # `x_t = a x_(t_next) + b eps`.
        a, b = sde.transition(t_next, t)
        return x - (a - 1) * x + b**2 * score(t, x) + b * z

    def sample_one(self, score, sde, x1, *, key):
        ts = time_grid(sde, self.steps, self.t_end)

        def step(x, inputs):
            t, t_next, k = inputs
            ckeys = jr.split(k, self.corrector_steps + 1)
            for i in range(self.corrector_steps):
                x = self._langevin(score, sde, t, t_next, x, ckeys[i])
            z = jr.normal(ckeys[-1], x.shape)
            return self._predict(score, sde, t, t_next, x, z)

        x = scan_steps(step, x1, ts, key, self.unroll)
        return self._finish(score, sde, ts[-1], x, self.steps * (self.corrector_steps + 1))
