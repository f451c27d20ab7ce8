"""The phases of the main job (`python main.py`): train, sample, likelihood, and the
controlled-generation modes. Each acts on a run directory and the run's data, writes its
figures there and its numbers into `metrics`."""

import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from tqdm.auto import tqdm

from .. import nets
from .._classifier import NoisyClassifier, train_classifier
from .._control import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    colorize as colorize_images,
    inpaint as inpaint_examples,
)
from .._io import save_model, write_json
from .._likelihood import bits_per_dim, log_likelihood
from .._samplers import EulerMaruyama, PredictorCorrector, sample as draw
from .._scaler import AffineScaler
from .._training import checkpoint_meta, train as _train
from ..data import Dataset
from ..distributed import is_main
from . import plot
from ._experiment import Experiment
from ._run import HISTORY, MODEL, Run, RunDir
from ._serial import to_json


class PhaseError(ValueError):
    """A mode that does not apply to this run or its data."""


def data_info(ds: Dataset) -> dict:
    """What `run.json` records about the data a run was trained on."""
    return {
        "data": ds.name,
        "data_shape": list(ds.data_shape),
        "num_classes": ds.num_classes,
        "cond_shape": list(ds.cond_shape) if ds.cond_shape else None,
        "devices": jax.device_count(),
    }


def to_unit(ds: Dataset, x):
    """Samples in model scale back to [0, 1] for images (the dataset's inverse scaler)."""
    return np.asarray(ds.scaler.inverse(x)) if ds.scaler is not None else np.asarray(x)


def check_data(cfg: Experiment, ds: Dataset) -> None:
    """Raises `PhaseError` when the experiment cannot train on `ds` (before any work)."""
    deq = cfg.net.dequantizer
    if deq is not None and (ds.scaler != deq.scaler or ds.num_bits != deq.num_bits):
        raise PhaseError(
            f"net.dequantizer expects {deq.num_bits}-bit images in model scale {deq.scaler}; "
            f"{ds.name} has num_bits={ds.num_bits} and scaler {ds.scaler}: give the dataset's "
            "num_bits and scaler, or no dequantizer."
        )


def train(cfg: Experiment, ds: Dataset, run: RunDir, *, resume: bool) -> dict:
    """Trains (or, with `resume`, continues) the run's model and writes `model.eqx`,
    `history.json` and `loss.png`. The history comes from the checkpoints, so it is
    continuous across interruptions; after one it is written up to the last checkpoint."""
    check_data(cfg, ds)
    model = cfg.build_model(ds.data_shape, num_classes=ds.num_classes, cond_shape=ds.cond_shape)
    print(f"model: {nets.param_count(model.net):,} parameters; data {ds.train.shape}")
    t = cfg.train
    try:
        model, history = _train(
            model,
            cfg.sde,
            ds,
            cfg.optimizer,
            key=jr.split(jr.key(t.seed))[1],
            loss=cfg.build_loss(ds.num_classes, ds.cond_shape),
            labels=condition_inputs(cfg, ds, "train"),
            **t.options(
                run.checkpoint_dir,
                fingerprint=run.fingerprint,
                resume=resume,
                eval_data=ds.test,
                eval_labels=condition_inputs(cfg, ds, "test"),
            ),
        )
    except (KeyboardInterrupt, FloatingPointError):
        save_history(run)
        raise
    if is_main():
        save_model(run.path / MODEL, model)
    save_history(run, history)
    return history


def save_history(run: RunDir, history: dict | None = None) -> None:
    """Writes `history.json` and `loss.png`: `history`, or the newest checkpoint's."""
    if not is_main():  # process 0 alone writes files
        return
    if history is None:
        try:
            history = checkpoint_meta(run.checkpoint_dir).get("history")
        except ValueError:
            return
    if history and history["step"]:
        write_json(run.path / HISTORY, history)
        plot.save_loss_curve(history, run.path / "loss.png")


def condition_inputs(cfg: Experiment, ds: Dataset, split: str):
    """What a conditional model is given for `split`: the dataset's parameter vectors or maps
    when it has them, else its labels; None for unconditional models."""
    if not cfg.net.conditional:
        return None
    cond = getattr(ds, f"{split}_cond")
    return cond if cond is not None else getattr(ds, f"{split}_labels")


def save_samples(ds: Dataset, x, path, title: str) -> None:
    if not is_main():  # process 0 alone writes files
        return
    if len(ds.data_shape) == 3:
        plot.save_image_grid(to_unit(ds, x), path, title=title)
    elif ds.data_shape == (2,):
        plot.save_scatter(x, path, reference=ds.test[:2000], title=title, lim=2.5)
    else:
        plot.save_series(
            np.asarray(x).reshape(len(x), -1),
            path,
            title=title,
            reference=ds.test.reshape(len(ds.test), -1),
        )


def sampling_condition(cfg: Experiment, ds: Dataset, n: int):
    """`y` for `n` conditional samples: labels 0, 1, ..., or the first test examples' parameters
    or maps (cycled); None for unconditional models."""
    if not cfg.net.conditional:
        return None
    if ds.test_cond is not None:
        return jnp.asarray(ds.test_cond[np.arange(n) % len(ds.test_cond)])
    if ds.num_classes is None:
        raise PhaseError(f"{cfg.name} is conditional, but {ds.name} has no labels or conditions.")
    return jnp.arange(n) % ds.num_classes


