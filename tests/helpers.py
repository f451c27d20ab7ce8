"""Shared test fixtures: closed-form distributions and paths."""

from pathlib import Path

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
