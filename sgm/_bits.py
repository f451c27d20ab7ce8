"""Bits per dimension of integer images: the probability-flow likelihood (or the variational
bound) of dequantized images, with importance-weighted dequantization (Theis et al. 2016; Ho et
al. 2019, Flow++, sec. 3.1; Burda et al. 2016; Song et al. 2021, appendix D.2), and the
protocol of the estimate (`BitsPerDimInfo`)."""

import dataclasses
import math
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ._checks import (
    check_finite_score,
    check_int,
    check_integer_images,
    check_key,
    check_labels,
    check_sde,
)
from ._likelihood import LogLikelihood, bound_keyed
from ._model_checks import check_float32_model, check_model_sde, class_count
from ._scaler import AffineScaler
from ._sde import AbstractSDE
from ._sharding import example_keys

_ESTIMATORS = ("importance", "mean")
_METHODS = ("ode", "bound")


@dataclasses.dataclass(frozen=True)
class BitsPerDimInfo:
    """The protocol of a bits/dim estimate, returned by `bits_per_dim(..., return_info=True)`.

    - `bits_per_dim`: the mean over the images; `std_over_images`: the sample standard deviation
      of the per-image values (the spread of the data, estimator noise included);
      `sem`: `std_over_images / sqrt(n_images)`, the standard error of the mean.
    - `estimator_std`: the estimator's own noise per image (the RMS over images of each
      image's standard error: over the `n_dequant` draws for the ODE, over the times for the
      bound; None for one ODE draw).
    - `n_images`, `n_dequant`, `estimator` (`"importance"` or `"mean"`), `method` (`"ode"` or
      `"bound"`), `dequantizer`, `trace`, `rtol`, `atol`, `solver`, `t0`, `t1`, `n_times`
      (the bound's time samples per draw).
    - `nfe_mean`, `nfe_max`: score evaluations per solve (ODE) or per image (bound).
    - `solver_error`: with `solver_check=m`, the largest change in bits/dim of the first `m`
      images re-solved at tolerances ten times tighter (same draws and probes); else None.
    """

    bits_per_dim: float
    std_over_images: float
    sem: float
    estimator_std: float | None
    n_images: int
    n_dequant: int
    estimator: str
    method: str
    dequantizer: str
    trace: str | None
    rtol: float | None
    atol: float | None
    solver: str | None
    t0: float
    t1: float
    n_times: int | None
    nfe_mean: float
    nfe_max: int
    solver_error: float | None = None

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)