def save_conditional(ds, x, y, path, title):
    """Figures of samples drawn given parameters or maps (classes use the sample grid)."""
    if not is_main():
        return
    if ds.condition == "map":
        k = min(8, len(x))
        idx = np.arange(k) % len(ds.test)
        rows = np.concatenate([np.asarray(y[:k]), np.asarray(x[:k]), ds.test[idx]])
        plot.save_image_grid(
            to_unit(ds, rows), path, ncol=k, title=f"{title}\nrows: condition, sample, truth"
        )
    elif ds.condition == "vector" and len(ds.data_shape) == 2 and y.shape[1] == 1:
        lag1 = lambda s: np.sum(s[:, 1:] * s[:, :-1], 1) / np.sum(s[:, :-1] ** 2, 1)  # noqa: E731
        flat = lambda a: np.asarray(a).reshape(len(a), -1)  # noqa: E731
        plot.save_parameter_response(
            np.asarray(y[:, 0]),
            lag1(flat(x)),
            path,
            reference=(ds.test_cond[:, 0], lag1(flat(ds.test))),
            xlabel="conditioning parameter y[0]",
            ylabel="lag-1 autocorrelation",
            title=title,
        )


def sample(cfg: Experiment, ds: Dataset, run: Run, metrics: dict) -> None:
    """Draws `cfg.sample.n_samples` with each configured sampler; a grid per sampler (and, for
    conditional models, the figure of samples given the test examples' conditions)."""
    n = cfg.sample.n_samples
    y = sampling_condition(cfg, ds, n)
    out = {}
    samplers = cfg.sample.samplers
    # Each sampler is one jitted loop: progress is shown per sampler, with its elapsed time.
    bar = tqdm(samplers.items(), desc="sample", unit="sampler", total=len(samplers))
    for name, sampler in bar:
        bar.set_postfix_str(name)
        start = time.perf_counter()
        x, nfe = draw(
            run.model,
            run.sde,
            sampler,
            key=jr.key(1),
            shape=(n, *ds.data_shape),
            y=y,
            return_nfe=True,
        )
        x = jax.block_until_ready(x)
        seconds = time.perf_counter() - start
        finite = bool(jnp.all(jnp.isfinite(x)))
        # NFE is counted in float32 per example: its mean is rounded to what it can resolve
        out[name] = {"nfe": round(float(nfe.mean()), 2), "seconds": seconds, "finite": finite}
        title = f"{cfg.name}: {name}, NFE {float(nfe.mean()):.0f}"
        save_samples(ds, x, run.path / f"samples_{name}.png", title)
        if y is not None and ds.test_cond is not None:
            save_conditional(ds, x, y, run.path / f"conditional_{name}.png", title)
            if ds.check_conditional is not None and finite:
                out[name]["check"] = ds.check_conditional(np.asarray(x), np.asarray(y))
        bar.write(
            f"sampled with {name}: NFE {float(nfe.mean()):.0f}, {seconds:.1f} s"
            + (f", check {out[name]['check']}" if "check" in out[name] else "")
        )
    metrics["samplers"] = out


def likelihood(cfg: Experiment, ds: Dataset, run: Run, metrics: dict) -> None:
    """Test bits/dim (images) or nats/dim of the first `cfg.eval.n_images` test examples."""
    e = cfg.eval
    kw: dict[str, Any] = dict(trace=e.trace, batch_size=e.batch_size, progress=True)
    if cfg.net.conditional and ds.test_cond is not None:
        kw["y"] = jnp.asarray(ds.test_cond[: e.n_images])  # log p(x | y)
    start = time.perf_counter()
    if ds.test_int is not None:
        images = ds.test_int[: e.n_images]
        values = bits_per_dim(
            run.model,
            run.sde,
            images,
            key=jr.key(2),
            scaler=ds.scaler or AffineScaler(),
            n_dequant=e.n_dequant,
            **kw,
        )
        name = "test_bits_per_dim"
    else:
        x = ds.test[: e.n_images]
        dim = math.prod(ds.data_shape)
        values = -log_likelihood(run.model, run.sde, x, key=jr.key(2), **kw) / dim
        name = "test_nll_nats_per_dim"
    values = np.asarray(values, np.float64)
    metrics[name] = {
        "mean": float(values.mean()),
        "stderr": float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None,
        "n": len(values),
        "seconds": time.perf_counter() - start,
        "trace": to_json(e.trace),
        "given": ds.condition if "y" in kw else None,  # log p(x | y) when conditioned
    }
    print(f"{name}: {values.mean():.4f} +- {metrics[name]['stderr'] or 0:.4f} (n={len(values)})")


def _not_map_or_vector_conditioned(cfg: Experiment, run: Run, mode: str) -> None:
    if run.cond_shape and cfg.net.conditional:
        what = "vectors" if len(run.cond_shape) == 1 else "maps"
        raise PhaseError(
            f"--mode {mode} is for unconditional or class-conditional models; {cfg.name} is "
            f"conditioned on {what} (its samples, drawn given the test examples' conditions, "
            "come from --mode sample)."
        )


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
