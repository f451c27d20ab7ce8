"""Samplers of the reverse-time SDE and of the probability-flow ODE (Song et al. 2021, sec. 4).

The sampler contract: `sgm.sample` draws the prior; a sampler holds its settings and maps ONE
prior draw `x1` to one sample and the number of score evaluations (NFE) it used,
`sampler.sample_one(score, sde, x1, key=key) -> (x, nfe)`. Every sampler returns the same kind
of result: the scaled state `x / m` at its end time (the data plus noise of std `s / m`), or
with `denoise` Tweedie's `E[x_0 | x_t]` there. Each knows the settings it does badly with
(`poor_combination`), which `sgm.sample` turns into a warning.
"""

import abc
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._flow import ODEVariables, solve_ode, solver_evaluations
from ._sde import AbstractSDE

Score = Callable[[Array, Array], Array]

# The vmapped axis `sgm.sample` binds; samplers may reduce over it (`lax.pmean`).
BATCH_AXIS = "batch"


def _check_steps(name: str, steps) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"{name}: steps must be a positive int, got {steps!r}.")


def _check_t_end(name: str, t_end) -> None:
    if t_end is not None and not (isinstance(t_end, float | int) and t_end > 0):
        raise ValueError(f"{name}: t_end must be a positive float or None, got {t_end!r}.")


def end_time(sde: AbstractSDE, t_end: float | None) -> float:
    """The time sampling stops at: `t_end`, or the SDE's default `sampling_eps`."""
    t_end = sde.sampling_eps if t_end is None else t_end
    if not sde.t0 <= t_end < sde.t1:
        raise ValueError(f"t_end={t_end} must lie in [t0={sde.t0}, t1={sde.t1}).")
    return t_end


def time_grid(sde: AbstractSDE, steps: int, t_end: float | None) -> Float[Array, " steps+1"]:
    """`steps + 1` equally spaced times from `t1` down to the end time. Each step goes from
    `ts[i]` to `ts[i + 1]` with `dt = ts[i + 1] - ts[i]`, so the grid and the step agree."""
    return jnp.linspace(sde.t1, end_time(sde, t_end), steps + 1)


class AbstractSampler(eqx.Module):
    """A sampler: settings as fields, `sample_one` maps one prior draw to one sample."""

    denoise: eqx.AbstractVar[bool]
    t_end: eqx.AbstractVar[float | None]

    @abc.abstractmethod
    def sample_one(
        self, score: Score, sde: AbstractSDE, x1: Float[Array, "*data_shape"], *, key: PRNGKeyArray
    ) -> tuple[Float[Array, "*data_shape"], Int[Array, ""]]:
        """One sample from the prior draw `x1` (at `sde.t1`), and the score evaluations used;
        `key` is for the sampler's own noise."""

    def poor_combination(self, sde: AbstractSDE) -> str | None:
        """Why this sampler is known to do badly with `sde`, or None (measured thresholds; see
        `benchmarks/sampler_accuracy.py`)."""
        return None

    def _finish(self, score, sde, t, x, nfe):
        """The result at the end time `t` from the state `x`: `x / m(t)`, or with `denoise`
        Tweedie's `E[x_0 | x_t]` (one more evaluation)."""
        if self.denoise:
            return sde.denoise(score, t, x), jnp.asarray(nfe + 1)
        return x / sde.marginal(t)[0], jnp.asarray(nfe)


def euler_maruyama(score: Score, sde: AbstractSDE, t, t_next, x: Array) -> tuple[Array, Array]:
    """`(mean, std)` of one Euler-Maruyama step of the reverse-time SDE (Song et al. 2021,
    eq. 6) from `t` to `t_next < t`; the step is `mean + std z` with `z ~ N(0, I)`."""
    dt = t_next - t
    return x + sde.reverse_drift(score, t, x) * dt, sde.diffusion(t) * jnp.sqrt(-dt)


def _euler_maruyama_step(score, sde, t, t_next, x, z):
    mean, std = euler_maruyama(score, sde, t, t_next, x)
    return mean + std * z


