"""Log-likelihoods through the probability-flow ODE (Song et al. 2021, sec. 4.3 and
appendix D.2; Chen et al. 2018; Grathwohl et al. 2019).

With `dx/dt = F(t, x)` the probability-flow ODE, `log p_t0(x(t0)) = log p_t1(x(t1)) +
int_t0^t1 div F(t, x(t)) dt`. The ODE is solved in the coordinates of `ODEVariables` (by default
the noise level `s/m` and a normalised state), carrying the change of variables' log-determinant
exactly; the divergence of the SDE's linear drift is closed form, and only the score's part is
traced, by a trace estimator (`Exact`, `Hutchinson`, `HutchPlusPlus`).

Each example has its own adaptive step sequence and its own probe draw (from its own key
`fold_in(key, i)`). By default the solves of a chunk of `batch_size` examples run together on
each device (`vmap` over diffrax's solve): every example keeps its own step size and accepts or
rejects its own steps, the loop runs until the last one finishes, and the score is evaluated on
the chunk at once, so that an example's evaluation costs a fraction of a batch-1 one. Its
companions then change its value only through float rounding in the batched products (and the
step sequence that rounding steers). `one_at_a_time=True` solves one example after another
(`lax.map`), the same batch-1 program for every example: its value is bit-identical whatever its
companions, `batch_size` or the device count.
"""

import contextlib
from collections.abc import Callable
from typing import Literal, overload

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.core import Tracer
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ._checks import (
    check_batch,
    check_finite_score,
    check_int,
    check_key,
    check_labels,
    check_positive,
    check_score,
    check_sde,
)
from ._compat import TRACE_FLAGS, pop_trace_flags
from ._flow import ODEVariables, _derivative, solve_ode, solver_evaluations
from ._model_checks import check_float32_model, check_model_sde, class_count
from ._progress import progress as progress_bar
from ._sde import AbstractSDE
from ._sharding import data_mesh, example_keys, map_examples, pad_batch, pad_to_devices
from ._trace import AbstractTraceEstimator, Hutchinson
from ._traced_checks import concise_errors, inputs_checked_by_caller, unchecked_unless_labelled
from .distributed import split_examples


def state_and_density_norm(err):
    """The larger of the state's RMS error and the log-density's error (both already scaled by
    `atol + rtol |y|`): the log-density is the output, so it is controlled in its own right,
    not as one entry in `d + 1` of an RMS norm (which loosened its tolerance `sqrt(d)`-fold)."""
    z, delta = err
    return jnp.maximum(jnp.sqrt(jnp.mean(z**2)), jnp.abs(delta))


_NORMS = {"max": state_and_density_norm, "rms": None}


_IN_FLIGHT = 64  # examples in flight per device when `batch_size` is None (batched solves)
_INIT_DEPTH = 4  # frames from LogLikelihood.__init__ to the line constructing it
_PRECISIONS = ("highest", "high", "default", None)


def _float_if_concrete(x):
    """`x` as a Python float when it is known while tracing (a learned schedule's is not)."""
    try:
        return float(x)
    except TypeError:  # a tracer (jax.errors.ConcretizationTypeError)
        return x


