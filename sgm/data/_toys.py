"""Low-dimensional toy distributions generated in code (all roughly within [-2, 2]^2)."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np

from ._dataset import Dataset


def two_moons(n: int, *, key, noise: float = 0.05):
    """Two interleaved half circles, centred and scaled to about [-1.5, 1.5] x [-1, 1]."""
    ckey, tkey, nkey = jr.split(key, 3)
    upper = jr.bernoulli(ckey, 0.5, (n,))
    theta = jr.uniform(tkey, (n,), maxval=jnp.pi)
    x = jnp.where(upper, jnp.cos(theta), 1 - jnp.cos(theta))
    y = jnp.where(upper, jnp.sin(theta), 0.5 - jnp.sin(theta))
    pts = jnp.stack([x - 0.5, y - 0.25], axis=1) + noise * jr.normal(nkey, (n, 2))
    return pts


def eight_gaussians(n: int, *, key, radius: float = 1.5, std: float = 0.1):
    """Eight equal-weight Gaussians with std `std` on a circle of radius `radius`."""
    ckey, nkey = jr.split(key)
    angle = jr.randint(ckey, (n,), 0, 8) * (jnp.pi / 4)
    centres = radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1)
    return centres + std * jr.normal(nkey, (n, 2))


def checkerboard(n: int, *, key):
    """Uniform on the black squares of a 4x4 board on [-2, 2]^2."""
    k1, k2, k3 = jr.split(key, 3)
    x1 = jr.uniform(k1, (n,), minval=-2, maxval=2)
    x2 = jr.uniform(k2, (n,), minval=0, maxval=1) + jr.randint(k3, (n,), 0, 2) * 2.0 - 2.0
    x2 = x2 + (jnp.floor(x1) % 2)
    return jnp.stack([x1, x2], axis=1)


def swiss_roll(n: int, *, key, noise: float = 0.05):
    """A 2-D Swiss roll scaled to about [-1.5, 1.5]^2."""
    tkey, nkey = jr.split(key)
    t = 1.5 * jnp.pi * (1 + 2 * jr.uniform(tkey, (n,)))
    pts = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=1) / 9.0
    return pts + noise * jr.normal(nkey, (n, 2))


TOYS = {
    "two_moons": two_moons,
    "eight_gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "swiss_roll": swiss_roll,
}


def toy(name: str, *, key, n_train: int = 20_000, n_test: int = 2000) -> Dataset:
    """A toy as a Dataset (no scaler: the points are used as they are)."""
    if name not in TOYS:
        raise ValueError(f"unknown toy {name!r}; one of {sorted(TOYS)}.")
    trk, tek = jr.split(key)
    as_np = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return Dataset(
        name=name,
        data_shape=(2,),
        train=as_np(TOYS[name](n_train, key=trk)),
        test=as_np(TOYS[name](n_test, key=tek)),
    )
