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

from .. import nets
from .._bits import bits_per_dim
from .._io import save_model
from .._likelihood import log_likelihood
from .._progress import progress
from .._samplers import sample as draw
from .._scaler import AffineScaler
from .._training import train as _train
from ..data import Dataset
from ..distributed import is_main
from ._controlled import (
    classes as classes,
    colorize as colorize,
    guided as guided,
    inpaint as inpaint,
)
from ._experiment import Experiment
from ._outputs import (
    PhaseError as PhaseError,
    save_conditional,
    save_history,
    save_sample_arrays,
    save_samples,
    to_unit as to_unit,
)
from ._run import MODEL, Run, RunDir, model_digest
from ._serial import to_json


def data_info(ds: Dataset) -> dict:
    """What `run.json` records about the data a run was trained on."""
    return {
        "data": ds.name,
        "data_shape": list(ds.data_shape),
        "num_classes": ds.num_classes,
        "cond_shape": list(ds.cond_shape) if ds.cond_shape else None,
        "devices": jax.device_count(),
    }


def check_data(cfg: Experiment, ds: Dataset) -> None:
    """Raises `PhaseError` when the experiment cannot train on `ds` (before any work)."""
    deq = cfg.net.dequantizer
    if deq is not None and (ds.scaler != deq.scaler or ds.num_bits != deq.num_bits):
        raise PhaseError(
            f"net.dequantizer expects {deq.num_bits}-bit images in model scale {deq.scaler}; "
            f"{ds.name} has num_bits={ds.num_bits} and scaler {ds.scaler}: give the dataset's "
            "num_bits and scaler, or no dequantizer."
        )


def train(cfg: Experiment, ds: Dataset, run: RunDir, *, resume: bool, verify: bool = True) -> dict:
    """Trains (or, with `resume`, continues) the run's model and writes `model.eqx` (its
    SHA-256 recorded in `run.json`), `history.json` and `loss.png`. The history comes from the
    checkpoints, so it is continuous across interruptions; after one it is written up to the
    last checkpoint. `verify=False` resumes from a checkpoint without checksums."""
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
                verify=verify,
                eval_data=ds.test,
                eval_labels=condition_inputs(cfg, ds, "test"),
                eval_images=ds.test_int,
                num_bits=ds.num_bits,
                scaler=ds.scaler,
            ),
        )
    except (KeyboardInterrupt, FloatingPointError):
        save_history(run)
        raise
    if is_main():
        save_model(run.path / MODEL, model)
        run.update_info(model_sha256=model_digest(run.path / MODEL))
    save_history(run, history)
    for unit in ("bits_per_dim", "nats_per_dim"):
        if history.get(f"eval_bound_{unit}"):
            value, se = history[f"eval_bound_{unit}"][-1], history[f"eval_bound_{unit}_se"][-1]
            step, label = history["eval_step"][-1], unit.replace("_per_", "/")
            print(f"held-out bound at step {step}: {value:.4f} +- {se:.4f} {label}")
    return history


def condition_inputs(cfg: Experiment, ds: Dataset, split: str):
    """What a conditional model is given for `split`: the dataset's parameter vectors or maps
    when it has them, else its labels; None for unconditional models."""
    if not cfg.net.conditional:
        return None
    cond = getattr(ds, f"{split}_cond")
    return cond if cond is not None else getattr(ds, f"{split}_labels")


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


def sample(cfg: Experiment, ds: Dataset, run: Run, metrics: dict) -> None:
    """Draws `cfg.sample.n_samples` with each configured sampler; per sampler a figure and
    `samples_<sampler>.npz` (`x` in data units, `x_model` in model scale; for conditional
    models `y` too, and the figure of samples given the test examples' conditions)."""
    n = cfg.sample.n_samples
    y = sampling_condition(cfg, ds, n)
    out = {}
    samplers = cfg.sample.samplers
    # Each sampler is one jitted loop: progress is shown per sampler, with its elapsed time.
    bar = progress(samplers.items(), desc="sample", unit="sampler", total=len(samplers))
    for name, sampler in bar:
        bar.set_postfix_str(name, refresh=False)
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
        save_sample_arrays(ds, x, run.path / f"samples_{name}.npz", y)
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
    given = None
    if cfg.net.conditional and ds.test_cond is not None:
        kw["y"] = jnp.asarray(ds.test_cond[: e.n_images])  # log p(x | y)
        given = ds.condition
    elif cfg.net.conditional and ds.num_classes is not None:
        # class-conditional: the unconditional p(x), by the null label its label dropout trains
        kw["y"] = jnp.full(min(e.n_images, len(ds.test)), ds.num_classes)
    start = time.perf_counter()
    protocol = None
    if ds.test_int is not None:
        images = ds.test_int[: e.n_images]
        values, info = bits_per_dim(
            run.model,
            run.sde,
            images,
            key=jr.key(2),
            scaler=ds.scaler if isinstance(ds.scaler, AffineScaler) else AffineScaler(),
            n_dequant=e.n_dequant,
            return_info=True,
            **kw,
        )
        protocol = info.to_dict()  # images, K, estimator, tolerances, t0, solver, NFE, errors
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
        "given": given,  # the condition of log p(x | y); None for p(x)
        "protocol": protocol,
    }
    print(f"{name}: {values.mean():.4f} +- {metrics[name]['stderr'] or 0:.4f} (n={len(values)})")
