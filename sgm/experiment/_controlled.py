"""The controlled-generation modes of the main job on a finished run: inpainting, colorization
(Song et al. 2021, appendix I), class grids by classifier-free guidance (Ho and Salimans 2022)
and by classifier guidance (Dhariwal and Nichol 2021)."""

import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from .. import nets
from .._classifier import NoisyClassifier, train_classifier
from .._control import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    colorize as colorize_images,
    inpaint as inpaint_examples,
)
from .._io import save_model
from .._samplers import EulerMaruyama, PredictorCorrector, sample as draw
from ..data import Dataset
from ..distributed import is_main
from . import plot
from ._experiment import Experiment
from ._outputs import PhaseError, to_unit
from ._run import Run
from ._serial import to_json


def _not_map_or_vector_conditioned(cfg: Experiment, run: Run, mode: str) -> None:
    if run.cond_shape and cfg.net.conditional:
        what = "vectors" if len(run.cond_shape) == 1 else "maps"
        raise PhaseError(
            f"--mode {mode} is for unconditional or class-conditional models; {cfg.name} is "
            f"conditioned on {what} (its samples, drawn given the test examples' conditions, "
            "come from --mode sample)."
        )


def _null_labels(cfg: Experiment, ds: Dataset, n: int):
    """The null label for each of `n` examples of a class-conditional model (its unconditional
    distribution, which label dropout trains), else None."""
    if cfg.net.conditional and ds.num_classes is not None:
        return jnp.full(n, ds.num_classes)
    return None


def _sde_sampler(cfg: Experiment, mode: str) -> EulerMaruyama | PredictorCorrector:
    """The sampler of the conditional SDE that inpainting and colorization follow."""
    sampler = cfg.sample.controlled
    if not isinstance(sampler, EulerMaruyama | PredictorCorrector):
        raise PhaseError(
            f"--mode {mode} follows the conditional reverse SDE: sample.controlled must be "
            f"EulerMaruyama or PredictorCorrector, got {type(sampler).__name__}."
        )
    return sampler