class LogLikelihood(eqx.Module):
    """Log-density `log p_t0(x)` in nats of each example under the model defined by `score`
    and `sde`, by solving the probability-flow ODE from `t0` to `t1` with diffrax. Built once
    with its options, called on batches: `LogLikelihood(score, sde, **options)(x, key=key)`;
    `log_likelihood(score, sde, x, key=key, **options)` is the same call in one line.

    **Arguments:**

    - `score`: a callable `score(t, x)` on one example.
    - `sde`: its SDE; the integral starts at `sde.t0` and ends at the prior at `sde.t1`.
    - `trace`: `Hutchinson()` (one Rademacher probe, the default), `Exact(chunk_size=128)`
      or `HutchPlusPlus(n_probes=3)`.
    - `rtol`, `atol`, `solver`: diffrax step-size control and solver (default `Tsit5`).
    - `max_steps`: the most steps of one solve.
    - `variables`: the coordinates of the solve; by default `ODEVariables()`, the log noise
      level `log(s/m)` and the normalised state, which takes fewer adaptive steps than `s/m`
      or `t` for the same accuracy (`benchmarks/likelihood_coordinates.py`,
      `benchmarks/likelihood_cost.py`). `ODEVariables(time="t", state="x")` is the flow in `t`
      as Song et al. write it.
    - `error_norm`: `"max"`, the larger of the state's RMS error and the log-density's, or
      `"rms"`, one RMS over both (the log-density one entry among `d + 1`, its tolerance in
      effect `sqrt(d)` times looser).
    - `precision`: of matrix products and convolutions in the solve, `"highest"` (float32, the
      default) or None for JAX's default. On NVIDIA GPUs JAX's default is TF32 (a 10-bit
      mantissa), whose rounding the step-size control meets as noise and answers with about
      twice the steps (`benchmarks/accelerator.sh`). CPUs compute in float32 either way.
    - `one_at_a_time`: solve the examples one after another (bit-identical whatever the
      companions) instead of a chunk at once with per-example step control (the default,
      several times cheaper per example; see the module's docstring).
    - `exact`, `n_probes`, `probe`, `chunk_size`: deprecated spellings of `trace`.
    """

    score: Callable[..., Array]
    sde: AbstractSDE
    trace: AbstractTraceEstimator
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    solver: diffrax.AbstractSolver
    max_steps: int = eqx.field(static=True)
    variables: ODEVariables
    error_norm: str = eqx.field(static=True)
    precision: str | None = eqx.field(static=True)
    one_at_a_time: bool = eqx.field(static=True)

    def __init__(
        self,
        score: Callable[..., Array],
        sde: AbstractSDE,
        *,
        trace: AbstractTraceEstimator | None = None,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        solver: diffrax.AbstractSolver | None = None,
        max_steps: int = 4096,
        variables: ODEVariables | None = None,
        error_norm: Literal["max", "rms"] = "max",
        precision: Literal["highest", "high", "default"] | None = "highest",
        one_at_a_time: bool = False,
        **deprecated_flags,
    ):
        check_sde(sde)
        if not callable(score):
            raise ValueError(f"score must be a callable score(t, x), got {type(score).__name__}.")
        check_model_sde(score, sde)
        check_float32_model(score)
        self.score, self.sde = score, sde
        if unknown := sorted(set(deprecated_flags) - set(TRACE_FLAGS)):
            raise TypeError(f"LogLikelihood got unexpected keyword arguments {unknown}.")
        # the user's line is the caller of equinox's Module construction, which calls __init__
        options = {"trace": trace, **deprecated_flags}
        trace = pop_trace_flags(options, stacklevel=_INIT_DEPTH)["trace"]
        self.trace = Hutchinson() if trace is None else trace
        if not isinstance(self.trace, AbstractTraceEstimator):
            raise ValueError(
                "trace must be a trace estimator (sgm.Exact(), sgm.Hutchinson(), "
                f"sgm.HutchPlusPlus()), got {type(self.trace).__name__}."
            )
        self.rtol, self.atol = check_positive("rtol", rtol), check_positive("atol", atol)
        self.max_steps = check_int("max_steps", max_steps)
        self.solver = diffrax.Tsit5() if solver is None else solver
        solver_evaluations(self.solver)
        self.variables = ODEVariables() if variables is None else variables
        if not isinstance(self.variables, ODEVariables):
            raise ValueError(f"variables must be sgm.ODEVariables, got {self.variables!r}.")
        if error_norm not in _NORMS:
            raise ValueError(f"error_norm must be one of {tuple(_NORMS)}, got {error_norm!r}.")
        self.error_norm = error_norm
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}.")
        self.precision = precision
        if not isinstance(one_at_a_time, bool):
            raise ValueError(f"one_at_a_time must be True or False, got {one_at_a_time!r}.")
        self.one_at_a_time = one_at_a_time

    def one(self, x: Array, key: PRNGKeyArray, y: Array | None = None):
        """`(log p_t0(x), nfe)` for one example."""
        score = self.score if y is None else (lambda t, x: self.score(t, x, y=y))
        sde, var, shape = self.sde, self.variables, x.shape
        probes = self.trace.draw(key, shape)

        def trace(linear):
            return self.trace(linear, shape, probes, shift=1.0)

        def vector_field(v, state):
            return var.drift_and_divergence(sde, score, v, state[0], trace)

        # Python floats for a fixed SDE, so that diffrax checks dt0's sign here and leaves no
        # host callback in the program (which would keep it out of the compilation cache)
        with jax.ensure_compile_time_eval(), inputs_checked_by_caller():
            v0, v1 = var.coordinate(sde, sde.t0), var.coordinate(sde, sde.t1)
            v0, v1, dt0 = map(_float_if_concrete, (v0, v1, var.initial_step(v0, v1)))
        (z1, delta), nfe = solve_ode(
            vector_field,
            (x / var.scale(sde, sde.t0), jnp.zeros((), x.dtype)),
            v0,
            v1,
            dt0=dt0,
            solver=self.solver,
            rtol=self.rtol,
            atol=self.atol,
            steps=None,
            max_steps=self.max_steps,
            norm=_NORMS[self.error_norm],
            throw=False,  # reported by __call__ on the host: the program stays cacheable
        )
        x1 = var.scale(sde, sde.t1) * z1
        log_det = var.log_scale_change(sde, sde.t0, sde.t1, x.size)
        return sde.prior_log_prob(x1) + log_det + delta, nfe

    @overload
    def __call__(
        self,
        x: Float[ArrayLike, "n *data_shape"],
        *,
        key: PRNGKeyArray | None = None,
        y: Array | None = None,
        batch_size: int | None = None,
        progress: bool | None = None,
        return_nfe: Literal[False] = False,
    ) -> Float[Array, " n"]: ...
    @overload
    def __call__(
        self,
        x: Float[ArrayLike, "n *data_shape"],
        *,
        key: PRNGKeyArray | None = None,
        y: Array | None = None,
        batch_size: int | None = None,
        progress: bool | None = None,
        return_nfe: Literal[True],
    ) -> tuple[Float[Array, " n"], Int[Array, " n"]]: ...
    @overload
    def __call__(
        self,
        x: Float[ArrayLike, "n *data_shape"],
        *,
        key: PRNGKeyArray | None = None,
        y: Array | None = None,
        batch_size: int | None = None,
        progress: bool | None = None,
        return_nfe: bool,
    ) -> Float[Array, " n"] | tuple[Float[Array, " n"], Int[Array, " n"]]: ...
    @concise_errors()
    def __call__(
        self,
        x: Float[ArrayLike, "n *data_shape"],
        *,
        key: PRNGKeyArray | None = None,
        y: Array | None = None,
        batch_size: int | None = None,
        progress: bool | None = None,
        return_nfe: bool = False,
    ) -> Float[Array, " n"] | tuple[Float[Array, " n"], Int[Array, " n"]]:
        """Log-densities `(n,)` of the batch `x` (model scale), and with `return_nfe` the score
        evaluations per example.

        - `key`: for a random trace estimator; example `i` uses `fold_in(key, i)`.
        - `y`: optional conditioning, one per example.
        - `batch_size`: examples per compiled call (a progress bar when there are several);
          with batched solves, the examples in flight together, which bounds memory (by
          default 64 per device; with `one_at_a_time`, by default all in one call).
        """
        x = check_batch(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(
                f"x must be floats in model scale, got dtype {x.dtype}; for integer images use "
                "sgm.bits_per_dim (it dequantizes and scales them)."
            )
        n = x.shape[0]
        y = check_labels(y, n, num_classes=class_count(self.score))
        batch_size = check_int("batch_size", batch_size, none=True)
        if self.trace.needs_key and key is None:
            raise ValueError(
                f"{type(self.trace).__name__} needs a key: pass key=jr.key(...), or "
                "trace=sgm.Exact()."
            )
        key = None if key is None else check_key(key)
        check_finite_score(self.score, self.sde, x, y, size=batch_size)  # before the solve
        keys = example_keys(jr.key(0) if key is None else key, n)
        lp, nfe = self.solve_keyed(x, keys, y, batch_size, progress)
        return (lp, nfe) if return_nfe else lp

    def solve_keyed(self, x, keys, y=None, batch_size=None, progress=None):
        """`(log p_t0(x), nfe)` of a checked batch with each example's key given; the
        failed solves are reported."""
        n = x.shape[0]

        def solve(x, keys, y):  # the examples of this process (all in a one-process job)
            m_all = x.shape[0]
            devices = data_mesh().devices.size
            if batch_size is not None:
                size = min(batch_size, m_all)
            else:
                size = m_all if self.one_at_a_time else min(_IN_FLIGHT * devices, m_all)
            starts = range(0, m_all, size)
            show = len(starts) > 1 if progress is None else progress
            out, nfes = [], []
            for i in progress_bar(starts, desc="log-likelihood", disable=not show, unit="batch"):
                part = slice(i, i + size)
                m = len(range(m_all)[part])
                args = (x[part], keys[part], None if y is None else y[part])
                # Pad to the fixed batch size (one compilation), then to the device count.
                args = pad_to_devices(pad_batch(args, m, size), size, devices)
                lp, nfe = _loglik_batch(self, *args)
                out.append(lp[:m])
                nfes.append(nfe[:m])
            return jnp.concatenate(out), jnp.concatenate(nfes)

        lp, nfe = split_examples(solve, n, x, keys, y)
        if isinstance(lp, Tracer):  # differentiated or traced by the caller
            return lp, nfe
        bad = np.flatnonzero(~np.isfinite(np.asarray(lp)))
        if bad.size:
            per_step, initial = solver_evaluations(self.solver)
            limit = per_step * self.max_steps + initial
            reason = (
                f"the solve reached max_steps={self.max_steps}: raise max_steps or loosen rtol/atol"
                if np.any(np.asarray(nfe)[bad] >= limit)
                else "the score or the data is not finite"
            )
            raise RuntimeError(
                f"no finite log-likelihood for {bad.size} of {n} examples (first: index "
                f"{bad[0]}): {reason}."
            )
        return lp, nfe


@eqx.filter_jit
def _loglik_batch(ll: LogLikelihood, x, keys, y):
    precision = (
        contextlib.nullcontext()
        if ll.precision is None
        else jax.default_matmul_precision(ll.precision)
    )
    # the products traced here carry the precision; inside the second context, also the
    # tracing of `check_score`, whose jaxpr JAX reuses for the same call in the solve
    with precision, unchecked_unless_labelled(y):
        # Checked while tracing: once per score, shape and dtype, not on every call.
        check_score(ll.score, ll.sde, x.shape[1:], y)
        batched = not ll.one_at_a_time
        if y is None:
            return map_examples(lambda x, k: ll.one(x, k), (x, keys), batched=batched)
        return map_examples(ll.one, (x, keys, y), batched=batched)


@overload
def log_likelihood(
    score,
    sde: AbstractSDE,
    x: Float[ArrayLike, "n *data_shape"],
    *,
    key: PRNGKeyArray | None = None,
    y: Array | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    return_nfe: Literal[False] = False,
    **options,
) -> Float[Array, " n"]: ...
@overload
def log_likelihood(
    score,
    sde: AbstractSDE,
    x: Float[ArrayLike, "n *data_shape"],
    *,
    key: PRNGKeyArray | None = None,
    y: Array | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    return_nfe: Literal[True],
    **options,
) -> tuple[Float[Array, " n"], Int[Array, " n"]]: ...
@overload
def log_likelihood(
    score,
    sde: AbstractSDE,
    x: Float[ArrayLike, "n *data_shape"],
    *,
    key: PRNGKeyArray | None = None,
    y: Array | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    return_nfe: bool,
    **options,
) -> Float[Array, " n"] | tuple[Float[Array, " n"], Int[Array, " n"]]: ...
def log_likelihood(
    score,
    sde: AbstractSDE,
    x: Float[ArrayLike, "n *data_shape"],
    *,
    key: PRNGKeyArray | None = None,
    y: Array | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    return_nfe: bool = False,
    **options,
) -> Float[Array, " n"] | tuple[Float[Array, " n"], Int[Array, " n"]]:
    """`LogLikelihood(score, sde, **options)(x, key=key, ...)`: log-densities in nats, one per
    example; see `LogLikelihood` for the options (`trace`, `rtol`, `atol`, `solver`,
    `max_steps`, `variables`) and the call's arguments.

    **Returns:** log-densities `(n,)`, and with `return_nfe` the NFE `(n,)`.
    """
    ll = LogLikelihood(score, sde, **pop_trace_flags(options, stacklevel=2))
    return ll(x, key=key, y=y, batch_size=batch_size, progress=progress, return_nfe=return_nfe)


def _transition(sde: AbstractSDE, t0, t):
    """`(a, sigma)` of the transition `x_t | x_t0 ~ N(a x_t0, sigma^2 I)` of a linear SDE."""
    m0, s0 = sde.marginal(t0)
    m, s = sde.marginal(t)
    a = m / m0
    return a, jnp.sqrt(jnp.maximum(s**2 - (a * s0) ** 2, 0.0))


def _bound_one(score, sde: AbstractSDE, n_times: int, sigma_data, x, key: PRNGKeyArray, y=None):
    """`(mean, standard error)` over `n_times` samples of the bound on `-log p_t0(x)`."""
    score_fn = score if y is None else (lambda t, x: score(t, x, y=y))
    t0, t1 = sde.t0, sde.t1
    v0, v1 = -0.5 * sde.log_snr(t0), -0.5 * sde.log_snr(t1)
    a1, sigma1 = _transition(sde, t0, t1)

    def sample(key):
        kv, ke, kp = jr.split(key, 3)
        v = v0 + (v1 - v0) * jr.uniform(kv)
        t = sde.time_at_log_snr(-2 * v)
        _, dv_dt = _derivative(lambda t: -0.5 * sde.log_snr(t), t)
        q = dv_dt / (v1 - v0)  # the density of t
        a, sigma = _transition(sde, t0, t)
        eps = jr.normal(ke, x.shape, x.dtype)
        s_plus, s_minus = score_fn(t, a * x + sigma * eps), score_fn(t, a * x - sigma * eps)
        # g^2 (|s|^2 + 2 s.eps / sigma) / 2 over the antithetic pair (eps, -eps)
        sq = 0.5 * (jnp.sum(s_plus**2) + jnp.sum(s_minus**2))
        cross = jnp.sum((s_plus - s_minus) * eps) / sigma
        # A zero-mean control variate: the chi-square noise `|eps|^2` these terms carry when the
        # score's Jacobian is near `-I / n^2`, `n^2 = m^2 c^2 + s^2` (data of std `c`).
        m_t, s_t = sde.marginal(t)
        n2 = (m_t * sigma_data) ** 2 + s_t**2
        kappa = sigma**2 / n2**2 - 2 / n2
        control = kappa * (jnp.sum(eps**2) - x.size)
        h = 0.5 * sde.diffusion(t) ** 2 * (sq + cross - control) - x.size * sde.drift_coeff(t)
        prior = -sde.prior_log_prob(a1 * x + sigma1 * jr.normal(kp, x.shape, x.dtype))
        return prior + h / q

    values = jax.lax.map(sample, jr.split(key, n_times))
    return jnp.mean(values), jnp.std(values, ddof=1) / jnp.sqrt(n_times)


@eqx.filter_jit
def _bound_batch(score, sde, n_times, sigma_data, x, keys, y):
    fn = lambda *a: _bound_one(score, sde, n_times, sigma_data, *a)  # noqa: E731
    args = (x, keys) if y is None else (x, keys, y)
    return map_examples(fn, args, batched=True)


def variational_bound(
    score,
    sde: AbstractSDE,
    x: Float[ArrayLike, "n *data_shape"],
    *,
    key: PRNGKeyArray,
    n_times: int = 64,
    sigma_data: float = 0.5,
    y: Array | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    return_nfe: bool = False,
):
    """The continuous-time variational upper bound on `-log p_t0(x)` in nats (Song et al. 2021,
    *Maximum Likelihood Training of Score-Based Diffusion Models*, theorem 2 with the
    forward process started at `t0` from `x`; Kingma et al. 2021, eq. 17, its VP form):

        -log p_t0(x) <= E[-log pi(x_t1)]
                        + int_t0^t1 E[g^2 (|s(t, x_t)|^2 + 2 s(t, x_t) . eps / sigma_t) / 2
                                     - div f(t)] dt,

    `x_t = a_t x + sigma_t eps` the transition from `t0` (`eps ~ N(0, I)`), which is
    `g^2 (|s - grad log p(x_t | x)|^2 - |grad log p(x_t | x)|^2) / 2 - div f` of theorem 2.
    It bounds the density of the reverse SDE's model; with the exact score and a prior equal to
    the marginal at `t1` it is the model density of the probability-flow ODE. Each example's
    integral is estimated with `n_times` times drawn uniformly in the log noise level
    `log(s_t / m_t)` (for VP and VE the density proportional to `g^2 / s_t^2`, Song et al.
    2021, sec. 4.2), each with an antithetic pair of noises `+-eps` (two score evaluations,
    which cancel the `s . eps / sigma` term's zero-mean part near `t0`) and a prior draw;
    no ODE solve. A zero-mean control variate `kappa_t (|eps|^2 - d)` removes the chi-square
    noise the terms carry for a score whose Jacobian is `-I / (m_t^2 c^2 + s_t^2)` (Gaussian
    data of std `c = sigma_data`); it changes the variance only, never the mean.

    **Arguments:** `score`, `sde` the model; `x` a batch in model scale; `key` for the times and
    noises (example `i` uses `fold_in(key, i)`); `n_times`; `sigma_data`, the control
    variate's `c`; `y` optional conditioning; `batch_size` examples in flight (64 per device
    by default).

    **Returns:** `(bound, standard_error)`, each `(n,)`, and with `return_nfe` the score
    evaluations per example (`2 n_times`).
    """
    check_sde(sde)
    check_float32_model(score)
    x = check_batch(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be floats in model scale, got dtype {x.dtype}.")
    n_times = check_int("n_times", n_times, minimum=2)
    batch_size = check_int("batch_size", batch_size, none=True)
    n = x.shape[0]
    y = check_labels(y, n)
    keys = example_keys(key, n)
    bound, se = bound_keyed(score, sde, x, keys, y, n_times, sigma_data, batch_size, progress)
    if return_nfe:
        return bound, se, jnp.full((n,), 2 * n_times)
    return bound, se


def bound_keyed(score, sde, x, keys, y, n_times, sigma_data=0.5, batch_size=None, progress=None):
    """`(bound, se)` of `variational_bound` for a checked batch `x` with each example's key
    given, in batches of `batch_size` (64 per device by default)."""
    n, devices = x.shape[0], data_mesh().devices.size
    size = min(_IN_FLIGHT * devices if batch_size is None else batch_size, n)
    starts = range(0, n, size)
    show = len(starts) > 1 if progress is None else progress
    means, ses = [], []
    for i in progress_bar(starts, desc="likelihood bound", disable=not show, unit="batch"):
        part = slice(i, i + size)
        m = len(range(n)[part])
        args = (x[part], keys[part], None if y is None else y[part])
        args = pad_to_devices(pad_batch(args, m, size), size, devices)
        mean, se = _bound_batch(score, sde, n_times, sigma_data, *args)
        means.append(mean[:m])
        ses.append(se[:m])
    return jnp.concatenate(means), jnp.concatenate(ses)
