"""Shared test fixtures: closed-form distributions and paths."""

import math
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import sgm

SDES = {
    "vp": sgm.VPSDE(),
    "subvp": sgm.SubVPSDE(),
    "ve": sgm.VESDE(sigma_min=0.01, sigma_max=10.0),
    "vp_cosine": sgm.VPSDE(schedule="cosine"),
}

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-subset"


def four_gaussians() -> sgm.GaussianMixture:
    """Unequal weights, so that mode weights are a real check."""
    means = jnp.array([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    return sgm.GaussianMixture(jnp.array([0.1, 0.2, 0.3, 0.4]), means, jnp.full((4,), 0.15**2))


def rotated_gaussian(d: int = 3, seed: int = 0, mean_scale: float = 0.5) -> sgm.Gaussian:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    cov = 0.2 * a @ a.T + 0.05 * np.eye(d)
    return sgm.Gaussian(mean_scale * rng.normal(size=d), cov)


class ExactNoise(eqx.Module):
    """A 'network' returning the exact noise prediction -s(t) score(t, x) of a closed form,
    for the conditioning `ScoreModel` gives it (t for VP/subVP, log s(t) for VE)."""

    score: sgm.ClosedFormScore

    def __call__(self, c, x_in, *, y=None, key=None):
        sde = self.score.sde
        if isinstance(sde, sgm.VESDE):
            # invert c = log s(t): s^2 = sigma_min^2 expm1(2 t log r)
            r = math.log(sde.sigma_max / sde.sigma_min)
            t = jnp.log1p(jnp.exp(2 * c) / sde.sigma_min**2) / (2 * r)
        else:
            t = c
        m, s = sde.marginal(t)
        return -s * self.score(t, x_in * jnp.sqrt(m**2 + s**2))


def exact_model(dist, sde) -> sgm.ScoreModel:
    return sgm.ScoreModel(ExactNoise(dist.score(sde)), sde, preconditioning=sgm.NoisePrediction())


class TinyNet(eqx.Module):
    """A two-layer network on vectors, for testing training mechanics quickly."""

    layers: eqx.nn.MLP

    def __init__(self, dim: int, *, key, width: int = 32):
        self.layers = eqx.nn.MLP(dim + 1, dim, width, 2, activation=jax.nn.silu, key=key)

    def __call__(self, c, x, *, y=None, key=None):
        return self.layers(jnp.concatenate([x, jnp.atleast_1d(c)]))


class ImageGaussian(eqx.Module):
    """`N(mean, Q^T diag(variances) Q)` on images, `Q` the orthonormal 2-D DCT: a rotated,
    strongly non-isotropic Gaussian whose score, probability flow and model log-density are
    closed form at `O(d log d)` cost. Variances fall like a power law in the frequency, from
    1 to 1e-5 (the scale of MNIST's dequantized saturated pixels)."""

    mean: jax.Array
    variances: jax.Array

    def __init__(self, shape=(1, 28, 28), seed: int = 0):
        rng = np.random.default_rng(seed)
        k = np.add.outer(np.arange(shape[-2]) ** 2, np.arange(shape[-1]) ** 2)
        spectrum = 1.0 / (1.0 + k) ** 1.5
        spectrum = np.exp(np.log(spectrum) * 5 * np.log(10) / -np.log(spectrum.min()))
        self.variances = jnp.asarray(np.broadcast_to(spectrum, shape), jnp.float32)
        self.mean = jnp.asarray(0.3 * rng.normal(size=shape), jnp.float32)

    @staticmethod
    def _q(x):
        return jax.scipy.fft.dctn(x, axes=(-2, -1), norm="ortho")

    @staticmethod
    def _qt(w):
        return jax.scipy.fft.idctn(w, axes=(-2, -1), norm="ortho")

    def _vars(self, sde, t):
        m, s = sde.marginal(t)
        return m, m**2 * self.variances + s**2

    def score(self, sde):
        def score(t, x):
            m, var = self._vars(sde, t)
            return -self._qt(self._q(x - m * self.mean) / var)

        return score

    def model_log_prob(self, sde, x):
        """The model's exact `log p_t0(x)`: the prior at the exact flow map's image plus its
        log-determinant (one example)."""
        m0, v0 = self._vars(sde, sde.t0)
        m1, v1 = self._vars(sde, sde.t1)
        w = self._q(x - m0 * self.mean) * jnp.sqrt(v1 / v0)
        return sde.prior_log_prob(m1 * self.mean + self._qt(w)) + 0.5 * jnp.sum(jnp.log(v1 / v0))

    def sample(self, key, n):
        z = jax.random.normal(key, (n, *self.mean.shape)) * jnp.sqrt(self.variances)
        return self.mean + jax.vmap(self._qt)(z)


class FixedNoiseLoss(sgm.AbstractLoss):
    """A denoising loss without randomness: each example is noised at `t = 0.5` by a noise
    that is a fixed function of the example, so that the loss of a batch is the mean of its
    examples' losses whatever the key, and a batch split into micro-batches has the same
    loss and gradient as the whole batch."""

    label_dropout: float = 0.0
    null_label: int | None = None

    def batch_loss(self, model, x0, *, key, y=None):
        t = 0.5
        m, s = model.sde.marginal(t)
        noise = jnp.sin(7.0 * x0 + 1.0)
        xt = m * x0 + s * noise
        pred = jax.vmap(lambda x: model(t, x))(xt)
        return jnp.mean(jnp.sum((s * pred + noise) ** 2, axis=tuple(range(1, x0.ndim))))
