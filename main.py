"""Train a score model, sample from it with each sampler, evaluate its likelihood, draw figures.

python main.py --experiment digits_vp
python main.py --experiment mnist_ve --data-dir ../shared/data/mnist-subset --train.steps 2000
python main.py --list
"""

import argparse
import json
import math
import sys
import time
from datetime import datetime
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from tqdm.auto import tqdm

import sgm
from experiments import EXPERIMENTS
from sgm import plot
from sgm._config import build_loss, build_model, build_samplers, build_sde
from sgm._run import CONFIG, INFO, METRICS, MODEL, load_run, save_model, write_json
from sgm._samplers import end_time

MODES = ("train", "sample", "likelihood", "all", "inpaint", "classes", "guided", "colorize")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--experiment", help="experiment name (see --list)")
    p.add_argument("--mode", default="all", choices=MODES)
    p.add_argument("--data-dir", help="local data (MNIST IDX files) instead of tfds")
    p.add_argument("--out", default="runs", help="where run directories go (default: runs/)")
    p.add_argument("--run-dir", help="an existing run directory (sample, likelihood, resume)")
    p.add_argument("--resume", action="store_true", help="continue the latest or given run")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first (multi-host: run once per host)",
    )
    args, rest = p.parse_known_args(argv)
    overrides = {}
    it = iter(rest)
    for token in it:
        if not token.startswith("--") or "." not in token:
            p.error(f"unrecognised argument {token!r}; overrides look like --train.steps 2000")
        key, _, value = token[2:].partition("=")
        if not value:
            value = next(it, None)
            if value is None:
                p.error(f"override {token} needs a value")
        overrides[key] = value
    return p, args, overrides


def latest_run(base: Path, name: str) -> Path | None:
    runs = sorted((base / name).glob("*/")) if (base / name).is_dir() else []
    return runs[-1] if runs else None


def load_data(cfg, data_dir, key):
    ds = sgm.data.load(
        cfg.data.name,
        data_dir=data_dir,
        key=key,
        **({"resolution": cfg.data.resolution} if cfg.data.name == "flowers" else {}),
        **({"length": cfg.data.series_length} if cfg.data.name in ("ou", "ou_theta") else {}),
    )
    if cfg.data.lowres_factor:
        ds = sgm.data.with_lowres_condition(ds, cfg.data.lowres_factor)
    return ds.subset(n_train=cfg.data.n_train, n_test=cfg.data.n_test)


def condition_inputs(cfg, ds, split: str):
    """What a conditional model is given for `split`: the dataset's parameter vectors or maps
    when it has them, else its labels; None for unconditional models."""
    if not cfg.model.conditional:
        return None
    cond = getattr(ds, f"{split}_cond")
    return cond if cond is not None else getattr(ds, f"{split}_labels")


def to_unit(ds, x):
    """Samples in model scale back to [0, 1] for images (the dataset's inverse scaler)."""
    return np.asarray(ds.scaler.inverse(x)) if ds.scaler is not None else np.asarray(x)


def phase_train(cfg, ds, run_dir: Path, resume: bool):
    sde = build_sde(cfg.sde)
    mkey, tkey = jr.split(jr.key(cfg.train.seed))
    model = build_model(
        cfg.model, sde, ds.data_shape, ds.num_classes, key=mkey, cond_shape=ds.cond_shape
    )
    print(f"model: {sgm.nets.param_count(model.net):,} parameters; data {ds.train.shape}")
    t = cfg.train
    model, history = sgm.train(
        model,
        sde,
        ds,
        sgm.default_optimizer(t.lr, warmup=t.warmup, grad_clip=t.grad_clip),
        steps=t.steps,
        batch_size=t.batch_size,
        key=tkey,
        ema_decay=t.ema_decay,
        loss=build_loss(t, cfg.model, ds.num_classes, ds.cond_shape),
        labels=condition_inputs(cfg, ds, "train"),
        eval_data=ds.test,
        eval_labels=condition_inputs(cfg, ds, "test"),
        eval_every=t.eval_every,
        log_every=t.log_every,
        checkpoint_dir=run_dir / "checkpoint",
        checkpoint_every=t.checkpoint_every,
        resume=resume,
        return_history=True,
    )
    save_model(run_dir / MODEL, model)
    if resume and (run_dir / "history.json").exists():
        history = merge_history(json.loads((run_dir / "history.json").read_text()), history)
    if history["step"]:
        write_json(run_dir / "history.json", history)
        plot.save_loss_curve(history, run_dir / "loss.png")
    return history


