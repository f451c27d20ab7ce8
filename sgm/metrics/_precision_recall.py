"""Improved precision and recall: k-nearest-neighbour manifolds of two feature sets."""

import numpy as np
from jaxtyping import Float


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


def _coverage(manifold: np.ndarray, queries: np.ndarray, k: int) -> float:
    """The fraction of `queries` inside some ball around a `manifold` point whose radius is
    the distance to that point's k-th nearest neighbour (itself excluded)."""
    radii = np.sort(_distances(manifold, manifold), axis=1)[:, k]
    inside = _distances(queries, manifold) <= radii[None, :]
    return float(inside.any(axis=1).mean())


def precision_recall(
    real_feats: Float[np.ndarray, "n d"], fake_feats: Float[np.ndarray, "m d"], *, k: int = 3
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, "Improved precision and
    recall metric for assessing generative models", eqs. 1-3): precision is the fraction of
    generated samples inside the real manifold (the union of balls around each real feature
    reaching its k-th nearest real neighbour), recall the fraction of real features inside
    the generated manifold.

    **Returns:** `(precision, recall)`."""
    a, b = np.asarray(real_feats, np.float64), np.asarray(fake_feats, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (n, d) and (m, d), got {a.shape} and {b.shape}.")
    if not 1 <= k < min(len(a), len(b)):
        raise ValueError(
            f"k must be in [1, {min(len(a), len(b)) - 1}] (fewer than the set), got {k}."
        )
    return _coverage(a, b, k), _coverage(b, a, k)
