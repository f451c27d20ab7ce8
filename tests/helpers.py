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