def bits_per_dim(
    score,
    sde: AbstractSDE,
    images: Int[ArrayLike, "n *data_shape"],
    *,
    key: PRNGKeyArray,
    num_bits: int = 8,
    n_dequant: int = 1,
    scaler=AffineScaler(),
    dequantizer=None,
    estimator: Literal["importance", "mean"] = "importance",
    method: Literal["ode", "bound"] = "ode",
    n_times: int = 64,
    return_info: bool = False,
    solver_check: int = 0,
    first_index: int = 0,
    **likelihood_kwargs,
) -> Float[Array, " n"] | tuple[Float[Array, " n"], BitsPerDimInfo]:
    """Bits per dimension of integer images under dequantization (Theis et al. 2016; Ho et al.
    2019, sec. 3.1; Song et al. 2021, appendix D.2).

    `v = images + u`, `u ~ q(u | k)` (uniform on `[0, 1)^D` by default), is a continuous variable
    on `[0, 2^b)^D`, and `log P(k) >= E_q[log p(v) - log q(u | k)]`. The model sees
    `x = scaler(v / 2^b)`, so `log p(v) = log p_x(x) + sum log |scaler'(v / 2^b)| - D log 2^b`,
    the log-determinant obtained by differentiating `scaler` (it must act elementwise).

    With `n_dequant = K` draws, `estimator="importance"` (the default) returns the
    importance-weighted bound `-log (1/K sum_k p(v_k) / q(u_k | k)) / (D log 2)` (Burda et al.
    2016, eq. 8; Ho et al. 2019, eq. 12), which decreases towards `-log2 P(k) / D` as `K` grows;
    `estimator="mean"` the average of the K single-draw bounds (the same bound as `K = 1`,
    with less variance).

    `method="bound"` replaces `log p_x(x)` by the continuous-time variational lower bound of
    `sgm.variational_bound` (no ODE solve; `n_times` importance-sampled times per draw), an
    upper bound on bits/dim; its draws are averaged (`estimator` must be `"mean"`).

    **Arguments:**

    - `score`, `sde`: the model.
    - `images`: integers in `[0, 2^num_bits)`, shaped `(n, *data_shape)`.
    - `key`: for the dequantization noise and the probes (or the bound's times): draw `j` of
      image `i` takes them from `fold_in(fold_in(key, j), first_index + i)` (split in two),
      so an image's values depend on the key, its index in the data set and the draw alone.
    - `num_bits`: bits per pixel of the data.
    - `n_dequant`: dequantization draws per image.
    - `scaler`: elementwise map from `[0, 1]` to model scale (default `[-1, 1]`).
    - `dequantizer`: an `sgm.AbstractDequantizer` (e.g. a trained `VariationalDequantizer`),
      whose `num_bits` and affine `scaler` then replace those arguments, and whose density
      `log q` enters the weights; None for uniform noise.
    - `estimator`, `method`, `n_times`: see above.
    - `return_info`: also return a `BitsPerDimInfo`, the protocol of the estimate.
    - `solver_check`: re-solve this many images at ten times tighter tolerances and report the
      largest change (`BitsPerDimInfo.solver_error`; ODE only).
    - `first_index`: the index in the data set of `images[0]`: a data set evaluated in parts,
      `images[a:b]` with `first_index=a`, gives the values of one call on all of it (bit for
      bit with `one_at_a_time=True`, else up to the rounding that batch companions cause).
    - `likelihood_kwargs`: passed to `sgm.LogLikelihood` and its call (`trace`, `rtol`,
      `batch_size`, ...); for the bound, `batch_size` only.

    **Returns:** bits/dim `(n,)`, and with `return_info` the `BitsPerDimInfo`.

    Float images are refused unless they hold integer levels and not only 0s and 1s (data in
    `[0, 1]` are not pixel levels: pass `np.round(x * 255).astype(np.uint8)`).
    """
    check_sde(sde)
    check_model_sde(score, sde)
    check_float32_model(score)
    key = check_key(key)
    call_kw = {
        k: likelihood_kwargs.pop(k)
        for k in ("batch_size", "progress", "y")
        if k in likelihood_kwargs
    }
    _check_protocol(estimator, method, n_dequant, dequantizer, likelihood_kwargs)
    if dequantizer is not None:
        num_bits, scaler = dequantizer.num_bits, dequantizer.scaler
    images = check_integer_images(images, num_bits)
    n_dequant = check_int("n_dequant", n_dequant)
    n_times = check_int("n_times", n_times)
    solver_check = check_int("solver_check", solver_check, minimum=0)
    first_index = check_int("first_index", first_index, minimum=0)
    ll = LogLikelihood(score, sde, **likelihood_kwargs)
    batch_size = check_int("batch_size", call_kw.get("batch_size"), none=True)
    draws = _Draws.of(images, key, num_bits, n_dequant, scaler, dequantizer, first_index)
    y = draws.labels(call_kw.get("y"), class_count(score))
    lp, nfes, est_var = _log_p(
        score, sde, ll if method == "ode" else None, draws, y, n_times, batch_size, call_kw
    )
    log_w = draws.log_weights(lp)
    values = _estimate(log_w, estimator) * draws.to_bits
    if not return_info:
        return values
    solver_error = None
    if solver_check and method == "ode":
        tight = _tighter(ll, likelihood_kwargs)
        solver_error = _solver_error(tight, draws, y, values, solver_check, estimator, batch_size)
    protocol = dict(estimator=estimator, method=method, dequantizer=dequantizer, n_times=n_times)
    nfes = np.asarray(jnp.stack(nfes))
    ode = ll if method == "ode" else None
    return values, _info(values, log_w, est_var, nfes, draws, solver_error, ode, sde, protocol)


