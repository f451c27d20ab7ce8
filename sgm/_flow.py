"""The probability-flow ODE (Song et al. 2021, eq. 13) in chosen coordinates, solved with
diffrax; shared by the adaptive sampler and the likelihood.

With `F(t, x) = f x - g^2 score / 2` the flow in `t`, a monotone time variable `v(t)` and the
state `z = x / n(t)`:

    dz/dv = (F(t, n z) / n - (n'/n) z) / v'(t),
    div_z dz/dv = (div_x F - d n'/n) / v'(t),
    log p_t0(x_0) = log p_t1(x_1) + int_v0^v1 div_z dz/dv dv + d log(n(t1) / n(t0)),

the last term being the exact log-determinant of the change of state. Only the score's part of
`div_x F = d f - (g^2 / 2) tr(d score / dx)` needs a trace; it is estimated for
`B = s^2 d score / dx = d D / dx - I` (`D` Tweedie's denoiser, whose Jacobian is near the
data close to a projection) with the identity as control variate.
"""

from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Int, PyTree, Scalar

from ._sde import AbstractSDE

_TIMES = ("t", "log_sigma", "sigma")
_STATES = ("x", "scaled", "normalised")


def _derivative(fn, t):
    return jax.jvp(fn, (t,), (jnp.ones_like(t),))


class ODEVariables(eqx.Module):
    """Coordinates for the probability-flow ODE.

    **Arguments:**

    - `time`: `"t"`, or `"log_sigma"`: `v = log(s / m) = -lambda / 2`, the log of Karras et
      al.'s noise level (Karras et al. 2022, eq. 4; Lu et al. 2022), in which the flow of every
      linear SDE is the same and steps are naturally spread over the decades of noise.
    - `state`: `"x"`; `"scaled"`: `x / m`; `"normalised"`: `x / sqrt(m^2 c^2 + s^2)`, the state
      in units of the std of `x_t` for data of std `c = sigma_data` (Karras et al.'s `c_in`);
      Gaussian data of that variance give a constant state.
    - `sigma_data`: `c`.
    """

    time: Literal["t", "log_sigma", "sigma"] = eqx.field(static=True, default="log_sigma")
    state: Literal["x", "scaled", "normalised"] = eqx.field(static=True, default="normalised")
    sigma_data: float = eqx.field(static=True, default=0.5)

    def __check_init__(self):
        if self.time not in _TIMES:
            raise ValueError(f"time must be one of {_TIMES}, got {self.time!r}.")
        if self.state not in _STATES:
            raise ValueError(f"state must be one of {_STATES}, got {self.state!r}.")
        if not self.sigma_data > 0:
            raise ValueError(f"sigma_data must be positive, got {self.sigma_data!r}.")

    def coordinate(self, sde: AbstractSDE, t) -> Scalar:
        """`v(t)`."""
        t = jnp.asarray(t, dtype=float)
        if self.time == "t":
            return t
        log_sigma = -0.5 * sde.log_snr(t)
        return log_sigma if self.time == "log_sigma" else jnp.exp(log_sigma)

    def time_at(self, sde: AbstractSDE, v) -> Scalar:
        """`t(v)`, the inverse of `coordinate`."""
        if self.time == "t":
            return v
        return sde.time_at_log_snr(-2 * (v if self.time == "log_sigma" else jnp.log(v)))

    def scale(self, sde: AbstractSDE, t) -> Scalar:
        """`n(t)`, with `z = x / n`."""
        m, s = sde.marginal(t)
        if self.state == "x":
            return jnp.ones_like(m)
        if self.state == "scaled":
            return m
        return jnp.sqrt((m * self.sigma_data) ** 2 + s**2)

    def _coefficients(self, sde, v):
        t = self.time_at(sde, v)
        n, dn = _derivative(lambda t: self.scale(sde, t), t)
        _, dv = _derivative(lambda t: self.coordinate(sde, t), t)
        return t, n, dn / n, dv

    def drift(self, sde: AbstractSDE, score, v, z: Array) -> Array:
        """`dz/dv`."""
        t, n, dlog_n, dv = self._coefficients(sde, v)
        return (sde.ode_drift(score, t, n * z) / n - dlog_n * z) / dv

    def drift_and_divergence(self, sde: AbstractSDE, score, v, z: Array, trace) -> tuple:
        """`(dz/dv, div_z dz/dv)`, the divergence from `trace(linear_fn)`, an estimate of the
        trace of `B = s^2 d score / dx` (see the module's docstring)."""
        t, n, dlog_n, dv = self._coefficients(sde, v)
        x = n * z
        s = sde.marginal(t)[1]
        g2 = sde.diffusion(t) ** 2
        score_x, linear = jax.linearize(lambda x: score(t, x), x)
        drift = sde.ode_drift(lambda t, x: score_x, t, x) / n - dlog_n * z
        # div_x F - d n'/n = d (f - n'/n) - g^2 / (2 s^2) tr(B)
        tr_b = trace(lambda u: s**2 * linear(u))
        div = z.size * (sde.drift_coeff(t) - dlog_n) - 0.5 * g2 / s**2 * tr_b
        return drift / dv, div / dv

    def initial_step(self, v_start, v_stop):
        """A first step for an adaptive solve: 1% of the interval, or in `sigma` a tenth of the
        starting noise level (the interval spans decades of it)."""
        if self.time == "sigma":
            return 0.1 * v_start * jnp.sign(v_stop - v_start)
        return 0.01 * (v_stop - v_start)

    def log_scale_change(self, sde: AbstractSDE, t_start, t_stop, d: int) -> Scalar:
        """`d log(n(t_stop) / n(t_start))`, the log-determinant of the change of state."""
        return d * (jnp.log(self.scale(sde, t_stop)) - jnp.log(self.scale(sde, t_start)))