def merge_history(before: dict, after: dict) -> dict:
    """The history of a resumed run: the earlier run's records up to where this one resumed,
    then this one's (records logged after the last checkpoint are replaced, not repeated)."""
    out = {}
    for key, values in after.items():
        steps = "eval_step" if key.startswith("eval") else "step"  # what `key` is logged against
        start = after[steps][0] if after[steps] else float("inf")
        old = before.get(key, [])
        out[key] = [v for v, s in zip(old, before.get(steps, []), strict=False) if s < start]
        out[key] += list(values)
    return out


def save_samples(ds, x, path, title):
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


def sampling_condition(cfg, ds, n: int):
    """`y` for `n` conditional samples: labels 0, 1, ..., or the first test examples' parameters
    or maps (cycled); None for unconditional models."""
    if not cfg.model.conditional:
        return None
    if ds.test_cond is not None:
        return jnp.asarray(ds.test_cond[np.arange(n) % len(ds.test_cond)])
    return jnp.arange(n) % ds.num_classes


def save_conditional(ds, x, y, path, title):
    """Figures of samples drawn given parameters or maps (classes use the sample grid)."""
    if ds.condition == "map":
        k = min(8, len(x))
        idx = np.arange(k) % len(ds.test)
        rows = np.concatenate([np.asarray(y[:k]), np.asarray(x[:k]), ds.test[idx]])
        plot.save_image_grid(to_unit(ds, rows), path, ncol=k,
                             title=f"{title}\nrows: condition, sample, truth")  # fmt: skip
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