def _check_protocol(estimator, method, n_dequant, dequantizer, solver_options) -> None:
    if dequantizer is not None:
        from ._dequant import AbstractDequantizer

        if not isinstance(dequantizer, AbstractDequantizer):
            raise ValueError(
                f"dequantizer must be an sgm.AbstractDequantizer, got {type(dequantizer).__name__}."
            )
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator must be one of {_ESTIMATORS}, got {estimator!r}.")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}.")
    if method == "bound" and estimator == "importance" and n_dequant > 1:
        raise ValueError(
            "the bound's draws are averaged: pass estimator='mean' with method='bound' (a "
            "log-mean-exp of noisy lower bounds is not a bound)."
        )
    if method == "bound" and solver_options:
        raise ValueError(f"method='bound' takes no solver options, got {sorted(solver_options)}.")


@dataclasses.dataclass(frozen=True)
class _Draws:
    """The `K` dequantization draws of `n` images, draw-major (`K n` rows): the model-scale
    inputs `x`, their keys (probes or the bound's times), and `offset`, the change of variables
    `sum log |scaler'| - log q(u | k) - D log 2^b` that turns `log p_x(x)` into a log-weight
    of `P(k)`."""

    x: Array
    keys: Array
    offset: Array
    n: int
    n_dequant: int
    to_bits: float

    @classmethod
    def of(cls, images, key, num_bits, n_dequant, scaler, dequantizer, first_index) -> "_Draws":
        levels = 2**num_bits
        n, dim = images.shape[0], math.prod(images.shape[1:])

        def draw(j):
            ukey, lkey = jr.split(jr.fold_in(key, j))
            ukeys = example_keys(ukey, n, first_index)
            if dequantizer is None:
                noise = jax.vmap(lambda k: jr.uniform(k, images.shape[1:]))(ukeys)
                log_q = jnp.zeros(n)
            else:
                images_f = images.astype(jnp.float32)
                noise, log_q = eqx.filter_vmap(dequantizer.noise)(images_f, ukeys)
            u = (images + noise) / levels
            x, slope = jax.jvp(scaler, (u,), (jnp.ones_like(u),))
            log_det = jnp.sum(jnp.log(jnp.abs(slope)).reshape(n, -1), axis=1)
            return x, example_keys(lkey, n, first_index), log_det - log_q - dim * math.log(levels)

        parts = [draw(j) for j in range(n_dequant)]
        x, keys, offset = (jnp.concatenate([p[i] for p in parts]) for i in range(3))
        return cls(x, keys, offset, n, n_dequant, -1.0 / (dim * math.log(2)))

    def labels(self, y, num_classes):
        """The images' labels repeated for every draw (checked), or None."""
        y = None if y is None else jnp.concatenate([jnp.asarray(y)] * self.n_dequant)
        return check_labels(y, self.n_dequant * self.n, num_classes=num_classes)

    def log_weights(self, lp, rows=None) -> Array:
        """`log p(v) - log q(u | k)` in nats, `(n_dequant, n)` (or the draws' `rows`)."""
        offset = self.offset if rows is None else self.offset[rows]
        return (lp + offset).reshape(self.n_dequant, -1)