def inpaint(cfg: Experiment, ds: Dataset, run: Run, metrics: dict) -> None:
    """Fills in the bottom half of test images (or the second half of series) given the rest."""
    _not_map_or_vector_conditioned(cfg, run, "inpaint")
    if len(ds.data_shape) < 2:
        raise PhaseError("--mode inpaint needs images or series")
    x = jnp.asarray(ds.test[:8])
    mask = np.ones(ds.data_shape, bool)
    mask[..., ds.data_shape[-2 if len(ds.data_shape) == 3 else -1] // 2 :, :] = False
    if len(ds.data_shape) == 2:
        mask = np.ones(ds.data_shape, bool)
        mask[:, ds.data_shape[-1] // 2 :] = False
    s = cfg.sample
    start = time.perf_counter()
    out = inpaint_examples(
        run.model,
        run.sde,
        _sde_sampler(cfg, "inpaint"),
        key=jr.key(4),
        x=x,
        mask=jnp.asarray(mask),
        method=s.inpaint_method,
        n_particles=s.inpaint_particles,
        y=_null_labels(cfg, ds, len(x)),
    )
    metrics["inpaint"] = {
        "seconds": time.perf_counter() - start,
        "method": s.inpaint_method,
        "particles": s.inpaint_particles,
        "sampler": to_json(s.controlled),
    }
    if not is_main():  # process 0 alone writes files
        return
    if len(ds.data_shape) == 3:
        shown = jnp.where(mask, x, -1.0)
        grid = jnp.concatenate([shown, out, x])
        plot.save_image_grid(
            to_unit(ds, grid),
            run.path / "inpaint.png",
            ncol=8,
            title="rows: known half / inpainted / original",
        )
    else:
        plot.save_series(
            np.asarray(out).reshape(8, -1),
            run.path / "inpaint.png",
            reference=np.asarray(x).reshape(8, -1),
            title="imputed second half",
        )
    print(f"inpainted 8 examples in {metrics['inpaint']['seconds']:.1f} s")


def colorize(cfg: Experiment, ds: Dataset, run: Run, metrics: dict) -> None:
    """Colours the grey versions (mean of R, G, B) of 8 test images (Song et al. 2021, I.3)."""
    _not_map_or_vector_conditioned(cfg, run, "colorize")
    if len(ds.data_shape) != 3 or ds.data_shape[0] != 3:
        raise PhaseError(
            f"--mode colorize needs RGB images (3 channels); {cfg.data.name} has shape "
            f"{ds.data_shape}. Try cifar10_vp or flowers_ve."
        )
    x = jnp.asarray(ds.test[:8])
    grey = x.mean(axis=1, keepdims=True)
    s = cfg.sample
    start = time.perf_counter()
    out = colorize_images(
        run.model,
        run.sde,
        _sde_sampler(cfg, "colorize"),
        key=jr.key(6),
        grey=grey,
        method=s.inpaint_method,
        n_particles=s.inpaint_particles,
        y=_null_labels(cfg, ds, len(x)),
    )
    metrics["colorize"] = {"seconds": time.perf_counter() - start, "method": s.inpaint_method}
    if not is_main():  # process 0 alone writes files
        return
    grid = jnp.concatenate([jnp.repeat(grey, 3, axis=1), out, x])
    plot.save_image_grid(
        to_unit(ds, grid),
        run.path / "colorize.png",
        ncol=8,
        title="rows: grey input / colourised / original",
    )
    print(f"colourised 8 images in {metrics['colorize']['seconds']:.1f} s")


def classes(cfg: Experiment, ds: Dataset, run: Run, metrics: dict) -> None:
    """A grid with one row per class, sampled with classifier-free guidance."""
    _not_map_or_vector_conditioned(cfg, run, "classes")
    if not (cfg.net.conditional and ds.num_classes):
        raise PhaseError(
            "--mode classes needs a class-conditional model (--model.conditional true)"
        )
    k = ds.num_classes
    y = jnp.repeat(jnp.arange(k), 8)
    score = ClassifierFreeGuidance(run.model, cfg.sample.guidance_scale, null_label=k)
    x = draw(
        score,
        run.sde,
        cfg.sample.controlled,
        key=jr.key(5),
        shape=(len(y), *ds.data_shape),
        y=y,
    )
    if not is_main():  # process 0 alone writes files
        return
    plot.save_image_grid(
        to_unit(ds, x),
        run.path / "classes.png",
        ncol=8,
        title=f"classes 0-{k - 1}, guidance {cfg.sample.guidance_scale}",
    )


def guided(cfg: Experiment, ds: Dataset, run: Run, metrics: dict) -> None:
    """Classifier guidance: trains a time-dependent classifier on the noisy training images,
    then draws one row per class from the unconditional score plus the classifier's gradient."""
    _not_map_or_vector_conditioned(cfg, run, "guided")
    if not ds.num_classes or ds.train_labels is None:
        raise PhaseError(f"--mode guided needs labelled data; {cfg.data.name} has no labels")
    s = cfg.sample
    start = time.perf_counter()
    net = nets.Classifier(ds.data_shape, ds.num_classes, key=jr.key(7), width=s.classifier_width)
    clf, losses = train_classifier(
        NoisyClassifier(net, run.sde),
        ds.train,
        ds.train_labels,
        optax.adam(s.classifier_lr),
        steps=s.classifier_steps,
        batch_size=s.classifier_batch_size,
        key=jr.key(8),
        progress=True,
    )
    if is_main():
        save_model(run.path / "classifier.eqx", clf)
    t_small = run.sde.sampling_eps
    logits = jax.vmap(lambda x: clf.logits(t_small, x))(jnp.asarray(ds.test))
    test_acc = float(jnp.mean(jnp.argmax(logits, 1) == jnp.asarray(ds.test_labels)))
    k = ds.num_classes
    y = jnp.repeat(jnp.arange(k), 8)
    # a class-conditional model called without y is its unconditional (null-label) score
    score = ClassifierGuidance(lambda t, x: run.model(t, x), clf, s.classifier_scale)
    x = draw(score, run.sde, s.controlled, key=jr.key(9), shape=(len(y), *ds.data_shape), y=y)
    judged = jnp.argmax(jax.vmap(lambda x: clf.logits(t_small, x))(x), 1)
    metrics["guided"] = {
        "classifier_steps": s.classifier_steps,
        "classifier_final_loss": float(np.mean(losses[-50:])),
        "classifier_test_accuracy_at_t_end": test_acc,
        "guidance_scale": s.classifier_scale,
        "requested_class_rate_judged_by_the_same_classifier": float(jnp.mean(judged == y)),
        "seconds": time.perf_counter() - start,
    }
    if not is_main():  # process 0 alone writes files
        return
    plot.save_image_grid(
        to_unit(ds, x),
        run.path / "guided.png",
        ncol=8,
        title=f"classifier guidance, scale {s.classifier_scale}",
    )
    print(f"classifier guidance: {metrics['guided']}")