def _scan_steps(step, x1, ts, key, unroll):
    """`step(x, (t, t_next, key))` over the grid `ts`, one key per step."""
    keys = jr.split(key, len(ts) - 1)
    x, _ = lax.scan(
        lambda x, inputs: (step(x, inputs), None), x1, (ts[:-1], ts[1:], keys), unroll=unroll
    )
    return x


class EulerMaruyama(AbstractSampler):
    """Euler-Maruyama on the reverse-time SDE (Song et al. 2021, eq. 6).

    **Arguments:**

    - `steps`: number of steps from `t1` to `t_end` (one score evaluation each).
    - `denoise`: finish with Tweedie's denoising step (one more evaluation).
    - `t_end`: end time; `None` uses `sde.sampling_eps`.
    - `unroll`: passed to `lax.scan`.
    """

    steps: int = eqx.field(static=True, default=1000)
    denoise: bool = eqx.field(static=True, default=True)
    t_end: float | None = eqx.field(static=True, default=None)
    unroll: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        _check_steps("EulerMaruyama", self.steps)
        _check_t_end("EulerMaruyama", self.t_end)

    def sample_one(self, score, sde, x1, *, key):
        ts = time_grid(sde, self.steps, self.t_end)

        def step(x, inputs):
            t, t_next, k = inputs
            return _euler_maruyama_step(score, sde, t, t_next, x, jr.normal(k, x.shape))

        x = _scan_steps(step, x1, ts, key, self.unroll)
        return self._finish(score, sde, ts[-1], x, self.steps)


