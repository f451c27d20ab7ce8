"""Trace estimators for the divergence in likelihood computations (Chen et al. 2018;
Grathwohl et al. 2019; Meyer et al. 2021).

An estimator computes `tr(A)` of a linear map `A` on arrays of one example's shape, given as a
function `v -> A v` (a linearisation: one forward-mode product per vector). Its randomness is
drawn once per solve with `draw(key, shape)` and held fixed over the solve, so that the
integral of the estimates is an unbiased estimate of the integral of the traces. A caller that
knows `A + shift I` to be the map of lower variance passes `shift` (a control variate: the
random estimators work on `A + shift I` and subtract `shift d`, known exactly).
"""

import abc
import math
from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, PRNGKeyArray, PyTree, Scalar

from ._checks import check_int

LinearMap = Callable[[Array], Array]
_PROBES = ("rademacher", "gaussian")


def balanced_chunks(d: int, chunk_size: int) -> tuple[int, int]:
    """`(n_chunks, size)`: the fewest chunks of at most `chunk_size` basis vectors, all of one
    size, that cover `d` (784 with 128 gives 7 chunks of 112, no padding, not 7 of 128)."""
    n_chunks = -(-d // min(chunk_size, d))
    return n_chunks, -(-d // n_chunks)


def exact_trace(
    linear_fn: LinearMap, shape: tuple[int, ...], chunk_size: int, balanced: bool = True
) -> Scalar:
    """`tr(A)` from `A e_i` for every basis vector `e_i`, `vmap`ped over balanced chunks of at
    most `chunk_size` vectors (memory `O(chunk_size d)`), the chunks one after another.
    `balanced=False` uses chunks of exactly `chunk_size`, the last padded (for comparison)."""
    d = math.prod(shape)
    n_chunks, size = balanced_chunks(d, chunk_size)
    if not balanced:
        size = min(chunk_size, d)
    rows = np.arange(n_chunks * size).reshape(n_chunks, size)

    def chunk_trace(rows):
        valid = rows < d
        idx = jnp.where(valid, rows, 0)
        basis = jax.nn.one_hot(idx, d) * valid[:, None]
        av = jax.vmap(linear_fn)(basis.reshape(size, *shape)).reshape(size, d)
        return jnp.sum(jnp.where(valid, jnp.take_along_axis(av, idx[:, None], 1)[:, 0], 0))

    if n_chunks == 1:
        return chunk_trace(jnp.asarray(rows[0]))
    return jnp.sum(lax.map(chunk_trace, jnp.asarray(rows)))


def draw_probes(key: PRNGKeyArray, n: int, shape: tuple[int, ...], kind: str) -> Array:
    """`n` probes with `E[v v^T] = I`: Rademacher signs or standard normals."""
    if kind == "rademacher":
        return jr.rademacher(key, (n, *shape), dtype=jnp.result_type(float))
    return jr.normal(key, (n, *shape))


def _check_probes(name: str, n_probes, probe, least: int = 1) -> None:
    if probe not in _PROBES:
        raise ValueError(f"probe must be one of {_PROBES}, got {probe!r}.")
    check_int(f"{name}.n_probes", n_probes, minimum=least)


def _shifted(linear_fn: LinearMap, shift: float) -> LinearMap:
    if isinstance(shift, int | float) and shift == 0:
        return linear_fn
    return lambda v: linear_fn(v) + shift * v


def _needed_key(estimator, key: PRNGKeyArray | None) -> PRNGKeyArray:
    if key is None:
        raise ValueError(f"{type(estimator).__name__} draws random probes: it needs a key.")
    return key


class AbstractTraceEstimator(eqx.Module):
    """Estimates `tr(A)` from products `A v`; `draw` gives its randomness for one solve."""

    @property
    @abc.abstractmethod
    def needs_key(self) -> bool:
        """Whether `draw` uses its key."""

    @abc.abstractmethod
    def draw(self, key: PRNGKeyArray | None, shape: tuple[int, ...]) -> PyTree:
        """The random vectors for one solve (`None` when there are none)."""

    @abc.abstractmethod
    def __call__(
        self, linear_fn: LinearMap, shape: tuple[int, ...], probes, shift: float = 0.0
    ) -> Scalar:
        """The estimate of `tr(A)` for `A v = linear_fn(v)` and the draw `probes`."""

    @abc.abstractmethod
    def products(self, d: int) -> int:
        """The products `A v` one estimate costs for a `d`-dimensional example."""


class Exact(AbstractTraceEstimator):
    """The exact trace: `d` products with the basis vectors per evaluation, in balanced chunks
    of at most `chunk_size`, each chunk one `vmap`ped (batched) application.

    **Arguments:**

    - `chunk_size`: the most basis vectors per batched product; memory grows with it.
    """

    chunk_size: int = eqx.field(static=True, default=128)

    def __check_init__(self):
        check_int("Exact.chunk_size", self.chunk_size)

    @property
    def needs_key(self):
        return False

    def draw(self, key, shape):
        return None

    def __call__(self, linear_fn, shape, probes, shift=0.0):
        return exact_trace(linear_fn, shape, self.chunk_size)

    def products(self, d):
        return d


class Hutchinson(AbstractTraceEstimator):
    """Hutchinson's estimator `mean_i v_i^T A v_i` with `E[v v^T] = I` (Hutchinson 1989;
    Grathwohl et al. 2019, eq. 7); its variance is `2 (||A||_F^2 - sum_i A_ii^2) / n_probes`
    for Rademacher probes and `2 ||A||_F^2 / n_probes` for Gaussian ones (symmetric `A`).

    **Arguments:**

    - `n_probes`: probes per example, drawn once per solve.
    - `probe`: `"rademacher"` (the lower variance) or `"gaussian"`.
    """

    n_probes: int = eqx.field(static=True, default=1)
    probe: Literal["rademacher", "gaussian"] = eqx.field(static=True, default="rademacher")

    def __check_init__(self):
        _check_probes("Hutchinson", self.n_probes, self.probe)

    @property
    def needs_key(self):
        return True

    def draw(self, key, shape):
        return draw_probes(_needed_key(self, key), self.n_probes, shape, self.probe)

    def __call__(self, linear_fn, shape, probes, shift=0.0):
        av = jax.vmap(_shifted(linear_fn, shift))(probes)
        est = jnp.mean(jnp.sum((probes * av).reshape(len(probes), -1), axis=1))
        return est - shift * math.prod(shape)

    def products(self, d):
        return self.n_probes


class HutchPlusPlus(AbstractTraceEstimator):
    """Hutch++ (Meyer et al. 2021, algorithm 1): with `k = n_probes / 3`, the exact trace of
    `A` on the range `Q` of `A S` (`k` sketch vectors) plus Hutchinson's estimate with `k`
    probes on the rest, `(I - Q Q^T) A (I - Q Q^T)`. Unbiased for every `A`; when most of the
    trace lies in a few directions (a denoiser's Jacobian near the data) the variance falls
    well below Hutchinson's at the same number of products.

    **Arguments:**

    - `n_probes`: products per evaluation, a multiple of 3.
    - `probe`: distribution of the sketch and of the probes.
    """

    n_probes: int = eqx.field(static=True, default=3)
    probe: Literal["rademacher", "gaussian"] = eqx.field(static=True, default="rademacher")

    def __check_init__(self):
        _check_probes("HutchPlusPlus", self.n_probes, self.probe, least=3)
        if self.n_probes % 3:
            raise ValueError(
                f"HutchPlusPlus: n_probes must be a multiple of 3, got {self.n_probes}."
            )

    @property
    def needs_key(self):
        return True

    def draw(self, key, shape):
        skey, gkey = jr.split(_needed_key(self, key))
        k = self.n_probes // 3
        return draw_probes(skey, k, shape, self.probe), draw_probes(gkey, k, shape, self.probe)

    def __call__(self, linear_fn, shape, probes, shift=0.0):
        sketch, g = probes
        k = len(g)
        apply = jax.vmap(_shifted(linear_fn, shift))
        q, _ = jnp.linalg.qr(apply(sketch).reshape(k, -1).T)  # (d, k), orthonormal columns
        qs = q.T.reshape(k, *shape)
        low_rank = jnp.sum(q.T * apply(qs).reshape(k, -1))
        g_flat = g.reshape(k, -1)
        resid = g_flat - (g_flat @ q) @ q.T
        a_resid = apply(resid.reshape(k, *shape)).reshape(k, -1)
        est = low_rank + jnp.mean(jnp.sum(resid * a_resid, axis=1))
        return est - shift * math.prod(shape)

    def products(self, d):
        return self.n_probes