def phase_sample(cfg, ds, run, metrics):
    n = cfg.sample.n_samples
    y = sampling_condition(cfg, ds, n)
    out = {}
    samplers = build_samplers(cfg.sample)
    # Each sampler is one jitted loop: progress is shown per sampler, with its elapsed time.
    bar = tqdm(samplers.items(), desc="sample", unit="sampler", total=len(samplers))
    for name, sampler in bar:
        bar.set_postfix_str(name)
        start = time.perf_counter()
        x, nfe = sgm.sample(
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
        bar.write(f"sampled with {name}: NFE {float(nfe.mean()):.0f}, {seconds:.1f} s"
                  + (f", check {out[name]['check']}" if "check" in out[name] else ""))  # fmt: skip
    metrics["samplers"] = out


def phase_likelihood(cfg, ds, run, metrics):
    e = cfg.eval
    kw = dict(exact=e.exact, n_probes=e.n_probes, batch_size=e.batch_size, progress=True)
    if cfg.model.conditional and ds.test_cond is not None:
        kw["y"] = jnp.asarray(ds.test_cond[: e.n_images])  # log p(x | y)
    start = time.perf_counter()
    if ds.test_int is not None:
        images = ds.test_int[: e.n_images]
        values = sgm.bits_per_dim(
            run.model, run.sde, images, key=jr.key(2), scaler=ds.scaler, n_dequant=e.n_dequant, **kw
        )
        name = "test_bits_per_dim"
    else:
        x = ds.test[: e.n_images]
        dim = math.prod(ds.data_shape)
        values = -sgm.log_likelihood(run.model, run.sde, x, key=jr.key(2), **kw) / dim
        name = "test_nll_nats_per_dim"
    values = np.asarray(values, np.float64)
    metrics[name] = {
        "mean": float(values.mean()),
        "stderr": float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None,
        "n": len(values),
        "seconds": time.perf_counter() - start,
        "exact_trace": e.exact,
        "given": ds.condition if "y" in kw else None,  # log p(x | y) when conditioned
    }
    print(f"{name}: {values.mean():.4f} +- {metrics[name]['stderr'] or 0:.4f} (n={len(values)})")


def phase_inpaint(cfg, ds, run, metrics):
    """Fills in the bottom half of test images (or the second half of series) given the rest."""
    if len(ds.data_shape) < 2:
        raise SystemExit("--mode inpaint needs images or series")
    x = jnp.asarray(ds.test[:8])
    mask = np.ones(ds.data_shape, bool)
    mask[..., ds.data_shape[-2 if len(ds.data_shape) == 3 else -1] // 2 :, :] = False
    if len(ds.data_shape) == 2:
        mask = np.ones(ds.data_shape, bool)
        mask[:, ds.data_shape[-1] // 2 :] = False
    s = cfg.sample
    start = time.perf_counter()
    out = sgm.inpaint(
        run.model,
        run.sde,
        sgm.EulerMaruyama(steps=s.inpaint_steps),
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
        "steps": s.inpaint_steps,
    }
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


def phase_colorize(cfg, ds, run, metrics):
    """Colours the grey versions (mean of R, G, B) of 8 test images (Song et al. 2021, I.3)."""
    if len(ds.data_shape) != 3 or ds.data_shape[0] != 3:
        raise SystemExit(
            f"--mode colorize needs RGB images (3 channels); {cfg.data.name} has shape "
            f"{ds.data_shape}. Try cifar10_vp or flowers_ve."
        )
    x = jnp.asarray(ds.test[:8])
    grey = x.mean(axis=1, keepdims=True)
    s = cfg.sample
    start = time.perf_counter()
    out = sgm.colorize(run.model, run.sde, sgm.EulerMaruyama(steps=s.inpaint_steps),
                       key=jr.key(6), grey=grey, method=s.inpaint_method,
                       n_particles=s.inpaint_particles)  # fmt: skip
    metrics["colorize"] = {"seconds": time.perf_counter() - start, "method": s.inpaint_method}
    grid = jnp.concatenate([jnp.repeat(grey, 3, axis=1), out, x])
    plot.save_image_grid(to_unit(ds, grid), run.path / "colorize.png", ncol=8,
                         title="rows: grey input / colourised / original")  # fmt: skip
    print(f"colourised 8 images in {metrics['colorize']['seconds']:.1f} s")


def phase_classes(cfg, ds, run):
    """A grid with one row per class, sampled with classifier-free guidance."""
    if not (cfg.model.conditional and ds.num_classes):
        raise SystemExit(
            "--mode classes needs a class-conditional model (--model.conditional true)"
        )
    k = ds.num_classes
    y = jnp.repeat(jnp.arange(k), 8)
    score = sgm.ClassifierFreeGuidance(run.model, cfg.sample.guidance_scale, null_label=k)
    x = sgm.sample(
        score,
        run.sde,
        sgm.EulerMaruyama(steps=cfg.sample.steps),
        key=jr.key(5),
        shape=(len(y), *ds.data_shape),
        y=y,
    )
    plot.save_image_grid(
        to_unit(ds, x),
        run.path / "classes.png",
        ncol=8,
        title=f"classes 0-{k - 1}, guidance {cfg.sample.guidance_scale}",
    )


def phase_guided(cfg, ds, run, metrics):
    """Classifier guidance: trains a time-dependent classifier on the noisy training images,
    then draws one row per class from the unconditional score plus the classifier's gradient."""
    if not ds.num_classes or ds.train_labels is None:
        raise SystemExit(f"--mode guided needs labelled data; {cfg.data.name} has no labels")
    s = cfg.sample
    start = time.perf_counter()
    net = sgm.nets.Classifier(ds.data_shape, ds.num_classes, key=jr.key(7),
                              width=s.classifier_width)  # fmt: skip
    clf, losses = sgm.train_classifier(
        sgm.NoisyClassifier(net, run.sde),
        ds.train,
        ds.train_labels,
        optax.adam(s.classifier_lr),
        steps=s.classifier_steps,
        batch_size=s.classifier_batch_size,
        key=jr.key(8),
        progress=True,
    )
    save_model(run.path / "classifier.eqx", clf)
    t_small = end_time(run.sde, None)
    logits = jax.vmap(lambda x: clf.logits(t_small, x))(jnp.asarray(ds.test))
    test_acc = float(jnp.mean(jnp.argmax(logits, 1) == jnp.asarray(ds.test_labels)))
    k = ds.num_classes
    y = jnp.repeat(jnp.arange(k), 8)
    # a class-conditional model called without y is its unconditional (null-label) score
    score = sgm.ClassifierGuidance(lambda t, x: run.model(t, x), clf, s.classifier_scale)
    x = sgm.sample(score, run.sde, sgm.EulerMaruyama(steps=s.steps), key=jr.key(9),
                   shape=(len(y), *ds.data_shape), y=y)  # fmt: skip
    judged = jnp.argmax(jax.vmap(lambda x: clf.logits(t_small, x))(x), 1)
    metrics["guided"] = {
        "classifier_steps": s.classifier_steps,
        "classifier_final_loss": float(np.mean(losses[-50:])),
        "classifier_test_accuracy_at_t_end": test_acc,
        "guidance_scale": s.classifier_scale,
        "requested_class_rate_judged_by_the_same_classifier": float(jnp.mean(judged == y)),
        "seconds": time.perf_counter() - start,
    }
    plot.save_image_grid(to_unit(ds, x), run.path / "guided.png", ncol=8,
                         title=f"classifier guidance, scale {s.classifier_scale}")  # fmt: skip
    print(f"classifier guidance: {metrics['guided']}")


def main(argv=None) -> int:
    parser, args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    if args.distributed:
        jax.distributed.initialize()
    if args.list:
        for name, cfg in EXPERIMENTS.items():
            print(f"{name:20s} {cfg.description}\n{'':20s} budget: {cfg.budget}")
        return 0
    if args.experiment not in EXPERIMENTS:
        parser.error(f"unknown experiment {args.experiment!r}; one of: {', '.join(EXPERIMENTS)}")
    cfg = EXPERIMENTS[args.experiment]
    try:
        cfg = cfg.override(overrides)
    except ValueError as e:
        parser.error(str(e))
    base = Path(args.out)
    run_dir = Path(args.run_dir) if args.run_dir else None
    if args.mode not in ("train", "all") or args.resume:
        run_dir = run_dir or latest_run(base, cfg.name)
        if run_dir is None:
            parser.error(f"no run of {cfg.name} in {base}; train one first or pass --run-dir")
        if (run_dir / CONFIG).exists() and not overrides:
            cfg = load_run_config(run_dir)
    elif run_dir is None:
        run_dir = base / cfg.name / datetime.now().strftime("%Y%m%d-%H%M%S")
    ds = load_data(cfg, args.data_dir, jr.key(cfg.train.seed + 1))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / CONFIG, cfg.to_dict())
    write_json(
        run_dir / INFO,
        {
            "data_shape": list(ds.data_shape),
            "num_classes": ds.num_classes,
            "cond_shape": list(ds.cond_shape) if ds.cond_shape else None,
            "data": ds.name,
            "devices": jax.device_count(),
        },
    )
    print(f"run directory: {run_dir}")
    metrics = {
        "experiment": cfg.name,
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
    }
    if (run_dir / METRICS).exists():
        metrics = {**json.loads((run_dir / METRICS).read_text()), **metrics}
    if args.mode in ("train", "all"):
        start = time.perf_counter()
        phase_train(cfg, ds, run_dir, resume=args.resume)
        seconds = time.perf_counter() - start
        earlier = metrics.get("train_seconds", 0.0) if args.resume else 0.0
        metrics["train_seconds"] = earlier + seconds
        plot.save_marginals(build_sde(cfg.sde), run_dir / "marginals.png")
    run = load_run(run_dir)
    if args.mode in ("sample", "all"):
        phase_sample(cfg, ds, run, metrics)
    if args.mode in ("likelihood", "all"):
        phase_likelihood(cfg, ds, run, metrics)
    if (
        args.mode in ("inpaint", "colorize", "classes", "guided")
        and run.cond_shape
        and cfg.model.conditional
    ):
        raise SystemExit(
            f"--mode {args.mode} is for unconditional or class-conditional models; {cfg.name} "
            f"is conditioned on {ds.condition}s (its samples, drawn given the test examples' "
            "conditions, come from --mode sample)."
        )
    if args.mode == "inpaint":
        phase_inpaint(cfg, ds, run, metrics)
    if args.mode == "classes":
        phase_classes(cfg, ds, run)
    if args.mode == "guided":
        phase_guided(cfg, ds, run, metrics)
    if args.mode == "colorize":
        phase_colorize(cfg, ds, run, metrics)
    write_json(run_dir / METRICS, metrics)
    print(f"metrics written to {run_dir / METRICS}")
    return 0


def load_run_config(run_dir: Path):
    return sgm.ExperimentConfig.from_dict(json.loads((run_dir / CONFIG).read_text()))


if __name__ == "__main__":
    sys.exit(main())
