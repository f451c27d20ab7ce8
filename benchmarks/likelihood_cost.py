"""Likelihood cost and accuracy: the old parametrisation (the flow in `t`, RMS error norm)
against the new default, exact traces against Hutchinson's, on closed forms and a trained model.

    python benchmarks/likelihood_cost.py --run-dir runs/mnist_vp/STAMP \
        --data-dir ../shared/data/mnist-subset [--quick] [--sections ...] [--out results.json]

Sections (`--sections`, default all):

- `machine`: this machine's float32 matmul and convolution throughput (the limits).
- `closed_form`: the accuracy/cost curve, NFE and worst error in nats against the closed form
  for a rotated 16-D Gaussian and a (1, 28, 28) Gaussian with a steep spectrum, under VP,
  subVP and VE, at several tolerances, old and new parametrisation (exact trace).
- `field`: the cost of one evaluation of the ODE's vector field with its trace on one model
  image: exact traces in chunks (7 x 128 padded as before, 7 x 112 balanced, larger), achieved
  GFLOP/s from XLA's cost analysis; Hutchinson.
- `model`: NFE, seconds and bits/dim per image, old against new, Hutchinson (one Rademacher
  probe, `--repeats` probe keys on the same dequantized images; variance per probe), Gaussian
  probes and Hutch++ (3 products) for their variance, and the exact trace on `--exact-images`.
- `stability`: one example's value alone, among companions, with another `batch_size`, and on
  two simulated devices.
- `lockstep`: the old `vmap` over a batch (every member runs until the slowest finishes)
  against the per-example solves `sgm.log_likelihood` now does.

Prints JSON per section as it goes, then all of it (`--out` writes it too).
"""

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _report import report

import sgm
import sgm._model_checks
import sgm.experiment
from sgm._trace import balanced_chunks, exact_trace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import ImageGaussian, rotated_gaussian  # noqa: E402

OLD = dict(variables=sgm.ODEVariables(time="t", state="x"), error_norm="rms")
NEW: dict = {}  # the defaults of sgm.log_likelihood
LOG_SIGMA = dict(variables=sgm.ODEVariables(time="log_sigma"))  # the sampler's coordinates
SDES = {"vp": sgm.VPSDE(), "subvp": sgm.SubVPSDE(), "ve": sgm.VESDE(sigma_min=0.01, sigma_max=10.0)}


def median_seconds(fn, repeats: int = 3):
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return out, float(np.median(times))


