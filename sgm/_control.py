"""Controllable generation: guidance, inpainting (imputation) and colorization.

Guidance changes the score; inpainting changes the sampling loop. Both work with closed-form
scores as with trained models.
"""

import warnings
from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from ._checks import (
    check_batch,
    check_key,
    check_labels,
    check_score,
    check_sde,
    count_non_finite,
)
from ._model_checks import check_model_sde, class_count
from ._samplers import EulerMaruyama, PredictorCorrector, euler_maruyama, time_grid
from ._sde import AbstractSDE
from ._sharding import shard_batch
from ._traced_checks import concise_errors, unchecked_unless_labelled


class ClassifierFreeGuidance(eqx.Module):
    """`score_u + w (score_c - score_u)` with `score_c = score(t, x, y=y)` and
    `score_u = score(t, x, y=null_label)` (Ho & Salimans 2022): `w = 0` samples the
    unconditional model, `w = 1` the conditional one, `w > 1` sharpens towards the class.

    **Arguments:**

    - `score`: a conditional score `score(t, x, *, y)` trained with label dropout.
    - `guidance_scale`: `w`.
    - `null_label`: the label meaning "unconditional" (the network's `num_classes`).
    """

    score: Callable[..., Array]
    guidance_scale: float
    null_label: int = eqx.field(static=True)

    def __check_init__(self):
        num_classes = class_count(self.score)
        if num_classes is not None and self.null_label != num_classes:
            raise ValueError(
                f"null_label must be the network's null label {num_classes} (its num_classes), "
                f"got {self.null_label!r}."
            )

    def __call__(self, t, x, *, y):
        cond = self.score(t, x, y=y)
        uncond = self.score(t, x, y=jnp.full_like(jnp.asarray(y), self.null_label))
        return uncond + self.guidance_scale * (cond - uncond)


class ClassifierGuidance(eqx.Module):
    """`score(t, x) + w grad_x log p_t(y | x)` (Song et al. 2021, eq. 14; Dhariwal & Nichol
    2021): with `w = 1` and the exact time-dependent classifier this is the exact conditional
    score.

    **Arguments:**

    - `score`: an unconditional score `score(t, x)`.
    - `log_prob_y`: any callable `log_prob_y(t, x, y)`, the log-probability of `y` given the
      noisy `x` at time `t`.
    - `guidance_scale`: `w`.
    """

    score: Callable[..., Array]
    log_prob_y: Callable[..., Array]
    guidance_scale: float = 1.0

    def __call__(self, t, x, *, y):
        grad = jax.grad(lambda x: self.log_prob_y(t, x, y))(x)
        return self.score(t, x) + self.guidance_scale * grad


def _check_sampler(sampler):
    if not isinstance(sampler, EulerMaruyama | PredictorCorrector):
        raise ValueError(
            "inpainting steps the reverse SDE itself: pass sgm.EulerMaruyama(steps=...) or "
            f"sgm.PredictorCorrector(steps=...) (its steps are used), got {type(sampler).__name__}."
        )


def _forward_path(sde, ts, x0, key):
    """A path of the forward SDE at the (decreasing) times `ts`, started from `x0` at t=0 and
    extended by exact Gaussian transitions, returned in the order of `ts`."""
    up = ts[::-1]
    m, s = sde.marginal(up[0])
    first = m * x0 + s * jr.normal(key, x0.shape)

    def step(x, inputs):
        t_prev, t, k = inputs
        a, b = sde.transition(t_prev, t)
        x = a * x + b * jr.normal(k, x.shape)
        return x, x

    keys = jr.split(jr.fold_in(key, 1), len(up) - 1)
    _, rest = lax.scan(step, first, (up[:-1], up[1:], keys))
    return jnp.concatenate([first[None], rest])[::-1]


def _replace_one(score, sde, ts, x0, mask, key):
    """Song et al. (2021, appendix I.2): reverse steps with the known region replaced by the
    forward-diffused data at every step."""
    pkey, fkey, skey = jr.split(key, 3)
    path = _forward_path(sde, ts, x0, fkey)
    x = jnp.where(mask, path[0], sde.prior_sample(pkey, x0.shape))

    def step(x, inputs):
        t, t_next, y_next, k = inputs
        mean, std = euler_maruyama(score, sde, t, t_next, x)
        return jnp.where(mask, y_next, mean + std * jr.normal(k, x.shape)), None

    x, _ = lax.scan(step, x, (ts[:-1], ts[1:], path[1:], jr.split(skey, len(ts) - 1)))
    return x


