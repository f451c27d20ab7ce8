"""The reverse-time SDE (Song et al. 2021, eq. 6) solved with diffrax's stochastic Runge-Kutta
methods for additive noise."""

import diffrax
import equinox as eqx
import jax.numpy as jnp
import lineax as lx

from .._checks import check_int
from ._base import AbstractSampler, end_time, plain


def drift_evaluations(solver: diffrax.AbstractSRK) -> int:
    """Drift (hence score) evaluations per step of a stochastic Runge-Kutta tableau."""
    tableau = solver.tableau
    ignored = 0 if tableau.ignore_stage_f is None else int(sum(tableau.ignore_stage_f))
    return len(tableau.b_sol) - ignored


class ReverseSDESolver(AbstractSampler):
    """The reverse-time SDE solved with a diffrax stochastic Runge-Kutta method for additive
    noise (`diffrax.SRA1`, `diffrax.ShARK`, ...; Roessler 2010, Foster et al. 2023) on a fixed
    grid, with space-time Levy area. Validated against `EulerMaruyama` on closed forms.

    **Arguments:**

    - `solver`: a diffrax SDE solver for additive noise.
    - `steps`, `denoise`, `t_end`: as for `EulerMaruyama`.
    """

    solver: diffrax.AbstractSRK = diffrax.SRA1()
    steps: int = eqx.field(static=True, default=100, converter=plain)
    denoise: bool = eqx.field(static=True, default=True)
    t_end: float | None = eqx.field(static=True, default=None, converter=plain)

    def __check_init__(self):
        check_int("ReverseSDESolver.steps", self.steps)
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
        assert sol.ys is not None  # SaveAt(t1=True)
        return self._finish(score, sde, t_end, sol.ys[0], nfe)
