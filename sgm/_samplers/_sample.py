"""`sgm.sample`: the entry point that draws the prior, then batches and shards any sampler."""

import functools
import warnings

import equinox as eqx
import jax
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._checks import (
    check_key,
    check_labels,
    check_score,
    check_sde,
    check_shape,
    count_non_finite,
)
from .._model_checks import check_model_sde, class_count
from .._sde import AbstractSDE
from .._sharding import shard_batch
from .._traced_checks import concise_errors, unchecked_unless_labelled
from ..distributed import split_examples
from ._base import BATCH_AXIS, AbstractSampler


@eqx.filter_jit
def _sample_batch(score, sde, sampler, keys, y, data_shape):
    # inside the context also the tracing of `check_score`, whose jaxpr JAX reuses for the
    # same call in the sampler
    with unchecked_unless_labelled(y):
        # Checked while tracing: once per score, shape and dtype, not on every call.
        check_score(score, sde, data_shape, y)

        def one(key, y_i):
            bound = score if y_i is None else functools.partial(_call_with_y, score, y_i)
            pkey, skey = jr.split(key)
            return sampler.sample_one(bound, sde, sde.prior_sample(pkey, data_shape), key=skey)

        if y is None:
            return jax.vmap(lambda k: one(k, None), axis_name=BATCH_AXIS)(keys)
        return jax.vmap(one, axis_name=BATCH_AXIS)(keys, y)


def _call_with_y(score, y, t, x):
    return score(t, x, y=y)


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
    """Draws `n` samples: for each a prior draw at `t1`, mapped to a sample by `sampler` on the
    reverse SDE or probability-flow ODE of `sde` with `score`; batched with `jax.vmap` and
    sharded over the local devices; in a multi-process job each process draws its share and
    every process receives all of them. Warns when the sampler knows its settings to do badly
    with `sde` (`sampler.poor_combination(sde)`).

    **Arguments:**

    - `score`: a callable `score(t, x)` on one example (a `ScoreModel` or a closed form).
    - `sde`: the SDE the score belongs to.
    - `sampler`: an `EulerMaruyama`, `PredictorCorrector`, `ProbabilityFlowODE`, ...
    - `key`: a PRNG key; example `i` uses the `i`-th of `jr.split(key, n)`, split once more
      into the prior draw's key and the sampler's.
    - `shape`: `(n, *data_shape)`.
    - `y`: optional conditioning, one per example (`score(t, x, y=y[i])`); required for a
      class-conditional model (labels in `[0, num_classes)`; the null label `num_classes`, an
      unconditional draw, only when asked for explicitly: `y=jnp.full(n, num_classes)`).
    - `return_nfe`: also return the score evaluations used per example.

    **Returns:** the samples `(n, *data_shape)` in data scale (see `AbstractSampler`), and with
    `return_nfe` the NFE `(n,)`. Warns with their number when some samples are not finite.

    A `ScoreModel` (also inside a guided score) must be given its own SDE (`model.sde`).
    """
    check_sde(sde)
    check_model_sde(score, sde)
    key = check_key(key)
    if not isinstance(sampler, AbstractSampler):
        raise ValueError(
            f"sampler must be an sgm sampler (EulerMaruyama, PredictorCorrector, "
            f"ProbabilityFlowODE, ...), got {type(sampler).__name__}."
        )
    reason = sampler.poor_combination(sde)
    if reason is not None:
        warnings.warn(reason, stacklevel=2)
    shape = check_shape(shape)
    n, data_shape = shape[0], shape[1:]
    y = check_labels(y, n, num_classes=class_count(score))
    if not callable(score):
        raise ValueError(f"score must be a callable score(t, x), got {type(score).__name__}.")

    def draw(keys, y):  # the examples of this process (all of them in a one-process job)
        m = len(keys)
        keys, y = shard_batch((keys, y), m)
        x, nfe = _sample_batch(score, sde, sampler, keys, y, data_shape)
        return x[:m], nfe[:m]

    with concise_errors():
        x, nfe = split_examples(draw, n, jr.split(key, n), y)
    if bad := count_non_finite(x):
        warnings.warn(
            f"{bad} of {n} samples are not finite (NaN or infinite): the score is not finite "
            "somewhere on the path (check the model's weights), or the sampler diverged (more "
            "steps, or another sampler).",
            RuntimeWarning,
            stacklevel=2,
        )
    return (x, nfe) if return_nfe else x
