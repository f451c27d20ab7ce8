"""Samplers of the reverse-time SDE and of the probability-flow ODE (Song et al. 2021, sec. 4).

A sampler holds its settings and maps `(score, sde, key, data_shape)` to ONE sample and the
number of score evaluations (NFE) it used; `sgm.sample` vmaps and shards it.
"""

import abc
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

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


def tweedie_denoise(score: Score, sde: AbstractSDE, t, x: Array) -> Array:
    """`E[x_0 | x_t] = (x_t + s(t)^2 score(t, x_t)) / m(t)` (Tweedie's formula; Efron 2011),
    the final denoising step that removes the noise left at the end time."""
    m, s = sde.marginal(t)
    return (x + s**2 * score(t, x)) / m


class AbstractSampler(eqx.Module):
    """A sampler: settings as fields, `sample_one` draws one example."""

    denoise: eqx.AbstractVar[bool]
    t_end: eqx.AbstractVar[float | None]

    @abc.abstractmethod
    def sample_one(
        self, score: Score, sde: AbstractSDE, key: PRNGKeyArray, data_shape: tuple[int, ...]
    ) -> tuple[Float[Array, "*data_shape"], Int[Array, ""]]:
        """One sample of shape `data_shape` and the number of score evaluations used."""

    def _finish(self, score, sde, x, nfe: int):
        if self.denoise:
            return tweedie_denoise(score, sde, end_time(sde, self.t_end), x), nfe + 1
        return x, nfe


def _euler_maruyama_step(score, sde, t, t_next, x, z):
    dt = t_next - t
    return x + sde.reverse_drift(score, t, x) * dt + sde.diffusion(t) * jnp.sqrt(-dt) * z


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

    def sample_one(self, score, sde, key, data_shape):
        ts = time_grid(sde, self.steps, self.t_end)
        pkey, skey = jr.split(key)

        def step(x, inputs):
            t, t_next, k = inputs
            return _euler_maruyama_step(score, sde, t, t_next, x, jr.normal(k, x.shape)), None

        x0 = sde.prior_sample(pkey, data_shape)
        keys = jr.split(skey, self.steps)
        x, _ = lax.scan(step, x0, (ts[:-1], ts[1:], keys), unroll=self.unroll)
        x, nfe = self._finish(score, sde, x, self.steps)
        return x, jnp.asarray(nfe)


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

    def sample_one(self, score, sde, key, data_shape):
        ts = time_grid(sde, self.steps, self.t_end)
        pkey, skey = jr.split(key)

        def step(x, inputs):
            t, t_next, k = inputs
            ckeys = jr.split(k, self.corrector_steps + 1)
            for i in range(self.corrector_steps):
                x = self._langevin(score, sde, t, t_next, x, ckeys[i])
            z = jr.normal(ckeys[-1], x.shape)
            return self._predict(score, sde, t, t_next, x, z), None

        x0 = sde.prior_sample(pkey, data_shape)
        keys = jr.split(skey, self.steps)
        x, _ = lax.scan(step, x0, (ts[:-1], ts[1:], keys), unroll=self.unroll)
        x, nfe = self._finish(score, sde, x, self.steps * (self.corrector_steps + 1))
        return x, jnp.asarray(nfe)


def solver_evaluations(solver: diffrax.AbstractSolver) -> tuple[int, int]:
    """`(per_step, initial)` vector-field evaluations of a diffrax solver: `num_stages` per
    step, or `num_stages - 1` and one initial evaluation for first-same-as-last tableaus."""
    if isinstance(solver, diffrax.Euler):
        return 1, 0
    if isinstance(solver, diffrax.AbstractERK):
        tableau = solver.tableau
        return (tableau.num_stages - 1, 1) if tableau.fsal else (tableau.num_stages, 0)
    raise ValueError(
        f"cannot count the evaluations of {type(solver).__name__}; use diffrax.Euler or an "
        "explicit Runge-Kutta solver (Heun, Midpoint, Bosh3, Tsit5, Dopri5, Dopri8)."
    )


def solve_ode(
    vector_field, y0, t_start, t_stop, *, solver, rtol, atol, steps, max_steps
) -> tuple[object, Int[Array, ""]]:
    """Solves `dy/dt = vector_field(t, y)` from `t_start` to `t_stop` with diffrax: adaptive
    (PID controller) when `steps` is None, else `steps` fixed steps. Returns `(y(t_stop), nfe)`."""
    per_step, initial = solver_evaluations(solver)
    if steps is None:
        controller = diffrax.PIDController(rtol=rtol, atol=atol)
        dt0 = 0.01 * (t_stop - t_start)
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
    )
    nfe = sol.stats["num_steps"] * per_step + initial
    return jax.tree.map(lambda leaf: leaf[0], sol.ys), nfe


class ProbabilityFlowODE(AbstractSampler):
    """Solves the probability-flow ODE (Song et al. 2021, eq. 13) from `t1` to the end time
    with diffrax: adaptive step control by default, fixed steps when `steps` is given.

    **Arguments:**

    - `solver`: a diffrax solver (explicit Runge-Kutta or Euler).
    - `rtol`, `atol`: tolerances of the PID step-size controller.
    - `steps`: `None` for adaptive stepping, or a number of fixed steps.
    - `max_steps`: the most steps an adaptive solve may take.
    - `denoise`, `t_end`: as for `EulerMaruyama`.
    """

    solver: diffrax.AbstractSolver = diffrax.Tsit5()
    rtol: float = eqx.field(static=True, default=1e-5)
    atol: float = eqx.field(static=True, default=1e-5)
    steps: int | None = eqx.field(static=True, default=None)
    max_steps: int = eqx.field(static=True, default=4096)
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

    def sample_one(self, score, sde, key, data_shape):
        x0 = sde.prior_sample(key, data_shape)
        x, nfe = solve_ode(
            lambda t, x: sde.ode_drift(score, t, x),
            x0,
            sde.t1,
            end_time(sde, self.t_end),
            solver=self.solver,
            rtol=self.rtol,
            atol=self.atol,
            steps=self.steps,
            max_steps=self.max_steps,
        )
        return self._finish(score, sde, x, nfe)