def flops_of(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def machine(quick: bool):
    """Float32 throughput of a large matmul and of a UNet-sized 3x3 convolution."""
    n = 1024 if quick else 2048
    a = jr.normal(jr.key(0), (n, n))
    _, s = median_seconds(lambda: jnp.dot(a, a))
    x = jr.normal(jr.key(1), (112, 28, 28, 64))
    w = jr.normal(jr.key(2), (3, 3, 64, 64))
    conv = jax.jit(
        lambda x, w: jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    )
    _, sc = median_seconds(lambda: conv(x, w))
    return {
        "matmul_gflops": 2 * n**3 / s / 1e9,
        "conv3x3_64ch_28x28_batch112_gflops": flops_of(conv, x, w) / sc / 1e9,
        "cpu": platform.processor() or platform.machine(),
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
    }


def _truth(target, g, sde, x):
    if target == "image":
        return jax.vmap(lambda x: g.model_log_prob(sde, x))(x)
    flow = jax.vmap(lambda x: sde.prior_log_prob(g.flow(sde, sde.t0, sde.t1, x)))
    return flow(x) + g.flow_log_det(sde, sde.t0, sde.t1)


def closed_form(quick: bool):
    tols = [1e-4, 1e-5] if quick else [1e-3, 1e-4, 1e-5, 1e-6]
    targets = {"d16": (rotated_gaussian(d=16), 4), "image": (ImageGaussian(), 2)}
    rows = []
    for target, (g, n) in targets.items():
        x = g.sample(jr.key(0), n)
        for name, sde in SDES.items():
            truth = _truth(target, g, sde, x)
            for label, opts in (("old_t", OLD), ("new", NEW), ("log_sigma", LOG_SIGMA)):
                for tol in tols:
                    ll = sgm.LogLikelihood(
                        g.score(sde), sde, trace=sgm.Exact(), rtol=tol, atol=tol, **opts
                    )
                    lp, nfe = ll(x, return_nfe=True)
                    row = {
                        "target": target,
                        "sde": name,
                        "parametrisation": label,
                        "tol": tol,
                        "nfe_mean": float(nfe.mean()),
                        "max_error_nats": float(jnp.abs(lp - truth).max()),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


NULL_LABEL: list = [None]  # a class-conditional model's null label: its p(x) is measured


def y_of(n: int) -> dict:
    """`y` for `n` examples: the null label of a class-conditional model (asked for
    explicitly), else nothing."""
    label = NULL_LABEL[0]
    return {} if label is None else {"y": jnp.full(n, label)}


def load_model(run_dir: str, checkpoint: bool):
    """The run's EMA model; with `checkpoint`, from the last checkpoint of an unfinished run."""
    if not checkpoint:
        run = sgm.experiment.load_run(run_dir)
        return run.config, run.sde, run.model, run.data_shape
    run = sgm.experiment.RunDir.open(run_dir)
    config, info = run.config, run.info
    shape = tuple(info["data_shape"])
    model = config.build_model(shape, num_classes=info["num_classes"])
    opt = config.optimizer.transform(config.train.steps)
    like = sgm.TrainState(
        model,
        model,
        opt.init(eqx.filter(model, eqx.is_inexact_array)),
        jnp.zeros((), jnp.int32),
        jr.key_data(jr.key(0)),
        jnp.zeros((), jnp.int32),
    )
    state, _ = sgm.load_checkpoint(run.checkpoint_dir, like)
    sde = config.sde
    return config, sde, state.ema, shape


def field(sde, model, x0, quick: bool):
    """One evaluation of the vector field with its trace, as the solve makes it."""
    var = sgm.ODEVariables(time="sigma")
    v = var.coordinate(sde, 0.5)
    d = x0.size
    out = {}

    def evaluate(trace, probes):
        def fn(z):
            return var.drift_and_divergence(
                sde, model, v, z, lambda lin: trace(lin, z.shape, probes, shift=1.0)
            )

        return fn

    hutch = sgm.Hutchinson()
    fn = jax.jit(evaluate(hutch, hutch.draw(jr.key(0), x0.shape)))
    _, s = median_seconds(lambda: fn(x0), repeats=5)
    flops = flops_of(fn, x0)
    out["hutchinson"] = {"seconds": s, "gflop": flops / 1e9, "gflops": flops / s / 1e9}
    chunkings = {"128_padded_as_before": None, "128_balanced": 128, "196": 196, "392": 392}
    if quick:
        chunkings = {"128_balanced": 128}

    def padded(lin, shape, probes, shift=0.0):  # the old scheme: 7 chunks of 128, 112 padded
        return exact_trace(lin, shape, 128, balanced=False)

    fns = {
        label: jax.jit(evaluate(padded if chunk is None else sgm.Exact(chunk), None))
        for label, chunk in chunkings.items()
    }
    for fn in fns.values():
        jax.block_until_ready(fn(x0))  # compile
    # Rounds over all chunkings, so that the load of a shared machine hits them alike.
    times = {label: [] for label in fns}
    for _ in range(1 if quick else 3):
        for label, fn in fns.items():
            times[label].append(timed(lambda fn=fn: fn(x0))[1])
    for label, chunk in chunkings.items():
        s = float(np.median(times[label]))
        # XLA's cost analysis counts a loop body once: times the number of chunks.
        n_chunks = balanced_chunks(d, chunk)[0] if chunk else -(-d // 128)
        flops = flops_of(fns[label], x0) * n_chunks
        out[f"exact_{label}"] = {
            "seconds": s,
            "seconds_each": times[label],
            "chunks": n_chunks,
            "gflop": flops / 1e9,
            "gflops": flops / s / 1e9,
        }
        print(json.dumps({label: out[f"exact_{label}"]}), flush=True)
    out["dimension"] = d
    return out


def _is_option(argv, i, names) -> bool:
    """Whether `argv[i]` is one of `names` or the value following one."""
    return argv[i] in names or (i > 0 and argv[i - 1] in names)


def timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


ESTIMATORS = {
    "hutchinson": sgm.Hutchinson(),
    "hutchinson_gaussian": sgm.Hutchinson(1, "gaussian"),
    "hutch_plus_plus_3": sgm.HutchPlusPlus(3),
}


def model_rows(sde, model, x, to_bpd, args):
    """NFE, s/image and bits/dim, old against new; the spread over probe keys. The first call
    of each setting compiles (not timed); the others are timed."""
    n, rows = len(x), {}
    for label, opts in (("old_t", OLD), ("new", NEW)):
        for est_name, est in ESTIMATORS.items():
            if est_name != "hutchinson" and label == "old_t":
                continue
            ll = sgm.LogLikelihood(model, sde, trace=est, **opts)
            ll(x, key=jr.key(99), **y_of(n))  # compile
            runs = [
                timed(lambda ll=ll, r=r: ll(x, key=jr.key(100 + r), return_nfe=True, **y_of(n)))
                for r in range(args.repeats)
            ]
            bpd = np.stack([to_bpd(lp) for (lp, _), _ in runs])  # (repeats, n)
            spread = bpd.var(0, ddof=1).mean() if args.repeats > 1 else float("nan")
            rows[f"{label}_{est_name}"] = row = {
                "bits_per_dim_mean": float(bpd.mean()),
                "probe_std_per_image_bpd": float(np.sqrt(spread)),
                # the variance of one image's estimate times the products per evaluation
                "variance_per_product_bpd2": float(spread * est.products(x[0].size)),
                "nfe_per_image": float(np.mean([np.asarray(nfe) for (_, nfe), _ in runs])),
                "seconds_per_image": float(np.median([s for _, s in runs])) / n,
            }
            print(json.dumps({f"{label}_{est_name}": row}), flush=True)
    n_exact = min(args.exact_images, n)
    for label, opts in (("old_t", OLD), ("new", NEW)):
        if n_exact == 0 or (label == "old_t" and not args.exact_old):
            continue
        (lp, nfe), s = timed(
            lambda opts=opts: sgm.log_likelihood(
                model,
                sde,
                x[:n_exact],
                trace=sgm.Exact(),
                return_nfe=True,
                **opts,
                **y_of(n_exact),
            )
        )
        rows[f"{label}_exact"] = row = {
            "bits_per_dim_mean": float(to_bpd(lp).mean()),
            "nfe_per_image": float(np.mean(nfe)),
            "seconds_per_image_incl_compile": s / n_exact,
        }
        print(json.dumps({f"{label}_exact": row}), flush=True)
    return rows


def lockstep(sde, model, x):
    """Hutchinson on one batch: `vmap` over the batch (lock-step) against per-example solves."""
    ll = sgm.LogLikelihood(model, sde)
    keys = jax.vmap(lambda i: jr.fold_in(jr.key(7), i))(jnp.arange(len(x)))
    y = y_of(len(x)).get("y")
    vmapped = eqx.filter_jit(lambda x, k: jax.vmap(ll.one)(x, k, y))
    (_, nfe_v), s_v = median_seconds(lambda: vmapped(x, keys), repeats=2)
    (_, nfe_m), s_m = median_seconds(
        lambda: ll(x, key=jr.key(7), return_nfe=True, **y_of(len(x))), repeats=2
    )
    return {
        "batch": len(x),
        "vmap_seconds_per_image": s_v / len(x),
        "per_example_seconds_per_image": s_m / len(x),
        "nfe_mean": float(np.mean(nfe_m)),
        "nfe_max": float(np.max(nfe_m)),
    }


def stability(sde, model, x, argv):
    """One example's value alone, among companions, with another `batch_size`, and on two
    simulated devices (a subprocess): the largest differences in nats."""
    ll = sgm.LogLikelihood(model, sde)
    full = np.asarray(ll(x[:3], key=jr.key(3), **y_of(3)))
    alone = np.asarray(ll(x[:1], key=jr.key(3), **y_of(1)))
    batched = np.asarray(ll(x[:3], key=jr.key(3), batch_size=2, **y_of(3)))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "values.npy"
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
        cmd = [sys.executable, __file__, *argv, "--sections", "values", "--values-out", str(out)]
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        two = np.load(out)
    return {
        "alone_vs_with_companions_nats": float(np.abs(alone[0] - full[0])),
        "batch_size_2_vs_3_nats": float(np.abs(batched - full).max()),
        "two_devices_vs_one_nats": float(np.abs(two - full).max()),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--run-dir", help="a run written by main.py (MNIST or digits)")
    p.add_argument("--data-dir", help="MNIST IDX files (for an MNIST run)")
    p.add_argument("--checkpoint", action="store_true", help="use an unfinished run's checkpoint")
    p.add_argument("--quick", action="store_true", help="2 images, 2 repeats, fewer tolerances")
    p.add_argument("--sections", default="machine,closed_form,field,model,stability,lockstep")
    p.add_argument("--n-images", type=int, default=8)
    p.add_argument("--repeats", type=int, default=4, help="probe keys per image")
    p.add_argument("--exact-images", type=int, default=1)
    p.add_argument("--exact-old", action="store_true", help="also the old exact solve")
    p.add_argument("--out")
    p.add_argument("--values-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    sections = args.sections.split(",")
    if args.quick:
        args.n_images, args.repeats, args.exact_images = 2, 2, 0
    result = {"benchmark": "likelihood_cost", "rtol_atol": 1e-5}
    if "machine" in sections:
        result["machine"] = machine(args.quick)
        print(json.dumps({"machine": result["machine"]}), flush=True)
    if "closed_form" in sections:
        result["closed_form"] = closed_form(args.quick)
    if args.run_dir and {"field", "model", "stability", "values", "lockstep"} & set(sections):
        config, sde, model, shape = load_model(args.run_dir, args.checkpoint)
        NULL_LABEL[0] = sgm._model_checks.class_count(model)  # None: unconditional
        result["run"], result["experiment"] = str(args.run_dir), config.name
        ds = sgm.data.load(
            config.data.name, data_dir=args.data_dir, key=jr.key(config.train.seed + 1)
        )
        n, dim = args.n_images, math.prod(shape)
        images = ds.test_int[:n].astype(np.float32)
        # One dequantization shared by every method; the change of variables as in bits_per_dim.
        u = (images + np.asarray(jr.uniform(jr.key(0), images.shape))) / 256
        x, slope = jax.jvp(ds.scaler, (u,), (np.ones_like(u),))
        log_det = np.log(np.abs(np.asarray(slope))).reshape(n, -1).sum(1)

        def to_bpd(lp):
            lp = np.asarray(lp)
            return -(lp + log_det[: len(lp)] - dim * math.log(256)) / (dim * math.log(2))

        if "field" in sections:
            result["field"] = field(sde, model, x[0], args.quick)
        if "model" in sections:
            result["model"] = model_rows(sde, model, x, to_bpd, args)
        if "values" in sections:  # the two-device worker of `stability`
            ll = sgm.LogLikelihood(model, sde)
            assert jax.local_device_count() == 2, jax.devices()
            np.save(args.values_out, np.asarray(ll(x[:3], key=jr.key(3), **y_of(3))))
            return
        if "stability" in sections:
            argv = [a for a in sys.argv[1:] if a not in ("--quick",)]
            argv = [
                a for i, a in enumerate(argv) if not _is_option(argv, i, ("--sections", "--out"))
            ]
            result["stability"] = stability(sde, model, x, argv)
            print(json.dumps({"stability": result["stability"]}), flush=True)
        if "lockstep" in sections:
            result["lockstep"] = lockstep(sde, model, x)
            print(json.dumps({"lockstep": result["lockstep"]}), flush=True)
    report(result, args.out)


if __name__ == "__main__":
    main()
