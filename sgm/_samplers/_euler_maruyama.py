"""Euler-Maruyama on the reverse-time SDE (Song et al. 2021, eq. 6)."""

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array

from .._checks import check_int
from .._sde import AbstractSDE
from ._base import AbstractSampler, Score, plain
from ._grids import time_grid


def euler_maruyama(score: Score, sde: AbstractSDE, t, t_next, x: Array) -> tuple[Array, Array]:
    """`(mean, std)` of one Euler-Maruyama step of the reverse-time SDE (Song et al. 2021,
    eq. 6) from `t` to `t_next < t`; the step is `mean + std z` with `z ~ N(0, I)`."""
    dt = t_next - t
    return x + sde.reverse_drift(score, t, x) * dt, sde.diffusion(t) * jnp.sqrt(-dt)


def euler_maruyama_step(score, sde, t, t_next, x, z):
    """One Euler-Maruyama step with the standard normal draw `z`."""
    mean, std = euler_maruyama(score, sde, t, t_next, x)
    return mean + std * z


def scan_steps(step, x1, ts, key, unroll):
    """`step(x, (t, t_next, key))` over the grid `ts`, one key per step."""
    keys = jr.split(key, len(ts) - 1)
    x, _ = lax.scan(
        lambda x, inputs: (step(x, inputs), None), x1, (ts[:-1], ts[1:], keys), unroll=unroll
    )
    return x


class EulerMaruyama(AbstractSampler):
    """Euler-Maruyama on the reverse-time SDE (Song et al. 2021, eq. 6) on the equally spaced
    grid `time_grid`.

    **Arguments:**

    - `steps`: number of steps from `t1` to `t_end` (one score evaluation each).
    - `denoise`: finish with Tweedie's denoising step (one more evaluation).
    - `t_end`: end time; `None` uses `sde.sampling_eps`.
    - `unroll`: passed to `lax.scan`.
    """

    steps: int = eqx.field(static=True, default=1000, converter=plain)
    denoise: bool = eqx.field(static=True, default=True)
    t_end: float | None = eqx.field(static=True, default=None, converter=plain)
    unroll: int = eqx.field(static=True, default=1, converter=plain)

    def __check_init__(self):
        check_int("EulerMaruyama.steps", self.steps)

    def sample_one(self, score, sde, x1, *, key):
        ts = time_grid(sde, self.steps, self.t_end)

        def step(x, inputs):
            t, t_next, k = inputs
            return euler_maruyama_step(score, sde, t, t_next, x, jr.normal(k, x.shape))

        x = scan_steps(step, x1, ts, key, self.unroll)
        return self._finish(score, sde, ts[-1], x, self.steps)
