"""The settings, checks and time grids that the multistep exponential integrators of the
probability-flow ODE (DPM-Solver++, Lu et al. 2022; UniPC, Zhao et al. 2023) share.

Both are written for any linear SDE through `x_t = m(t) x_0 + s(t) eps`: the data prediction
is `D(t, x) = (x + s^2 score(t, x)) / m` (Tweedie), the half log-SNR `lambda = log(m / s)`,
and the state steps from `lambda_i` to `lambda_(i+1)` by the exact linear part
`s_(i+1) / s_i` plus the integral of `D` against `e^(-lambda)`.
"""

import equinox as eqx
import jax

from .._checks import check_int, check_positive
from .._sde import AbstractSDE
from ._base import AbstractSampler
from ._grids import GRIDS, TimeGrid, half_log_snr, solver_times


def _one_of(values) -> str:
    """`(1, 2, 3)` as `"1, 2 or 3"`."""
    *head, last = (str(v) for v in values)
    return f"{', '.join(head)} or {last}" if head else last


class AbstractMultistepSolver(AbstractSampler):
    """A multistep solver of the probability-flow ODE in the data-prediction form on one of the
    grids `solver_times` makes, one score evaluation per step.

    Concrete solvers declare the fields (their own defaults, in their own order) and the
    orders they support, `orders`:

    - `steps`: number of steps (= NFE, plus one with `denoise`).
    - `order`: the order, one of `orders`.
    - `time_grid`: one of `GRIDS` (see `solver_times`).
    - `rho`: the exponent of the Karras grid.
    - `lower_order_final`: lower the order over the last steps.
    - `denoise`: finish with Tweedie's formula at the end time.
    - `t_end`: end time; `None` uses `sde.sampling_eps`.
    - `sigma_end`: stop no lower than this noise level `s/m` (see `ode_end_time`; `None`:
      at `t_end`).
    """

    orders: eqx.AbstractClassVar[tuple[int, ...]]
    steps: eqx.AbstractVar[int]
    order: eqx.AbstractVar[int]
    time_grid: eqx.AbstractVar[TimeGrid]
    rho: eqx.AbstractVar[float]
    lower_order_final: eqx.AbstractVar[bool]
    sigma_end: eqx.AbstractVar[float | None]

    def __check_init__(self):
        name = type(self).__name__
        check_int(f"{name}.steps", self.steps)
        check_int(f"{name}.order", self.order)
        check_positive(f"{name}.rho", self.rho)
        check_positive(f"{name}.sigma_end", self.sigma_end, none=True)
        if self.order not in self.orders:
            raise ValueError(f"{name} order must be {_one_of(self.orders)}, got {self.order!r}.")
        if self.time_grid not in GRIDS:
            raise ValueError(f"{name}.time_grid must be one of {GRIDS}, got {self.time_grid!r}.")

    def times(self, sde: AbstractSDE):
        """The `steps + 1` times of the solver, from `t1` down to `ode_end_time`."""
        return solver_times(sde, self.steps, self.t_end, self.time_grid, self.rho, self.sigma_end)

    def _times_and_lambdas(self, sde: AbstractSDE):
        ts = self.times(sde)
        return ts, jax.vmap(lambda t: half_log_snr(sde, t))(ts)
