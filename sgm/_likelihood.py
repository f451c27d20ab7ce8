"""Log-likelihoods through the probability-flow ODE (Song et al. 2021, sec. 4.3 and
appendix D.2; Chen et al. 2018; Grathwohl et al. 2019).

With `dx/dt = F(t, x)` the probability-flow ODE, `log p_t0(x(t0)) = log p_t1(x(t1)) +
int_t0^t1 div F(t, x(t)) dt`. The divergence is the exact Jacobian trace, computed from one
linearisation of `F` in chunks of basis vectors, or Hutchinson's estimate `E[v^T (dF/dx) v]`
with probes drawn once per solve (Grathwohl et al. 2019, eq. 7).
"""

import math
from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray
from tqdm.auto import tqdm

from ._checks import check_batch, check_labels, check_score, check_sde
from ._samplers import solve_ode, solver_evaluations
from ._scaler import AffineScaler
from ._sde import AbstractSDE
from ._sharding import shard_batch

_PROBES = ("rademacher", "gaussian")


def exact_trace(linear_fn, shape: tuple[int, ...], chunk_size: int) -> Array:
    """`tr(J)` for the linear map `v -> J v` on arrays of `shape`, applying it to `chunk_size`
    basis vectors at a time so that memory stays `O(chunk_size * d)`."""
    d = math.prod(shape)
    chunk_size = min(chunk_size, d)
    n_chunks = -(-d // chunk_size)
    idx = np.arange(n_chunks * chunk_size).reshape(n_chunks, chunk_size)

    def chunk_trace(rows):
        valid = rows < d
        basis = jax.nn.one_hot(jnp.where(valid, rows, 0), d) * valid[:, None]
        jv = jax.vmap(linear_fn)(basis.reshape(chunk_size, *shape)).reshape(chunk_size, d)
        return jnp.sum(jnp.where(valid, jnp.take_along_axis(jv, rows[:, None] % d, 1)[:, 0], 0))

    return jnp.sum(lax.map(chunk_trace, jnp.asarray(idx)))


def draw_probes(key: PRNGKeyArray, n: int, shape: tuple[int, ...], kind: str) -> Array:
    """`n` Hutchinson probes with `E[v v^T] = I`: Rademacher signs or standard normals."""
    if kind == "rademacher":
        return jr.rademacher(key, (n, *shape), dtype=jnp.result_type(float))
    return jr.normal(key, (n, *shape))


class LogLikelihood(eqx.Module):
    """The bound form of `log_likelihood`: `ll = LogLikelihood(score, sde); ll(x, key=key)`.

    **Arguments:** as `log_likelihood`.
    """

    score: object
    sde: AbstractSDE
    exact: bool = eqx.field(static=True, default=False)
    n_probes: int = eqx.field(static=True, default=1)
    probe: Literal["rademacher", "gaussian"] = eqx.field(static=True, default="rademacher")
    rtol: float = eqx.field(static=True, default=1e-5)
    atol: float = eqx.field(static=True, default=1e-5)
    solver: object = None
    chunk_size: int = eqx.field(static=True, default=128)
    max_steps: int = eqx.field(static=True, default=4096)

    def __check_init__(self):
        check_sde(self.sde)
        if self.probe not in _PROBES:
            raise ValueError(f"probe must be one of {_PROBES}, got {self.probe!r}.")
        if not isinstance(self.n_probes, int) or self.n_probes < 1:
            raise ValueError(f"n_probes must be a positive int, got {self.n_probes!r}.")
        if not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {self.chunk_size!r}.")
        if not (self.rtol > 0 and self.atol > 0):
            raise ValueError(f"rtol and atol must be positive, got {self.rtol}, {self.atol}.")
        if self.solver is not None:
            solver_evaluations(self.solver)

    def one(self, x: Array, key: PRNGKeyArray | None, y: Array | None = None):
        """`(log p_t0(x), nfe)` for one example."""
        score = self.score if y is None else (lambda t, x: self.score(t, x, y=y))
        sde = self.sde
        shape = x.shape
        probes = None if self.exact else draw_probes(key, self.n_probes, shape, self.probe)

        def vector_field(t, state):
            x, _ = state
            drift, linear = jax.linearize(lambda x: sde.ode_drift(score, t, x), x)
            if self.exact:
                div = exact_trace(linear, shape, self.chunk_size)
            else:
                jv = jax.vmap(linear)(probes)
                div = jnp.mean(jnp.sum((probes * jv).reshape(self.n_probes, -1), axis=1))
            return drift, div

        (x1, delta), nfe = solve_ode(
            vector_field,
            (x, jnp.zeros((), x.dtype)),
            sde.t0,
            sde.t1,
            solver=self.solver if self.solver is not None else diffrax.Tsit5(),
            rtol=self.rtol,
            atol=self.atol,
            steps=None,
            max_steps=self.max_steps,
        )
        return sde.prior_log_prob(x1) + delta, nfe

    def __call__(
        self,
        x: Float[ArrayLike, "n *data_shape"],
        *,
        key: PRNGKeyArray | None = None,
        y: Array | None = None,
        batch_size: int | None = None,
        progress: bool | None = None,
        return_nfe: bool = False,
    ):
        x = check_batch(x)
        n = x.shape[0]
        y = check_labels(y, n)
        if not self.exact and key is None:
            raise ValueError(
                "Hutchinson's estimator needs a key: pass key=jr.key(...), or exact=True."
            )
        check_score(self.score, self.sde, x.shape[1:], y)
        keys = jr.split(jr.key(0) if key is None else key, n)
        batch_size = n if batch_size is None else min(batch_size, n)
        starts = range(0, n, batch_size)
        show = len(starts) > 1 if progress is None else progress
        out, nfes = [], []
        for i in tqdm(starts, desc="log-likelihood", disable=not show, unit="batch"):
            part = slice(i, i + batch_size)
            m = len(range(n)[part])
            args = (x[part], keys[part], None if y is None else y[part])
            # Pad to the fixed batch size (one compilation), then to the device count.
            args = shard_batch(_pad(args, m, batch_size), batch_size)
            lp, nfe = _loglik_batch(self, *args)
            out.append(lp[:m])
            nfes.append(nfe[:m])
        lp, nfe = jnp.concatenate(out), jnp.concatenate(nfes)
        return (lp, nfe) if return_nfe else lp


def _pad(tree, m: int, size: int):
    if m == size:
        return tree
    return jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], size - m, 0)]), tree)


