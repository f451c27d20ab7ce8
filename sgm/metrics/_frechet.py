"""Gaussian statistics of features and the Fréchet distance between two of them (FID)."""

import dataclasses
import warnings

import numpy as np
import scipy.linalg
from jaxtyping import Float


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """The mean, covariance (unbiased, `ddof=1`) and count of a set of feature vectors, in
    float64: what the Fréchet distance needs of a set, computed once (`FeatureStats.of`)."""

    mean: Float[np.ndarray, " d"]
    cov: Float[np.ndarray, "d d"]
    n: int

    def __post_init__(self):
        d = np.shape(self.mean)
        if len(d) != 1 or np.shape(self.cov) != (d[0], d[0]):
            raise ValueError(
                f"FeatureStats needs mean (d,) and cov (d, d), got {np.shape(self.mean)} and "
                f"{np.shape(self.cov)}."
            )

    @classmethod
    def of(cls, features: Float[np.ndarray, "n d"]) -> "FeatureStats":
        """The statistics of `features`, one row per example (at least two rows)."""
        f = np.asarray(features, np.float64)
        if f.ndim != 2 or len(f) < 2:
            raise ValueError(f"features must be (n, d) with n >= 2, got shape {f.shape}.")
        return cls(f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1]), len(f))


def fid(stats_a: FeatureStats, stats_b: FeatureStats) -> float:
    """The Fréchet distance between the Gaussians of two `FeatureStats`,

    d^2 = ||m_a - m_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})

    (Heusel et al. 2017, "GANs trained by a two time-scale update rule converge to a local
    Nash equilibrium", eq. 6; FID when the features are Inception-v3's pool3). The square
    root is `scipy.linalg.sqrtm` as pytorch-fid computes it (with its small-diagonal offset
    when the product is singular); its imaginary rounding residue is dropped."""
    if stats_a.mean.shape != stats_b.mean.shape:
        raise ValueError(
            f"the statistics have {stats_a.mean.shape[0]} and {stats_b.mean.shape[0]} features;"
            " compute both with the same extractor."
        )
    m1, m2 = np.asarray(stats_a.mean, np.float64), np.asarray(stats_b.mean, np.float64)
    s1, s2 = np.asarray(stats_a.cov, np.float64), np.asarray(stats_b.cov, np.float64)
    with warnings.catch_warnings():  # singular when there are fewer examples than features
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(s1)) * 1e-6
            covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = np.real(covmean)
    diff = m1 - m2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