def _log_p(score, sde, ll, draws: "_Draws", y, n_times, batch_size, call_kw) -> tuple:
    """`log p_x(x)` of the draws, by the ODE (`ll`) or, with `ll=None`, by the variational
    bound; with the score evaluations per row and the bound's estimator variance (None for the
    ODE)."""
    progress = call_kw.get("progress")
    if ll is not None:
        check_finite_score(score, sde, draws.x, y, size=batch_size)  # before the solve
        lp, nfes = ll.solve_keyed(draws.x, draws.keys, y, batch_size, progress)
        return lp, nfes, None
    neg, se = bound_keyed(
        score, sde, draws.x, draws.keys, y, n_times, batch_size=batch_size, progress=progress
    )
    return -neg, jnp.full((draws.x.shape[0],), 2 * n_times), se**2


def _estimate(log_w, estimator: str) -> Array:
    """The per-image estimate in nats from the draws' log-weights `(K, n)`: the
    importance-weighted `log (1/K sum_k w_k)` or the mean of the single-draw bounds."""
    if estimator == "importance":
        return jax.nn.logsumexp(log_w, axis=0) - math.log(log_w.shape[0])
    return jnp.mean(log_w, axis=0)


def _tighter(ll: LogLikelihood, likelihood_kwargs: dict) -> LogLikelihood:
    """`ll` at ten times tighter tolerances."""
    tolerances = {"rtol": ll.rtol / 10, "atol": ll.atol / 10}
    return LogLikelihood(ll.score, ll.sde, **{**likelihood_kwargs, **tolerances})


def _solver_error(tight, draws: _Draws, y, values, m, estimator, batch_size) -> float:
    """The largest change in bits/dim of the first `m` images of every draw re-solved by
    `tight` (the same draws and probes)."""
    m = min(m, draws.n)
    rows = (jnp.arange(draws.n_dequant)[:, None] * draws.n + jnp.arange(m)[None, :]).reshape(-1)
    again, _ = tight.solve_keyed(
        draws.x[rows], draws.keys[rows], None if y is None else y[rows], batch_size
    )
    tight_values = _estimate(draws.log_weights(again, rows), estimator) * draws.to_bits
    return float(jnp.max(jnp.abs(tight_values - values[:m])))


def _info(values, log_w, est_var, nfes, draws, solver_error, ll, sde, protocol: dict):
    """The `BitsPerDimInfo` of an estimate: its spread over images, the estimator's own noise
    (the bound's time samples, or the spread of the ODE's draws), and the protocol (`ll` is the
    ODE's `LogLikelihood`, None for the bound)."""
    n_dequant, n, to_bits = draws.n_dequant, draws.n, draws.to_bits
    if est_var is not None:  # the time samples' variance, averaged over the draws
        per_image = jnp.sqrt(jnp.mean(est_var.reshape(n_dequant, n), axis=0) / n_dequant)
        estimator_std = float(jnp.sqrt(jnp.mean((per_image * -to_bits) ** 2)))
    elif n_dequant > 1:
        per_image = jnp.std(log_w * to_bits, axis=0, ddof=1) / math.sqrt(n_dequant)
        estimator_std = float(jnp.sqrt(jnp.mean(per_image**2)))
    else:
        estimator_std = None
    std = float(jnp.std(values, ddof=1)) if n > 1 else 0.0
    dequantizer = protocol["dequantizer"]
    return BitsPerDimInfo(
        bits_per_dim=float(jnp.mean(values)),
        std_over_images=std,
        sem=std / math.sqrt(n),
        estimator_std=estimator_std,
        n_images=n,
        n_dequant=n_dequant,
        estimator=protocol["estimator"],
        method=protocol["method"],
        dequantizer="uniform" if dequantizer is None else type(dequantizer).__name__,
        trace=None if ll is None else repr(ll.trace),
        rtol=None if ll is None else ll.rtol,
        atol=None if ll is None else ll.atol,
        solver=None if ll is None else type(ll.solver).__name__,
        t0=float(sde.t0),
        t1=float(sde.t1),
        n_times=protocol["n_times"] if ll is None else None,
        nfe_mean=float(nfes.mean()),
        nfe_max=int(nfes.max()),
        solver_error=solver_error,
    )