def solver_evaluations(solver: diffrax.AbstractSolver) -> tuple[int, int]:
    """`(per_step, initial)` vector-field evaluations of a diffrax solver: `num_stages` per
    step, or `num_stages - 1` and one initial evaluation for first-same-as-last tableaus."""
    if isinstance(solver, diffrax.Euler):
        return 1, 0
    tableau = solver.tableau if isinstance(solver, diffrax.AbstractERK) else None
    if isinstance(tableau, diffrax.ButcherTableau):  # not an IMEX pair (MultiButcherTableau)
        return (tableau.num_stages - 1, 1) if tableau.fsal else (tableau.num_stages, 0)
    raise ValueError(
        f"cannot count the evaluations of {type(solver).__name__}; use diffrax.Euler or an "
        "explicit Runge-Kutta solver (Heun, Midpoint, Bosh3, Tsit5, Dopri5, Dopri8)."
    )


def solve_ode(
    vector_field,
    y0,
    t_start,
    t_stop,
    *,
    solver,
    rtol,
    atol,
    steps,
    max_steps,
    norm=None,
    dt0=None,
    throw=True,
) -> tuple[PyTree, Int[Array, ""]]:
    """Solves `dy/dt = vector_field(t, y)` from `t_start` to `t_stop` with diffrax: adaptive
    (PID controller; `norm` of the scaled error, RMS by default) when `steps` is None, else
    `steps` fixed steps. Returns `(y(t_stop), nfe)`; rejected steps count, as they cost
    evaluations. A solve that fails (`max_steps` reached) raises at run time, or with
    `throw=False` returns NaN for the caller to report: without diffrax's run-time check the
    program has no host callback and the persistent compilation cache stores it."""
    per_step, initial = solver_evaluations(solver)
    if steps is None:
        kw = {} if norm is None else {"norm": norm}
        controller = diffrax.PIDController(rtol=rtol, atol=atol, **kw)
        dt0 = 0.01 * (t_stop - t_start) if dt0 is None else dt0
    else:
        controller = diffrax.ConstantStepSize()
        dt0 = (t_stop - t_start) / steps
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: vector_field(t, y)),
        solver,
        t0=t_start,
        t1=t_stop,
        dt0=dt0,
        y0=y0,
        stepsize_controller=controller,
        saveat=diffrax.SaveAt(t1=True),
        max_steps=max_steps,
        throw=throw,
    )
    nfe = sol.stats["num_steps"] * per_step + initial
    y = jax.tree.map(lambda leaf: leaf[0], sol.ys)
    if not throw:
        ok = sol.result == diffrax.RESULTS.successful
        y = jax.tree.map(lambda leaf: jnp.where(ok, leaf, jnp.nan), y)
    return y, nfe
