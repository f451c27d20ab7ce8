"""UniPC (Zhao et al. 2023, *UniPC: a unified predictor-corrector framework for fast sampling
of diffusion models*, algorithm 1) in the data-prediction form."""

from typing import ClassVar, Literal

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp

from ._base import plain
from ._grids import SIGMA_END, TimeGrid
from ._multistep import AbstractMultistepSolver

VARIANTS = ("bh1", "bh2")


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


class UniPC(AbstractMultistepSolver):
    """UniPC (Zhao et al. 2023, *UniPC: a unified predictor-corrector framework for fast
    sampling of diffusion models*): a multistep exponential integrator of the probability-flow
    ODE in the data-prediction form (UniP, order `p`) followed by the corrector UniC, which
    reuses the score evaluation at the predicted point, needed for the next step anyway, to
    raise the order to `p + 1` at no extra cost (their theorem 3.3). NFE = `steps` (+1 with
    `denoise`).

    **Arguments:**

    - `steps`: number of steps.
    - `order`: the predictor's order, 1 to 3 (the first steps warm up from order 1).
    - `variant`: `"bh2"` (`B(h) = e^h - 1`) or `"bh1"` (`B(h) = h`).
    - `time_grid`, `rho`: as for `DPMSolver`; uniform in log-SNR by default, the most robust
      with this solver in `benchmarks/sampler_accuracy.py`.
    - `lower_order_final`: lower the order over the last steps (to 1 in the last).
    - `denoise`, `t_end`, `sigma_end`: as for `DPMSolver`.
    """

    # equinox's AbstractClassVar is made concrete by a ClassVar, which pyright does not model
    orders: ClassVar[tuple[int, ...]] = (1, 2, 3)  # pyright: ignore[reportIncompatibleVariableOverride]
    steps: int = eqx.field(static=True, default=20, converter=plain)
    order: int = eqx.field(static=True, default=3, converter=plain)
    variant: Literal["bh1", "bh2"] = eqx.field(static=True, default="bh2")
    time_grid: TimeGrid = eqx.field(static=True, default="logsnr")
    rho: float = eqx.field(static=True, default=7.0, converter=plain)
    lower_order_final: bool = eqx.field(static=True, default=True)
    denoise: bool = eqx.field(static=True, default=False)
    t_end: float | None = eqx.field(static=True, default=None, converter=plain)
    sigma_end: float | None = eqx.field(static=True, default=SIGMA_END, converter=plain)

    def __check_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"UniPC variant must be 'bh1' or 'bh2', got {self.variant!r}.")

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
        ts, lam = self._times_and_lambdas(sde)
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
