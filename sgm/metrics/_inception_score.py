"""The Inception Score of a set of class logits."""

import numpy as np
import scipy.special
from jaxtyping import Float


def inception_score(
    logits: Float[np.ndarray, "n classes"], *, splits: int = 10
) -> tuple[float, float]:
    """The Inception Score exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016, "Improved
    techniques for training GANs", section 4), computed on each of `splits` consecutive equal
    parts of the examples, p(y) the mean of p(y|x) over that part, as the original code does.

    **Returns:** `(mean, std)` over the splits."""
    z = np.asarray(logits, np.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must be (n, classes), got shape {z.shape}.")
    if not 1 <= splits <= len(z):
        raise ValueError(f"splits must be in [1, {len(z)}] (the examples), got {splits}.")
    logp = scipy.special.log_softmax(z, axis=1)
    scores = []
    for part in np.array_split(logp, splits):
        log_marginal = scipy.special.logsumexp(part, axis=0) - np.log(len(part))
        kl = np.sum(np.exp(part) * (part - log_marginal), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