@eqx.filter_jit
def _loglik_batch(ll: LogLikelihood, x, keys, y):
    if y is None:
        return jax.vmap(lambda x, k: ll.one(x, k))(x, keys)
    return jax.vmap(ll.one)(x, keys, y)


def log_likelihood(
    score,
    sde: AbstractSDE,
    x: Float[ArrayLike, "n *data_shape"],
    *,
    key: PRNGKeyArray | None = None,
    exact: bool = False,
    n_probes: int = 1,
    probe: Literal["rademacher", "gaussian"] = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver=None,
    y: Array | None = None,
    batch_size: int | None = None,
    chunk_size: int = 128,
    progress: bool | None = None,
    return_nfe: bool = False,
) -> Float[Array, " n"] | tuple[Float[Array, " n"], Int[Array, " n"]]:
    """Log-density `log p_t0(x)` in nats of each example under the model defined by `score`
    and `sde`, by solving the probability-flow ODE from `t0` to `t1` with diffrax.

    **Arguments:**

    - `score`: a callable `score(t, x)` on one example.
    - `sde`: its SDE; the integral starts at `sde.t0` and ends at the prior at `sde.t1`.
    - `x`: a batch `(n, *data_shape)` in model scale.
    - `key`: needed for Hutchinson's estimator (`exact=False`).
    - `exact`: the full Jacobian trace (`d` Jacobian-vector products per evaluation, in chunks
      of `chunk_size`) instead of Hutchinson's estimate.
    - `n_probes`, `probe`: Hutchinson probes per example (`"rademacher"` or `"gaussian"`), drawn
      once and fixed over the solve.
    - `rtol`, `atol`, `solver`: diffrax step-size control and solver (default `Tsit5`).
    - `y`: optional conditioning, one per example.
    - `batch_size`: evaluate this many examples per compiled call, with a progress bar.
    - `return_nfe`: also return the score evaluations (each a linearisation) per example.

    **Returns:** log-densities `(n,)`, and with `return_nfe` the NFE `(n,)`.
    """
    ll = LogLikelihood(
        score, sde, exact=exact, n_probes=n_probes, probe=probe, rtol=rtol, atol=atol,
        solver=solver, chunk_size=chunk_size,
    )  # fmt: skip
    return ll(x, key=key, y=y, batch_size=batch_size, progress=progress, return_nfe=return_nfe)


