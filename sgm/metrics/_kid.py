"""Kernel Inception Distance: the unbiased MMD^2 with a cubic polynomial kernel."""

import numpy as np
from jaxtyping import Float


def _mmd2(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    m = len(x)
    off = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))  # noqa: E731
    return float(off(kxx) + off(kyy) - 2.0 * kxy.mean())


def kid(
    feats_a: Float[np.ndarray, "n d"],
    feats_b: Float[np.ndarray, "m d"],
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """The Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs", eq. 4
    with the kernel k(x, y) = (x.y / d + 1)^3): the unbiased estimate of MMD^2 averaged over
    `subsets` random subsets of `subset_size` rows of each set (drawn without replacement,
    from `seed`). Unbiased, so it can be negative when the sets agree.

    **Returns:** `(mean, std)` over the subsets."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (n, d) and (m, d), got {a.shape} and {b.shape}.")
    if subsets < 1:
        raise ValueError(f"subsets must be at least 1, got {subsets}.")
    if not 2 <= subset_size <= min(len(a), len(b)):
        raise ValueError(
            f"subset_size must be in [2, {min(len(a), len(b))}] (the smaller set), got "
            f"{subset_size}."
        )
    rng = np.random.default_rng(seed)
    values = [
        _mmd2(
            a[rng.choice(len(a), subset_size, replace=False)],
            b[rng.choice(len(b), subset_size, replace=False)],
        )
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))
