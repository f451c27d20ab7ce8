"""`sgm.sample`: the entry point that batches and shards any sampler."""

import functools
import warnings

import diffrax
import equinox as eqx
import jax
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._checks import check_labels, check_score, check_sde, check_shape
from ._fast_samplers import DPMSolver, HeunSampler
from ._samplers import BATCH_AXIS, AbstractSampler, ProbabilityFlowODE
from ._sde import VESDE, AbstractSDE
from ._sharding import shard_batch


@eqx.filter_jit
def _sample_batch(score, sde, sampler, keys, y, data_shape):
    def one(key, y_i):
        bound = score if y_i is None else functools.partial(_call_with_y, score, y_i)
        return sampler.sample_one(bound, sde, key, data_shape)

    if y is None:
        return jax.vmap(lambda k: one(k, None), axis_name=BATCH_AXIS)(keys)
    return jax.vmap(one, axis_name=BATCH_AXIS)(keys, y)


def _call_with_y(score, y, t, x):
    return score(t, x, y=y)


def poor_combination(sde: AbstractSDE, sampler: AbstractSampler) -> str | None:
    """Why `sampler` is known to do badly with `sde`, or None. The thresholds come from
    `benchmarks/sampler_accuracy.py` (see the README's tables)."""
    ve = isinstance(sde, VESDE)
    if isinstance(sampler, HeunSampler) and not ve and sampler.steps < 18:
        return (
            f"HeunSampler with {sampler.steps} levels on {type(sde).__name__}: its sigma_max = "
            "s/m is large (148 at t = 1), and fewer than 18 levels measured far off (e.g. -1.2 "
            "nats of mean log-density at 10 levels on a 2-D mixture); use DPMSolver or more levels."
        )
    if isinstance(sampler, DPMSolver) and not ve and sampler.steps < 15:
        return (
            f"DPMSolver with {sampler.steps} steps on {type(sde).__name__} measured far off "
            "(-0.8 nats of mean log-density at 10 steps on a 2-D mixture); use 15-20 steps."
        )
    if isinstance(sampler, ProbabilityFlowODE) and ve and sampler.steps is not None:
        low_order = isinstance(sampler.solver, _LOW_ORDER)
        if sampler.steps < 10 or (low_order and sampler.steps < 100):
            return (
                f"the VE probability-flow ODE with {sampler.steps} fixed steps of "
                f"{type(sampler.solver).__name__}: its dynamics span several decades of noise, "
                "so fixed steps waste evaluations at large sigma and miss the small ones "
                "(measured on a 2-D mixture: Euler -9.4 nats of mean log-density at 10 steps, "
                "-0.36 at 20, +0.14 at 50; Tsit5 -74 at 5); use adaptive steps (steps=None), "
                "Tsit5 with 10 or more steps, or HeunSampler."
            )
    return None


# Explicit solvers of order 1 and 2, which need many fixed steps on the VE ODE.
_LOW_ORDER = (diffrax.Euler, diffrax.Heun, diffrax.Midpoint, diffrax.Ralston)


def sample(
    score,
    sde: AbstractSDE,
    sampler: AbstractSampler,
    *,
    key: PRNGKeyArray,
    shape: tuple[int, ...],
    y: Array | None = None,
    return_nfe: bool = False,
) -> Float[Array, "n *data_shape"] | tuple[Float[Array, "n *data_shape"], Int[Array, " n"]]:
    """Draws `n` samples by running `sampler` on the reverse SDE or probability-flow ODE of
    `sde` with `score`, batched with `jax.vmap` and sharded over the local devices.

    **Arguments:**

    - `score`: a callable `score(t, x)` on one example (a `ScoreModel` or a closed form).
    - `sde`: the SDE the score belongs to.
    - `sampler`: an `EulerMaruyama`, `PredictorCorrector`, `ProbabilityFlowODE`, ...
    - `key`: a PRNG key; example `i` uses the `i`-th of `jr.split(key, n)`.
    - `shape`: `(n, *data_shape)`.
    - `y`: optional conditioning, one per example (`score(t, x, y=y[i])`).
    - `return_nfe`: also return the score evaluations used per example.

    **Returns:** the samples `(n, *data_shape)`, and with `return_nfe` the NFE `(n,)`.
    """
    check_sde(sde)
    if not isinstance(sampler, AbstractSampler):
        raise ValueError(
            f"sampler must be an sgm sampler (EulerMaruyama, PredictorCorrector, "
            f"ProbabilityFlowODE, ...), got {type(sampler).__name__}."
        )
    reason = poor_combination(sde, sampler)
    if reason is not None:
        warnings.warn(reason, stacklevel=2)
    shape = check_shape(shape)
    n, data_shape = shape[0], shape[1:]
    y = check_labels(y, n)
    check_score(score, sde, data_shape, y)
    keys, y = shard_batch((jr.split(key, n), y), n)
    x, nfe = _sample_batch(score, sde, sampler, keys, y, data_shape)
    x, nfe = x[:n], nfe[:n]
    return (x, nfe) if return_nfe else x