def bits_per_dim(
    score,
    sde: AbstractSDE,
    images: Int[ArrayLike, "n *data_shape"],
    *,
    key: PRNGKeyArray,
    num_bits: int = 8,
    n_dequant: int = 1,
    scaler=AffineScaler(),
    **likelihood_kwargs,
) -> Float[Array, " n"]:
    """Bits per dimension of integer images under uniform dequantization (Theis et al. 2016;
    Song et al. 2021, appendix D.2).

    `v = images + u`, `u ~ U[0, 1)^D`, is a continuous variable on `[0, 2^b)^D` whose density
    lower-bounds the discrete likelihood. The model sees `x = scaler(v / 2^b)`, so
    `log p(v) = log p_x(x) + sum log |scaler'(v / 2^b)| - D log 2^b`, the log-determinant being
    obtained by differentiating `scaler` (it must act elementwise). Returns
    `-log p(v) / (D log 2)`, averaged over `n_dequant` draws of `u`.

    **Arguments:**

    - `score`, `sde`: the model.
    - `images`: integers in `[0, 2^num_bits)`, shaped `(n, *data_shape)`.
    - `key`: for the dequantization noise and Hutchinson's probes.
    - `num_bits`: bits per pixel of the data.
    - `n_dequant`: dequantization draws per image.
    - `scaler`: elementwise map from `[0, 1]` to model scale (default `[-1, 1]`).
    - `likelihood_kwargs`: passed to `log_likelihood` (`exact`, `n_probes`, `rtol`, ...).
    """
    images = jnp.asarray(images)
    if images.ndim < 2:
        raise ValueError(f"images must be shaped (n, *data_shape), got {images.shape}.")
    if not jnp.issubdtype(images.dtype, jnp.integer):
        if not bool(jnp.all(images == jnp.round(images))):
            raise ValueError("images must hold integer values (e.g. uint8 pixels), not floats.")
    levels = 2**num_bits
    as_float = images.astype(jnp.float32)
    if bool(jnp.any(as_float < 0)) or bool(jnp.any(as_float >= levels)):
        raise ValueError(f"images must lie in [0, 2**num_bits) = [0, {levels}).")
    if not isinstance(n_dequant, int) or n_dequant < 1:
        raise ValueError(f"n_dequant must be a positive int, got {n_dequant!r}.")
    dim = math.prod(images.shape[1:])
    images = images.astype(jnp.result_type(float))
    total = jnp.zeros(images.shape[0])
    for rkey in jr.split(key, n_dequant):
        ukey, lkey = jr.split(rkey)
        u = (images + jr.uniform(ukey, images.shape)) / levels
        x, slope = jax.jvp(scaler, (u,), (jnp.ones_like(u),))
        log_det = jnp.sum(jnp.log(jnp.abs(slope)).reshape(len(u), -1), axis=1)
        lp = log_likelihood(score, sde, x, key=lkey, **likelihood_kwargs)
        total = total + (lp + log_det - dim * math.log(levels))
    return -total / n_dequant / (dim * math.log(2))
