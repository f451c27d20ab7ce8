"""The sampler contract (Song et al. 2021, sec. 4: samplers of the reverse-time SDE and of the
probability-flow ODE).

`sgm.sample` draws the prior; a sampler holds its settings and maps ONE prior draw `x1` to one
sample and the number of score evaluations (NFE) it used,
`sampler.sample_one(score, sde, x1, key=key) -> (x, nfe)`. Every sampler returns the same kind
of result: the scaled state `x / m` at its end time (the data plus noise of std `s / m`), or
with `denoise` Tweedie's `E[x_0 | x_t]` there. Each knows the settings it does badly with
(`poor_combination`), which `sgm.sample` turns into a warning.
"""

import abc
from collections.abc import Callable
from typing import TypeVar, cast

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._checks import check_positive
from .._sde import AbstractSDE

Score = Callable[[Array, Array], Array]

# The vmapped axis `sgm.sample` binds; samplers may reduce over it (`lax.pmean`).
BATCH_AXIS = "batch"

_T = TypeVar("_T")


def plain(value: _T) -> _T:
    """A NumPy integer or float setting as the Python `int` or `float` it stands for, so that
    what a sampler stores (and serialises) has one type; anything else unchanged, for the
    checks to judge (a `bool` stays a `bool` and is refused as a count)."""
    if isinstance(value, np.integer):
        return cast(_T, int(value))
    if isinstance(value, np.floating):
        return cast(_T, float(value))
    return value


def end_time(sde: AbstractSDE, t_end: float | None) -> float:
    """The time sampling stops at: `t_end`, or the SDE's default `sampling_eps`."""
    t_end = sde.sampling_eps if t_end is None else t_end
    if not sde.t0 <= t_end < sde.t1:
        raise ValueError(f"t_end={t_end} must lie in [t0={sde.t0}, t1={sde.t1}).")
    return t_end


class AbstractSampler(eqx.Module):
    """A sampler: settings as fields, `sample_one` maps one prior draw to one sample.

    Every sampler has `denoise` (finish with Tweedie's formula) and `t_end` (the end time, or
    `None` for `sde.sampling_eps`), checked here for all of them.
    """

    denoise: eqx.AbstractVar[bool]
    t_end: eqx.AbstractVar[float | None]

    def __check_init__(self):
        check_positive(f"{type(self).__name__}.t_end", self.t_end, none=True)

    @abc.abstractmethod
    def sample_one(
        self, score: Score, sde: AbstractSDE, x1: Float[Array, "*data_shape"], *, key: PRNGKeyArray
    ) -> tuple[Float[Array, "*data_shape"], Int[Array, ""]]:
        """One sample from the prior draw `x1` (at `sde.t1`), and the score evaluations used;
        `key` is for the sampler's own noise."""

    def poor_combination(self, sde: AbstractSDE) -> str | None:
        """Why this sampler is known to do badly with `sde`, or None (thresholds measured in
        `benchmarks/sampler_accuracy.py`)."""
        return None

    def _finish(self, score, sde, t, x, nfe):
        """The result at the end time `t` from the state `x`: `x / m(t)`, or with `denoise`
        Tweedie's `E[x_0 | x_t]` (one more evaluation)."""
        if self.denoise:
            return sde.denoise(score, t, x), jnp.asarray(nfe + 1)
        return x / sde.marginal(t)[0], jnp.asarray(nfe)


def few_steps_at_large_sigma(sampler, sde, least: int, measured: str, advice: str):
    """The warning for fewer than `least` steps where Karras et al.'s (2022) largest noise level
    `sigma_max = s / m` at `t1` is large (at least 100), as measured on a 2-D mixture in
    `benchmarks/sampler_accuracy.py`; `measured` and `advice` complete the message."""
    sigma_max = float(jnp.exp(-0.5 * sde.log_snr(sde.t1)))
    if sampler.steps >= least or sigma_max < 100:
        return None
    return (
        f"{type(sampler).__name__} with {sampler.steps} steps on {type(sde).__name__}, whose "
        f"sigma_max = s/m is {sigma_max:.0f} at t1, measured far off ({measured} on a 2-D "
        f"mixture under VP); {advice}."
    )
