"""Samples and their log-densities from one solve of the augmented probability-flow ODE
(Chen et al. 2018, *Neural ordinary differential equations*, eq. 4; Song et al. 2021, sec. 4.3
and appendix D.2), from the prior at `t1` to the data at `t0`.

With `dx/dt = F(t, x)` the probability-flow ODE, `d log p_t(x(t)) / dt = -div F(t, x(t))`, so
solving the state and `delta = int_t1^t0 div F dt` together from a prior draw `x(t1)` gives the
sample `x(t0)` and `log p_t0(x(t0)) = log p_t1(x(t1)) - delta`: no second solve from the sample
back to the prior. The solve uses the coordinates and the divergence of `ODEVariables` and a
trace estimator, as `log_likelihood` does.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._checks import check_int, check_positive, check_sde, check_shape
from ._flow import ODEVariables, solve_ode, solver_evaluations
from ._likelihood import state_and_density_norm
from ._sde import AbstractSDE
from ._trace import AbstractTraceEstimator, Hutchinson
from ._traced_checks import inputs_checked_by_caller


def _one(score, sde, var, trace, solver, rtol, atol, max_steps, key, data_shape):
    pkey, tkey = jr.split(key)
    x1 = sde.prior_sample(pkey, data_shape)
    probes = trace.draw(tkey if trace.needs_key else None, data_shape)

    def vector_field(v, state):
        return var.drift_and_divergence(
            sde, score, v, state[0], lambda lin: trace(lin, data_shape, probes, shift=1.0)
        )

    with jax.ensure_compile_time_eval(), inputs_checked_by_caller():
        v1, v0 = var.coordinate(sde, sde.t1), var.coordinate(sde, sde.t0)
        dt0 = var.initial_step(v1, v0)
    (z0, delta), nfe = solve_ode(
        vector_field,
        (x1 / var.scale(sde, sde.t1), jnp.zeros((), x1.dtype)),
        v1,
        v0,
        dt0=dt0,
        solver=solver,
        rtol=rtol,
        atol=atol,
        steps=None,
        max_steps=max_steps,
        norm=state_and_density_norm,
    )
    x0 = var.scale(sde, sde.t0) * z0
    # delta = int_v1^v0 (div_z dz/dv) dv; the change of state adds d log(n(t1) / n(t0))
    log_det = var.log_scale_change(sde, sde.t0, sde.t1, x0.size)
    return x0, sde.prior_log_prob(x1) + log_det - delta, nfe


def sample_with_log_prob(
    score,
    sde: AbstractSDE,
    *,
    key: PRNGKeyArray,
    shape: tuple[int, ...],
    trace: AbstractTraceEstimator | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: diffrax.AbstractSolver | None = None,
    max_steps: int = 4096,
    variables: ODEVariables | None = None,
    return_nfe: bool = False,
) -> (
    tuple[Float[Array, "n *data_shape"], Float[Array, " n"]]
    | tuple[Float[Array, "n *data_shape"], Float[Array, " n"], Int[Array, " n"]]
):
    """Draws `n` samples `x(t0)` by the probability-flow ODE from prior draws at `t1` and, in
    the same adaptive solve, their log-densities `log p_t0(x(t0))` in nats under the model
    (the density `log_likelihood` evaluates); differentiable with respect to the score's
    parameters (`jax.grad`, diffrax's checkpointed adjoint).

    **Arguments:**

    - `score`, `sde`: as for `sgm.sample`.
    - `key`: example `i` uses the `i`-th of `jr.split(key, n)`, split into its prior draw's key
      and its trace probes' key.
    - `shape`: `(n, *data_shape)`.
    - `trace`, `rtol`, `atol`, `solver`, `max_steps`, `variables`: as for `log_likelihood`
      (`Hutchinson()` by default: the log-density is then an unbiased estimate; `Exact()` for
      the exact divergence).
    - `return_nfe`: also return the score evaluations per example.

    **Returns:** `(x, log_prob)`, and with `return_nfe` `(x, log_prob, nfe)`.
    """
    check_sde(sde)
    if not callable(score):
        raise ValueError(f"score must be a callable score(t, x), got {type(score).__name__}.")
    shape = check_shape(shape)
    trace = Hutchinson() if trace is None else trace
    if not isinstance(trace, AbstractTraceEstimator):
        raise ValueError(
            "trace must be a trace estimator (sgm.Exact(), sgm.Hutchinson(), "
            f"sgm.HutchPlusPlus()), got {type(trace).__name__}."
        )
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    max_steps = check_int("max_steps", max_steps)
    solver = diffrax.Tsit5() if solver is None else solver
    solver_evaluations(solver)
    variables = ODEVariables() if variables is None else variables
    if not isinstance(variables, ODEVariables):
        raise ValueError(f"variables must be sgm.ODEVariables, got {variables!r}.")
    x, lp, nfe = _batch(
        score,
        sde,
        variables,
        trace,
        solver,
        rtol,
        atol,
        max_steps,
        jr.split(key, shape[0]),
        shape[1:],
    )
    return (x, lp, nfe) if return_nfe else (x, lp)


@eqx.filter_jit
def _batch(score, sde, var, trace, solver, rtol, atol, max_steps, keys, data_shape):
    def one(key):
        return _one(score, sde, var, trace, solver, rtol, atol, max_steps, key, data_shape)

    return jax.vmap(one)(keys)
