"""The phases of the main job (`python main.py`): train, sample, likelihood, quality, and
the controlled-generation modes. Each acts on a run directory and the run's data, writes its
figures there and its numbers into `metrics`."""

import hashlib
import io
import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .. import nets
from .._bits import BitsPerDimInfo, bits_per_dim
from .._checks import check_finite_score
from .._io import save_model
from .._likelihood import LogLikelihood
from .._progress import progress
from .._samplers import sample as draw
from .._scaler import AffineScaler
from .._sharding import example_keys
from .._training import train as _train
from .._training._inputs import check_random_flip
from ..data import Dataset
from ..distributed import is_main
from ._chunks import ChunkStore, inputs_digest
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
from ._posthoc import reconstruct as posthoc_ema, with_ema as with_ema  # noqa: F401
from ._quality import check_quality as check_quality, quality as _quality
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
    try:
        check_random_flip(cfg.train.random_flip, ds.data_shape)
    except ValueError as e:
        raise PhaseError(f"train.{e}") from None
    deq = cfg.net.dequantizer
    if deq is not None and (ds.scaler != deq.scaler or ds.num_bits != deq.num_bits):
        raise PhaseError(
            f"net.dequantizer expects {deq.num_bits}-bit images in model scale {deq.scaler}; "
            f"{ds.name} has num_bits={ds.num_bits} and scaler {ds.scaler}: give the dataset's "
            "num_bits and scaler, or no dequantizer."
        )


def train(
    cfg: Experiment,
    ds: Dataset,
    run: RunDir,
    *,
    resume: bool,
    verify: bool = True,
    metrics: dict | None = None,
) -> dict:
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
            bound = cfg.train._bound(len(ds.test), ds.test_int, ds.num_bits, ds.scaler)
            if metrics is not None and bound is not None:
                # the last reading with its protocol (every reading is in history.json)
                metrics["held_out_bound"] = {
                    "step": step,
                    "value": value,
                    "sem": se,
                    **bound.protocol(),
                    "t0": float(cfg.sde.t0),
                    "t1": float(cfg.sde.t1),
                }
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
    """Test bits/dim (images) or nats/dim of the first `cfg.eval.n_images` test examples,
    evaluated in chunks of `cfg.eval.chunk_size` examples, each kept when it finishes (under
    `run.path/likelihood/<protocol digest>/`): an interrupted evaluation continues with the
    chunks it has, and the numbers are those of an uninterrupted one."""
    e = cfg.eval
    n = min(e.n_images, len(ds.test))
    y, given = None, None
    if cfg.net.conditional and ds.test_cond is not None:
        y = np.asarray(ds.test_cond[:n])  # log p(x | y)
        given = ds.condition
    elif cfg.net.conditional and ds.num_classes is not None:
        # class-conditional: the unconditional p(x), by the null label its label dropout trains
        y = np.full(n, ds.num_classes)
    images = ds.test_int is not None
    name = "test_bits_per_dim" if images else "test_nll_nats_per_dim"
    data = np.asarray(ds.test_int[:n] if ds.test_int is not None else ds.test[:n])
    scaler = ds.scaler if isinstance(ds.scaler, AffineScaler) else AffineScaler()
    ll = LogLikelihood(run.model, run.sde, trace=e.trace)  # the settings it evaluates with
    protocol = {
        "quantity": name,
        "model_leaves_sha256": _model_sha256(run.model),
        "sde": to_json(cfg.sde),
        "t0": float(run.sde.t0),
        "t1": float(run.sde.t1),
        "key": _KEY,
        "trace": to_json(e.trace),
        "n_dequant": e.n_dequant if images else None,
        "estimator": "importance" if images else None,
        "num_bits": ds.num_bits if images else None,
        "scaler": repr(scaler) if images else None,
        "batch_size": e.batch_size,
        "chunk_size": e.chunk_size,
        "solver": {
            "solver": type(ll.solver).__name__,
            "rtol": ll.rtol,
            "atol": ll.atol,
            "max_steps": ll.max_steps,
            "error_norm": ll.error_norm,
            "precision": ll.precision,
            "one_at_a_time": ll.one_at_a_time,
            "variables": repr(ll.variables),
        },
        # batched solves round with their companions: the device layout is part of the values
        "devices": jax.device_count(),
        "processes": jax.process_count(),
    }
    store = ChunkStore(run.path / "likelihood", protocol)
    bounds = [(a, min(a + e.chunk_size, n)) for a in range(0, n, e.chunk_size)]
    inputs = [inputs_digest(data[a:b], None if y is None else y[a:b]) for a, b in bounds]

    def like(a, b):  # the arrays of a chunk, as zeros
        out = {"values": np.zeros(b - a, np.float32)}
        return out if images else {**out, "nfe": np.zeros(b - a, np.int32)}

    def evaluate(a, b, inner):
        part_y = None if y is None else jnp.asarray(y[a:b])
        if images:
            values, info = bits_per_dim(
                run.model,
                run.sde,
                data[a:b],
                key=jr.key(_KEY),
                scaler=scaler,
                n_dequant=e.n_dequant,
                return_info=True,
                first_index=a,  # image i's draws and probes from its index in the test set
                trace=e.trace,
                batch_size=e.batch_size,
                progress=inner,
                y=part_y,
            )
            return {"values": np.asarray(values, np.float32)}, info.to_dict()
        x = jnp.asarray(data[a:b])
        check_finite_score(run.model, run.sde, x, part_y, size=e.batch_size)
        keys = example_keys(jr.key(_KEY), b - a, a)  # as one log_likelihood call of all
        lp, nfe = ll.solve_keyed(x, keys, part_y, e.batch_size, inner)
        dim = math.prod(ds.data_shape)
        values = np.asarray(-lp / dim, np.float32)
        return {"values": values, "nfe": np.asarray(nfe, np.int32)}, None

    start = time.perf_counter()
    chunks = store.load_all(bounds, inputs, like)
    reused = sum(c is not None for c in chunks)
    if reused:
        print(f"reusing {reused} of {len(bounds)} chunks in {store.directory}")
    todo = [i for i, c in enumerate(chunks) if c is None]
    several = len(bounds) > 1
    bar = progress(todo, desc=name, unit="chunk", total=len(todo), disable=not several)
    for i in bar:
        a, b = bounds[i]
        arrays, info = evaluate(a, b, inner=not several)
        store.save(i, a, b, inputs[i], arrays, info=info)
        chunks[i] = {"arrays": arrays, "meta": {"info": info}}
    done = [c for c in chunks if c is not None]
    values = np.concatenate([c["arrays"]["values"] for c in done]).astype(np.float64)
    stderr = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None
    metrics[name] = {
        "mean": float(values.mean()),
        "stderr": stderr,
        "n": len(values),
        "seconds": time.perf_counter() - start,
        "trace": to_json(e.trace),
        "given": given,  # the condition of log p(x | y); None for p(x)
        "protocol": _whole(done, values) if images else None,
        "chunks": {"size": e.chunk_size, "count": len(bounds), "reused": reused},
    }
    print(f"{name}: {values.mean():.4f} +- {stderr or 0:.4f} (n={len(values)})")


