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
from ._model_checks import check_model_sde, class_count
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
    key = check_key(key)
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator must be one of {_ESTIMATORS}, got {estimator!r}.")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}.")
    if method == "bound" and estimator == "importance" and n_dequant > 1:
        raise ValueError(
            "the bound's draws are averaged: pass estimator='mean' with method='bound' (a "
            "log-mean-exp of noisy lower bounds is not a bound)."
        )
    if dequantizer is not None:
        from ._dequant import AbstractDequantizer

        if not isinstance(dequantizer, AbstractDequantizer):
            raise ValueError(
                f"dequantizer must be an sgm.AbstractDequantizer, got {type(dequantizer).__name__}."
            )
        num_bits, scaler = dequantizer.num_bits, dequantizer.scaler
    images = check_integer_images(images, num_bits)
    levels = 2**num_bits
    n_dequant = check_int("n_dequant", n_dequant)
    n_times = check_int("n_times", n_times)
    solver_check = check_int("solver_check", solver_check, minimum=0)
    first_index = check_int("first_index", first_index, minimum=0)
    n, dim = images.shape[0], math.prod(images.shape[1:])
    call_kw = {
        k: likelihood_kwargs.pop(k)
        for k in ("batch_size", "progress", "y")
        if k in likelihood_kwargs
    }
    if method == "bound" and likelihood_kwargs:
        raise ValueError(
            f"method='bound' takes no solver options, got {sorted(likelihood_kwargs)}."
        )
    ll = LogLikelihood(score, sde, **likelihood_kwargs)
    batch_size = check_int("batch_size", call_kw.get("batch_size"), none=True)

    def draw(j):
        ukey, lkey = jr.split(jr.fold_in(key, j))
        ukeys = example_keys(ukey, n, first_index)
        if dequantizer is None:
            noise = jax.vmap(lambda k: jr.uniform(k, images.shape[1:]))(ukeys)
            log_q = jnp.zeros(n)
        else:
            noise, log_q = eqx.filter_vmap(dequantizer.noise)(images.astype(jnp.float32), ukeys)
        u = (images + noise) / levels
        x, slope = jax.jvp(scaler, (u,), (jnp.ones_like(u),))
        log_det = jnp.sum(jnp.log(jnp.abs(slope)).reshape(n, -1), axis=1)
        return x, example_keys(lkey, n, first_index), log_det - log_q - dim * math.log(levels)

    # The K draws of all images solved in one call (K n examples, draw-major).
    parts = [draw(j) for j in range(n_dequant)]
    x = jnp.concatenate([p[0] for p in parts])
    keys = jnp.concatenate([p[1] for p in parts])
    offset = jnp.concatenate([p[2] for p in parts])
    y = call_kw.get("y")
    if y is not None:
        y = jnp.concatenate([jnp.asarray(y)] * n_dequant)
    y = check_labels(y, n_dequant * n, num_classes=class_count(score))
    est_var = jnp.zeros((n_dequant, n))
    if method == "ode":
        check_finite_score(score, sde, x, y, size=batch_size)  # before the solve
        lp, nfes = ll.solve_keyed(x, keys, y, batch_size, call_kw.get("progress"))
    else:
        neg, se = bound_keyed(
            score, sde, x, keys, y, n_times, batch_size=batch_size, progress=call_kw.get("progress")
        )
        nfes = jnp.full((x.shape[0],), 2 * n_times)
        lp = -neg
        est_var = (se**2).reshape(n_dequant, n)
    log_w = (lp + offset).reshape(n_dequant, n)  # nats
    to_bits = -1.0 / (dim * math.log(2))
    if estimator == "importance":
        values = (jax.nn.logsumexp(log_w, axis=0) - math.log(n_dequant)) * to_bits
    else:
        values = jnp.mean(log_w, axis=0) * to_bits
    if not return_info:
        return values
    if method == "bound":  # the time samples' variance, averaged over the draws
        per_image = jnp.sqrt(jnp.mean(est_var, axis=0) / n_dequant) * -to_bits
        estimator_std = float(jnp.sqrt(jnp.mean(per_image**2)))
    elif n_dequant > 1:
        per_image = jnp.std(log_w * to_bits, axis=0, ddof=1) / math.sqrt(n_dequant)
        estimator_std = float(jnp.sqrt(jnp.mean(per_image**2)))
    else:
        estimator_std = None
    solver_error = None
    if solver_check and method == "ode":
        m = min(solver_check, n)
        tighter = {**likelihood_kwargs, "rtol": ll.rtol / 10, "atol": ll.atol / 10}
        tight = LogLikelihood(score, sde, **tighter)
        # the first m images of every draw, with the same probes
        idx = (jnp.arange(n_dequant)[:, None] * n + jnp.arange(m)[None, :]).reshape(-1)
        again, _ = tight.solve_keyed(x[idx], keys[idx], None if y is None else y[idx], batch_size)
        again = (again + offset[idx]).reshape(n_dequant, m)
        if estimator == "importance":
            tight_values = (jax.nn.logsumexp(again, axis=0) - math.log(n_dequant)) * to_bits
        else:
            tight_values = jnp.mean(again, axis=0) * to_bits
        solver_error = float(jnp.max(jnp.abs(tight_values - values[:m])))
    nfes = np.asarray(jnp.stack(nfes))
    std = float(jnp.std(values, ddof=1)) if n > 1 else 0.0
    info = BitsPerDimInfo(
        bits_per_dim=float(jnp.mean(values)),
        std_over_images=std,
        sem=std / math.sqrt(n),
        estimator_std=estimator_std,
        n_images=n,
        n_dequant=n_dequant,
        estimator=estimator,
        method=method,
        dequantizer="uniform" if dequantizer is None else type(dequantizer).__name__,
        trace=repr(ll.trace) if method == "ode" else None,
        rtol=ll.rtol if method == "ode" else None,
        atol=ll.atol if method == "ode" else None,
        solver=type(ll.solver).__name__ if method == "ode" else None,
        t0=float(sde.t0),
        t1=float(sde.t1),
        n_times=n_times if method == "bound" else None,
        nfe_mean=float(nfes.mean()),
        nfe_max=int(nfes.max()),
        solver_error=solver_error,
    )
    return values, info