def _smc_one(score, sde, ts, x0, mask, key, n_particles):
    """SMCDiff (Trippe et al. 2022, algorithm 1): particles of the unknown region move by the
    reverse SDE of the joint; each is weighted by the reverse transition density of the known
    region's forward-diffused path, and resampled. Asymptotically exact in the number of
    particles and steps when the score is exact."""
    pkey, fkey, skey, ckey = jr.split(key, 4)
    path = _forward_path(sde, ts, x0, fkey)
    init = jax.vmap(lambda k: sde.prior_sample(k, x0.shape))(jr.split(pkey, n_particles))
    particles = jnp.where(mask, path[0], init)

    def step(carry, inputs):
        xs, log_w = carry
        t, t_next, y_next, k = inputs
        nkey, rkey = jr.split(k)
        mean, std = jax.vmap(lambda x: euler_maruyama(score, sde, t, t_next, x))(xs)
        var = std[0] ** 2
        sq = jnp.where(mask, (y_next - mean) ** 2, 0.0).reshape(len(xs), -1)
        log_w = log_w - 0.5 * jnp.sum(sq, 1) / var
        xs = jnp.where(mask, y_next, mean + jnp.sqrt(var) * jr.normal(nkey, xs.shape))
        # Resample only when the effective sample size drops below half (less path
        # degeneracy than resampling at every step).
        w = jax.nn.softmax(log_w)
        ess = 1.0 / jnp.sum(w**2)
        idx = jr.categorical(rkey, log_w, shape=(n_particles,))
        resample = ess < 0.5 * n_particles
        xs = jnp.where(resample, xs[idx], xs)
        log_w = jnp.where(resample, jnp.zeros_like(log_w), log_w - jax.nn.logsumexp(log_w))
        return (xs, log_w), None

    inputs = (ts[:-1], ts[1:], path[1:], jr.split(skey, len(ts) - 1))
    (xs, log_w), _ = lax.scan(step, (particles, jnp.zeros(n_particles)), inputs)
    return xs[jr.categorical(ckey, log_w)]


@eqx.filter_jit
def _inpaint_batch(score, sde, ts, x, mask, keys, y, method, n_particles):
    check_score(score, sde, x.shape[1:], y)  # while tracing: once per score and shape

    def one(x0, m, k, y_one):
        given = score if y is None else (lambda t, x: score(t, x, y=y_one))
        if method == "replace":
            out = _replace_one(given, sde, ts, x0, m, k)
        else:
            out = _smc_one(given, sde, ts, x0, m, k, n_particles)
        out = sde.denoise(given, ts[-1], out)
        return jnp.where(m, x0, out)

    y_in = jnp.zeros(x.shape[0]) if y is None else y  # a placeholder when unconditional
    return jax.vmap(one)(x, mask, keys, y_in)