_PREDICTORS = ("reverse_diffusion", "euler_maruyama")


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

    steps: int = eqx.field(static=True, default=1000)
    snr: float = eqx.field(static=True, default=0.16)
    corrector_steps: int = eqx.field(static=True, default=1)
    predictor: str = eqx.field(static=True, default="reverse_diffusion")
    denoise: bool = eqx.field(static=True, default=True)
    t_end: float | None = eqx.field(static=True, default=None)
    unroll: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        _check_steps("PredictorCorrector", self.steps)
        _check_t_end("PredictorCorrector", self.t_end)
        if self.predictor not in _PREDICTORS:
            raise ValueError(f"predictor must be one of {_PREDICTORS}, got {self.predictor!r}.")
        if not (isinstance(self.snr, float | int) and self.snr > 0):
            raise ValueError(f"snr must be a positive number, got {self.snr!r}.")
        if not isinstance(self.corrector_steps, int) or self.corrector_steps < 0:
            raise ValueError(
                f"corrector_steps must be a non-negative int, got {self.corrector_steps!r}."
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
            return _euler_maruyama_step(score, sde, t, t_next, x, z)
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

        x = _scan_steps(step, x1, ts, key, self.unroll)
        return self._finish(score, sde, ts[-1], x, self.steps * (self.corrector_steps + 1))


class ProbabilityFlowODE(AbstractSampler):
    """Solves the probability-flow ODE (Song et al. 2021, eq. 13) from `t1` to the end time
    with diffrax, in the coordinates `variables` (by default the log noise level `log(s/m)` and
    a normalised state; see `ODEVariables`): adaptive step control by default, fixed steps
    (equal in the time variable) when `steps` is given.

    **Arguments:**

    - `solver`: a diffrax solver (explicit Runge-Kutta or Euler).
    - `rtol`, `atol`: tolerances of the PID step-size controller.
    - `steps`: `None` for adaptive stepping, or a number of fixed steps.
    - `max_steps`: the most steps an adaptive solve may take.
    - `variables`: `ODEVariables(...)`; `ODEVariables(time="t", state="x")` solves in `t`.
    - `denoise`, `t_end`: as for `EulerMaruyama`.
    """

    solver: diffrax.AbstractSolver = diffrax.Tsit5()
    rtol: float = eqx.field(static=True, default=1e-5)
    atol: float = eqx.field(static=True, default=1e-5)
    steps: int | None = eqx.field(static=True, default=None)
    max_steps: int = eqx.field(static=True, default=4096)
    variables: ODEVariables = ODEVariables(time="log_sigma")
    denoise: bool = eqx.field(static=True, default=True)
    t_end: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.steps is not None:
            _check_steps("ProbabilityFlowODE", self.steps)
        _check_t_end("ProbabilityFlowODE", self.t_end)
        if not isinstance(self.solver, diffrax.AbstractSolver):
            raise ValueError(f"solver must be a diffrax solver, got {self.solver!r}.")
        solver_evaluations(self.solver)
        if not (self.rtol > 0 and self.atol > 0):
            raise ValueError(f"rtol and atol must be positive, got {self.rtol}, {self.atol}.")
        if not isinstance(self.variables, ODEVariables):
            raise ValueError(f"variables must be sgm.ODEVariables, got {self.variables!r}.")

    def sample_one(self, score, sde, x1, *, key):
        var, t_stop = self.variables, end_time(sde, self.t_end)
        v1, v_stop = var.coordinate(sde, sde.t1), var.coordinate(sde, t_stop)
        z, nfe = solve_ode(
            lambda v, z: var.drift(sde, score, v, z),
            x1 / var.scale(sde, sde.t1),
            v1,
            v_stop,
            dt0=var.initial_step(v1, v_stop),
            solver=self.solver,
            rtol=self.rtol,
            atol=self.atol,
            steps=self.steps,
            max_steps=self.max_steps,
        )
        return self._finish(score, sde, t_stop, var.scale(sde, t_stop) * z, nfe)

    def poor_combination(self, sde):
        if self.steps is None:
            return None
        name, low_order = type(self.solver).__name__, isinstance(self.solver, _LOW_ORDER)
        if self.variables.time == "sigma":
            return (
                f"{self.steps} fixed steps equal in sigma put nearly all of them at large noise; "
                "use variables=ODEVariables(time='log_sigma') or adaptive steps (steps=None)."
            )
        if self.variables.time == "t":
            # Equal steps in t: measured poor where the state spans a large scale (the VE prior's
            # std is sigma_max, VP's and subVP's 1): on a 2-D mixture under VE, mean log-density
            # Euler -9.4 / -0.38 / +0.12 at 10 / 20 / 50 steps, Tsit5 -77 at 5, +0.004 at 10.
            if sde.prior_std() > 5 and (self.steps < 10 or (low_order and self.steps < 100)):
                return (
                    f"the probability-flow ODE in t with {self.steps} fixed steps of {name}: its "
                    "dynamics span several decades of noise, so equal steps in t waste "
                    "evaluations at large sigma and miss the small ones; use the default "
                    "variables (log sigma), adaptive steps (steps=None), or Tsit5 with 10 or more "
                    "steps."
                )
            return None
        # Equal steps in log(s/m): measured on a 2-D mixture (benchmarks/sampler_accuracy.py),
        # VP and VE alike, poor beyond 0.5 e-folds of noise per step for Euler and Heun (VP Euler
        # 10 steps -0.09 nats, VE Heun 20 -0.07) and beyond 1 for Tsit5 (VE 10 steps -0.46).
        v1 = self.variables.coordinate(sde, sde.t1)
        per_step = (
            float(v1 - self.variables.coordinate(sde, end_time(sde, self.t_end))) / self.steps
        )
        if per_step <= (0.5 if low_order else 1.0):
            return None
        return (
            f"the probability-flow ODE with {self.steps} fixed steps of {name}: each spans "
            f"{per_step:.2f} e-folds of the noise level s/m, measured poor above "
            f"{0.5 if low_order else 1.0} for this solver (a 2-D mixture: Euler -0.09 nats of mean "
            "log-density at 0.96 per step, Tsit5 -0.46 at 1.29); use more steps or adaptive "
            "steps (steps=None)."
        )


# Explicit solvers of order 1 and 2, which need many fixed steps.
_LOW_ORDER = (diffrax.Euler, diffrax.Heun, diffrax.Midpoint, diffrax.Ralston)
