"""The sample-quality phase (`python main.py --mode quality`): FID, KID, IS and precision/recall
of a trained image run's samples against its data, on the FID Inception-v3 features."""

import hashlib
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .. import metrics as m
from .._io import atomic_write
from .._samplers import sample as draw
from ..data import Dataset
from ..distributed import is_main
from ._chunks import inputs_digest
from ._experiment import Experiment
from ._outputs import PhaseError, to_unit
from ._run import Run
from ._serial import to_json

RESIZE = "clean-fid: uint8 round/clip, then PIL bicubic per float channel (mode F) to 299x299"
FORMAT = 1  # of the cached reference features


def check_quality(cfg: Experiment) -> Path:
    """The weights file of `cfg.quality`, checked before any work (a ValueError otherwise)."""
    q = cfg.quality
    if q.inception is None:
        raise ValueError(
            f"--mode quality needs --quality.inception PATH to {m.WEIGHTS_FILE} (what "
            f"pytorch-fid and clean-fid fetch from {m.WEIGHTS_URL}); nothing is downloaded."
        )
    q.build_sampler(cfg.sample.samplers)
    return m.check_weights_file(q.inception)


def _images(ds: Dataset, x) -> np.ndarray:
    """`(n, c, h, w)` intensities in [0, 1] of model-scale images."""
    return np.asarray(to_unit(ds, x), np.float64)


def reference_features(cfg: Experiment, ds: Dataset, run: Run, model, weights_sha: str):
    """Inception features and logits of the first images of the reference split, cached in
    `run.path/quality/reference_<data>_<split>_<n>.npz` under a digest of the protocol (the
    weights, the resize, the images themselves): another protocol recomputes them."""
    q = cfg.quality
    split = ds.train if q.reference == "train" else ds.test
    n = min(q.n_reference or q.n_samples, len(split))
    images = _images(ds, split[:n])
    protocol = {
        "format": FORMAT,
        "weights_sha256": weights_sha,
        "resize": RESIZE,
        "images_sha256": inputs_digest(m.quantize(images)),
    }
    digest = hashlib.sha256(json.dumps(protocol, sort_keys=True).encode()).hexdigest()
    path = run.path / "quality" / f"reference_{ds.name}_{q.reference}_{n}.npz"
    if path.exists():
        with np.load(path) as f:
            if str(f["protocol_sha256"]) == digest:
                return f["features"].astype(np.float64), n, True
    feats, _ = m.inception_features(model, images, batch_size=q.batch_size)
    if is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(
            path,
            lambda f: np.savez(
                f, features=feats, protocol_sha256=digest, protocol=json.dumps(protocol)
            ),
        )
    return feats, n, False


def quality(cfg: Experiment, ds: Dataset, run: Run, metrics: dict, *, y=None) -> None:
    """Draws `cfg.quality.n_samples` with its sampler, and writes under `metrics["quality"]`
    FID, KID (mean and std over subsets), IS (mean and std over splits), precision and recall
    against the reference images, with the protocol: sample count, reference split and count,
    sampler and NFE, the weights file's name and SHA-256, the resize. `y`: what the
    `n_samples` are drawn given, for conditional models."""
    q = cfg.quality
    path = check_quality(cfg)
    if len(ds.data_shape) != 3 or ds.data_shape[0] not in (1, 3) or ds.scaler is None:
        raise PhaseError(
            f"--mode quality needs images of 1 or 3 channels; {ds.name} has shape {ds.data_shape}."
        )
    start = time.perf_counter()
    sha = m.sha256_of(path)
    model = m.load_inception(path)
    ref, n_ref, cached = reference_features(cfg, ds, run, model, sha)
    sampler = q.build_sampler(cfg.sample.samplers)
    xs, nfes = [], []
    key = jr.key(q.seed)
    for i, a in enumerate(range(0, q.n_samples, q.batch_size)):
        b = min(a + q.batch_size, q.n_samples)
        x, nfe = draw(
            run.model,
            run.sde,
            sampler,
            key=jr.fold_in(key, i),
            shape=(b - a, *ds.data_shape),
            y=None if y is None else y[a:b],
            return_nfe=True,
        )
        xs.append(np.asarray(jax.block_until_ready(x)))
        nfes.append(np.asarray(nfe, np.float64))
    samples = _images(ds, jnp.asarray(np.concatenate(xs)))
    if not np.isfinite(samples).all():
        raise PhaseError(f"{q.sampler} drew samples that are not finite; no metrics computed.")
    fake, logits = m.inception_features(model, samples, batch_size=q.batch_size)
    kid_size = min(q.kid_subset_size, n_ref, q.n_samples)
    kid_mean, kid_std = m.kid(ref, fake, subsets=q.kid_subsets, subset_size=kid_size)
    is_mean, is_std = m.inception_score(logits, splits=min(q.is_splits, q.n_samples))
    k = min(q.pr_k, n_ref - 1, q.n_samples - 1)
    precision, recall = m.precision_recall(ref, fake, k=k)
    metrics["quality"] = {
        "fid": m.fid(m.FeatureStats.of(ref), m.FeatureStats.of(fake)),
        "kid": {"mean": kid_mean, "std": kid_std, "subsets": q.kid_subsets, "size": kid_size},
        "inception_score": {"mean": is_mean, "std": is_std, "splits": min(q.is_splits, len(fake))},
        "precision": precision,
        "recall": recall,
        "protocol": {
            "n_samples": q.n_samples,
            "reference": f"{ds.name} {q.reference}",
            "n_reference": n_ref,
            "reference_cached": cached,
            "sampler": q.sampler,
            "sampler_settings": to_json(sampler),
            "nfe": round(float(np.concatenate(nfes).mean()), 2),
            "seed": q.seed,
            "weights": path.name,
            "weights_sha256": sha,
            "resize": RESIZE,
            "features": "pool3 (2048)",
            "pr_k": k,
        },
        "seconds": time.perf_counter() - start,
    }
    r = metrics["quality"]
    print(
        f"quality ({q.n_samples} samples, {q.sampler}, NFE {r['protocol']['nfe']:.0f}, "
        f"{n_ref} references): FID {r['fid']:.2f}, KID {kid_mean:.4f} +- {kid_std:.4f}, "
        f"IS {is_mean:.2f} +- {is_std:.2f}, precision {precision:.3f}, recall {recall:.3f}"
    )