def inpaint(
    score,
    sde: AbstractSDE,
    sampler: EulerMaruyama | PredictorCorrector,
    *,
    key: PRNGKeyArray,
    x: Float[Array, "n *data_shape"],
    mask: Bool[Array, "n *data_shape"] | Bool[Array, "*data_shape"],
    method: Literal["smc", "replace"] = "smc",
    n_particles: int = 32,
    y: Array | None = None,
) -> Float[Array, "n *data_shape"]:
    """Fills in the unknown entries of `x` (where `mask` is False) from the model's conditional
    distribution given the known ones; known entries are returned exactly. Works for images
    and for series (imputation).

    **Arguments:**

    - `score`, `sde`: the model.
    - `sampler`: `EulerMaruyama` or `PredictorCorrector`; its `steps` set the time grid.
    - `key`: a PRNG key.
    - `x`: a batch `(n, *data_shape)`; the unknown entries are ignored.
    - `mask`: boolean, True where known; one per example or one for all.
    - `method`: `"smc"` (sequential Monte Carlo, SMCDiff; asymptotically exact; the default) or
      `"replace"` (Song et al.'s replacement; biased for correlated data).
    - `n_particles`: particles per example for `"smc"` (cost: `n_particles` times the NFE).
    - `y`: the conditioning of a conditional model, one per example (required for a
      class-conditional one: its labels, or the null label `num_classes` for the
      unconditional model, asked for explicitly as in `sgm.sample`).
    """
    check_sde(sde)
    check_model_sde(score, sde)
    key = check_key(key)
    _check_sampler(sampler)
    x = check_batch(jnp.nan_to_num(jnp.asarray(x, float)), "x")
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise ValueError(f"mask must be boolean (True where known), got dtype {mask.dtype}.")
    if mask.shape == x.shape[1:]:
        mask = jnp.broadcast_to(mask, x.shape)
    if mask.shape != x.shape:
        raise ValueError(f"mask must have shape {x.shape[1:]} or {x.shape}, got {mask.shape}.")
    if method not in ("smc", "replace"):
        raise ValueError(f"method must be 'smc' or 'replace', got {method!r}.")
    n = x.shape[0]
    y = check_labels(y, n, num_classes=class_count(score))
    ts = time_grid(sde, sampler.steps, sampler.t_end)
    xs, masks, keys, ys = shard_batch((x, mask, jr.split(key, n), y), n)
    with concise_errors(), unchecked_unless_labelled(ys):
        out = _inpaint_batch(score, sde, ts, xs, masks, keys, ys, method, n_particles)[:n]
    if bad := count_non_finite(out):
        warnings.warn(
            f"{bad} of {n} inpainted examples are not finite (NaN or infinite): the score is "
            "not finite somewhere on the path (check the model's weights), or the steps "
            "diverged (more steps).",
            RuntimeWarning,
            stacklevel=2,
        )
    return out


# An orthonormal map from RGB to (grey, two chroma axes), Song et al. (2021, appendix I.3):
# the first row is the normalised grey (luminance) direction.
_DECOUPLE = np.linalg.qr(np.array([[1.0, 1.0, 1.0], [1.0, -1.0, 0.0], [1.0, 1.0, -2.0]]).T)[0].T
_DECOUPLE = _DECOUPLE * np.sign(_DECOUPLE[0, 0])


class _Decoupled(eqx.Module):
    """The score of the data in the decoupled colour space `x' = W x` (W orthonormal, acting on
    channels): `score'(t, x') = W score(t, W^T x')`."""

    score: Callable[..., Array]

    def __call__(self, t, x, **condition):
        w = jnp.asarray(_DECOUPLE, x.dtype)
        back = jnp.einsum("dc,d...->c...", w, x)
        return jnp.einsum("cd,d...->c...", w, self.score(t, back, **condition))


def colorize(
    score,
    sde: AbstractSDE,
    sampler: EulerMaruyama | PredictorCorrector,
    *,
    key: PRNGKeyArray,
    grey: Float[Array, "n 1 h w"],
    method: Literal["smc", "replace"] = "smc",
    n_particles: int = 32,
    y: Array | None = None,
) -> Float[Array, "n 3 h w"]:
    """Colours grey images: in the orthonormal decoupled space whose first channel is the
    grey level, that channel is known and the two colour channels are inpainted (Song et al.
    2021, appendix I.3). `grey` is the mean of R, G and B in model scale; returns RGB. `y` is
    the conditioning of a conditional model, as in `inpaint`."""
    grey = jnp.asarray(grey)
    if grey.ndim != 4 or grey.shape[1] != 1:
        raise ValueError(f"grey must be shaped (n, 1, H, W), got {grey.shape}.")
    known = jnp.concatenate([grey * np.sqrt(3.0), jnp.zeros_like(grey), jnp.zeros_like(grey)], 1)
    mask = jnp.zeros(known.shape[1:], bool).at[0].set(True)
    out = inpaint(
        _Decoupled(score),
        sde,
        sampler,
        key=key,
        x=known,
        mask=mask,
        method=method,
        n_particles=n_particles,
        y=y,
    )
    return jnp.einsum("dc,nd...->nc...", jnp.asarray(_DECOUPLE, out.dtype), out)
