"""Data distributions whose perturbed marginals, scores and probability flows are closed form.

Under a linear SDE with `x_t | x_0 ~ N(m x_0, s^2 I)`, Gaussian data `N(mu, Sigma)` stays
Gaussian, `N(m mu, m^2 Sigma + s^2 I)`, and a Gaussian mixture stays a mixture with the same
weights. These give exact scores for every sampler, exact log-densities for the likelihood code
and the exact probability-flow map; the tests and benchmarks measure the library against them.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray, Scalar, ScalarLike

from ._checks import check_int, check_key
from ._sde import AbstractSDE


def _eigh_cov(cov: Array) -> tuple[Array, Array]:
    cov = 0.5 * (cov + jnp.swapaxes(cov, -1, -2))
    lam, u = jnp.linalg.eigh(cov)
    return lam, u


def _one_example(x, d: int) -> Array:
    """`x` must be one example `(d,)`: densities act on one example, `jax.vmap` them."""
    x = jnp.asarray(x)
    if x.shape != (d,):
        raise ValueError(
            f"log_prob takes one example of shape ({d},), got shape {x.shape}; for a batch use "
            "jax.vmap(dist.log_prob)(x)."
        )
    return x


class Gaussian(eqx.Module):
    """The distribution `N(mean, cov)` on vectors of length `d`.

    **Arguments:**

    - `mean`: shape `(d,)`.
    - `cov`: shape `(d, d)`, symmetric positive definite (or a vector of variances, diagonal).
    """

    mean: Float[Array, " d"]
    eigvals: Float[Array, " d"]
    eigvecs: Float[Array, "d d"]

    def __init__(
        self, mean: Float[ArrayLike, " d"], cov: Float[ArrayLike, "d d"] | Float[ArrayLike, " d"]
    ):
        mean = jnp.asarray(mean, dtype=float)
        cov = jnp.asarray(cov, dtype=float)
        if mean.ndim != 1:
            raise ValueError(f"mean must be a vector (d,), got shape {mean.shape}.")
        if cov.ndim == 1:
            cov = jnp.diag(cov)
        if cov.shape != (mean.size, mean.size):
            raise ValueError(f"cov must have shape {(mean.size, mean.size)}, got {cov.shape}.")
        self.mean = mean
        self.eigvals, self.eigvecs = _eigh_cov(cov)

    @property
    def cov(self) -> Float[Array, "d d"]:
        return (self.eigvecs * self.eigvals) @ self.eigvecs.T

    def _marginal_vars(self, sde: AbstractSDE, t: ScalarLike) -> tuple[Scalar, Array]:
        m, s = sde.marginal(t)
        return m, m**2 * self.eigvals + s**2

    def log_prob(
        self, x: Float[ArrayLike, " d"], *, sde: AbstractSDE | None = None, t: ScalarLike = 0.0
    ) -> Scalar:
        """`log p_t(x)` of the marginal at time `t` of `sde` (of the data when `sde` is None)."""
        x = _one_example(x, self.mean.size)
        m, var = (1.0, self.eigvals) if sde is None else self._marginal_vars(sde, t)
        z = self.eigvecs.T @ (jnp.asarray(x) - m * self.mean)
        return -0.5 * jnp.sum(z**2 / var + jnp.log(var) + math.log(2 * math.pi))

    def score(self, sde: AbstractSDE) -> "ClosedFormScore":
        """The exact score `grad_x log p_t(x)` as a score callable `score(t, x)`."""
        return ClosedFormScore(self, sde)

    def _score(self, sde: AbstractSDE, t: ScalarLike, x: Array) -> Array:
        m, var = self._marginal_vars(sde, t)
        z = self.eigvecs.T @ (x - m * self.mean)
        return -(self.eigvecs @ (z / var))

    def flow(
        self, sde: AbstractSDE, s: ScalarLike, t: ScalarLike, x: Float[ArrayLike, " d"]
    ) -> Float[Array, " d"]:
        """The exact probability-flow ODE map from time `s` to time `t`.

        Along the flow each whitened coordinate `(x - m mu) / sqrt(m^2 lambda + s^2)` in the
        eigenbasis of `cov` is constant, since the flow transports one Gaussian onto the next by
        the monotone affine map between them.
        """
        ms, vs = self._marginal_vars(sde, s)
        mt, vt = self._marginal_vars(sde, t)
        z = self.eigvecs.T @ (jnp.asarray(x) - ms * self.mean)
        return mt * self.mean + self.eigvecs @ (z * jnp.sqrt(vt / vs))

    def flow_log_det(self, sde: AbstractSDE, s: ScalarLike, t: ScalarLike) -> Scalar:
        """`log |det d flow(s, t, x) / dx|`, the same for every `x`."""
        return 0.5 * jnp.sum(
            jnp.log(self._marginal_vars(sde, t)[1]) - jnp.log(self._marginal_vars(sde, s)[1])
        )

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n d"]:
        """`n` independent draws."""
        key, n = check_key(key), check_int("n", n)
        z = jr.normal(key, (n, self.mean.size))
        return self.mean + (z * jnp.sqrt(self.eigvals)) @ self.eigvecs.T


class GaussianMixture(eqx.Module):
    """The mixture `sum_k w_k N(means[k], covs[k])` on vectors of length `d`.

    **Arguments:**

    - `weights`: shape `(K,)`, positive; normalised here.
    - `means`: shape `(K, d)`.
    - `covs`: shape `(K, d, d)`, or `(K, d)` for diagonal covariances, or `(K,)` for isotropic.
    """

    log_weights: Float[Array, " K"]
    components: Gaussian

    def __init__(
        self, weights: Float[ArrayLike, " K"], means: Float[ArrayLike, "K d"], covs: ArrayLike
    ):
        weights = jnp.asarray(weights, dtype=float)
        means = jnp.asarray(means, dtype=float)
        covs = jnp.asarray(covs, dtype=float)
        if weights.ndim != 1 or means.ndim != 2 or means.shape[0] != weights.size:
            raise ValueError(
                f"need weights (K,) and means (K, d); got {weights.shape} and {means.shape}."
            )
        if bool(jnp.any(weights <= 0)):
            raise ValueError("mixture weights must be positive.")
        k, d = means.shape
        if covs.ndim == 1:
            covs = covs[:, None, None] * jnp.eye(d)
        elif covs.ndim == 2:
            covs = jax.vmap(jnp.diag)(covs)
        if covs.shape != (k, d, d):
            raise ValueError(
                f"covs must have shape {(k, d, d)}, {(k, d)} or {(k,)}; got {covs.shape}."
            )
        self.log_weights = jnp.log(weights / weights.sum())
        self.components = jax.vmap(Gaussian)(means, covs)

    @property
    def weights(self) -> Float[Array, " K"]:
        return jnp.exp(self.log_weights)

    def component_log_probs(
        self, x: Float[ArrayLike, " d"], *, sde: AbstractSDE | None = None, t: ScalarLike = 0.0
    ) -> Float[Array, " K"]:
        """`log w_k + log N_k(x)` for each component, at time `t` of `sde`."""
        x = _one_example(x, self.components.mean.shape[-1])
        each = jax.vmap(lambda c: c.log_prob(x, sde=sde, t=t))(self.components)
        return self.log_weights + each

    def log_prob(
        self, x: Float[ArrayLike, " d"], *, sde: AbstractSDE | None = None, t: ScalarLike = 0.0
    ) -> Scalar:
        """`log p_t(x)` of the marginal at time `t` of `sde` (of the data when `sde` is None)."""
        return jax.nn.logsumexp(self.component_log_probs(x, sde=sde, t=t))

    def assign(self, x: Float[ArrayLike, " d"]) -> Int[Array, ""]:
        """The most probable component of `x` under the data distribution."""
        return jnp.argmax(self.component_log_probs(x))

    def component(self, k: int) -> Gaussian:
        """The `k`-th component as a `Gaussian`."""
        return jax.tree.map(lambda leaf: leaf[k], self.components)

    def score(self, sde: AbstractSDE) -> "ClosedFormScore":
        """The exact score `grad_x log p_t(x)` as a score callable `score(t, x)`."""
        return ClosedFormScore(self, sde)

    def _score(self, sde: AbstractSDE, t: ScalarLike, x: Array) -> Array:
        post = jax.nn.softmax(self.component_log_probs(x, sde=sde, t=t))
        each = jax.vmap(lambda c: c._score(sde, t, x))(self.components)
        return post @ each

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n d"]:
        """`n` independent draws."""
        key, n = check_key(key), check_int("n", n)
        ckey, nkey = jr.split(key)
        idx = jr.categorical(ckey, self.log_weights, shape=(n,))
        comps = jax.tree.map(lambda leaf: leaf[idx], self.components)
        return jax.vmap(lambda c, k: c.sample(k, 1)[0])(comps, jr.split(nkey, n))


class ClosedFormScore(eqx.Module):
    """The exact score `grad_x log p_t(x)` of a closed-form distribution under a linear SDE;
    usable wherever a trained `ScoreModel` is."""

    distribution: Gaussian | GaussianMixture
    sde: AbstractSDE

    def __call__(self, t: ScalarLike, x: Float[Array, " d"]) -> Float[Array, " d"]:
        if x.shape != self.distribution_shape:
            raise ValueError(
                f"the closed-form score acts on one example of shape {self.distribution_shape}, "
                f"got {x.shape}; batches go through jax.vmap."
            )
        return self.distribution._score(self.sde, t, x)

    @property
    def distribution_shape(self) -> tuple[int, ...]:
        mean = (
            self.distribution.mean
            if isinstance(self.distribution, Gaussian)
            else (self.distribution.components.mean[0])
        )
        return mean.shape