def quality(cfg: Experiment, ds: Dataset, run: Run, metrics: dict) -> None:
    """FID, KID, IS, precision and recall of `cfg.quality.n_samples` samples against the
    data (`sgm.experiment._quality.quality`), into `metrics["quality"]`."""
    _quality(cfg, ds, run, metrics, y=sampling_condition(cfg, ds, cfg.quality.n_samples))


_KEY = 2  # the likelihood phase's key, jr.key(2)


def _model_sha256(model) -> str:
    """SHA-256 of the model's arrays as `eqx.tree_serialise_leaves` writes them."""
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, model)
    return hashlib.sha256(buf.getvalue()).hexdigest()


def _whole(chunks: list[dict], values: np.ndarray) -> dict:
    """The `BitsPerDimInfo` of all images from those of the chunks: the spread over all the
    values, the estimator's noise as the RMS over every image, NFE over every solve."""
    infos = [c["meta"]["info"] for c in chunks]
    sizes = np.array([i["n_images"] for i in infos], np.float64)
    n = len(values)
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    est = [i["estimator_std"] for i in infos]
    rms = None
    if all(s is not None for s in est):
        rms = float(np.sqrt(np.sum(sizes * np.square(est)) / n))
    whole = {
        **infos[0],
        "bits_per_dim": float(values.mean()),
        "std_over_images": std,
        "sem": std / math.sqrt(n),
        "estimator_std": rms,
        "n_images": n,
        "nfe_mean": float(np.sum(sizes * [i["nfe_mean"] for i in infos]) / n),
        "nfe_max": max(i["nfe_max"] for i in infos),
        "solver_error": None,
    }
    return BitsPerDimInfo(**whole).to_dict()
