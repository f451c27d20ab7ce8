"""Training quality: learning curves (quality against steps and against seconds) of training
configurations, judged on targets whose density is known exactly, and on MNIST by test bits/dim.

    python benchmarks/train_quality.py [--quick] [--target eight_2d] [--configs a,b] [--out F]
        [--nfe-sweep] [--save-models DIR]

Targets:

- `eight_2d`: eight Gaussians on a circle of radius 2, std 0.2, in 2-D.
- `mix_16d`: four Gaussians in 16-D (means 1.5 e_k, std 0.3, weights 0.1-0.4).
- `mnist`: the MNIST subset (`--data-dir`), test bits/dim; `digits`: the 8x8 digits.

Mixtures are trained under VP(0.1, 20) (the `fm*` configurations under `RectifiedFlow()`,
by `FlowMatchingLoss`) with batch 256 and judged at each evaluation step by
the exact density of samples from Euler-Maruyama with 1000 steps and from the adaptive
probability-flow ODE: the mean log-density of the samples minus the data's own (`gap`, 0 is
perfect), the fraction of samples off the modes (further than 3 component standard deviations
from every mean in 2-D; for the 16-D target beyond the chi-square 0.999 quantile), the largest
mode-weight error, and far outliers (samples more than 20 nats below the data's lowest 1%
log-density). `reference` is the plain-JAX trainer of `_reference.py`; the other configurations
go through `sgm.train` (see `CONFIGS`). Training seconds include compilation; the evaluation is
not timed. Prints JSON.

`--nfe-sweep` adds, at the last evaluation step of a mixture, the accuracy of the
probability-flow ODE against its evaluations: adaptive Tsit5 at `rtol = atol` in 1e-2, 1e-3,
1e-4 (`ode_tol_*`; the 1e-5 default is `ode`), and fixed Euler steps, N in 2-64, equal in the
log noise level (`euler_*`, the sampler's default coordinates) and equal in `t` on `x` itself
(`euler_t_*`, the coordinates in which a coupling straightens the paths, Liu et al. 2023;
Tong et al. 2024). `--save-models DIR` writes each final EMA model to
`DIR/{target}_{config}.eqx` (`eqx.tree_serialise_leaves`; `figures.py --fm-models DIR` draws
their paths).
"""

import argparse
import dataclasses
import json
import math
import tempfile
import time
import warnings
from pathlib import Path

import _reference as ref
import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _configs import CONFIGS, build
from _report import report

import sgm

FAR_NATS = 20.0
SWEEP_TOLS = (1e-2, 1e-3, 1e-4)
SWEEP_STEPS = (2, 4, 8, 16, 32, 64)


def sweep_samplers() -> dict:
    """The samplers of `--nfe-sweep`: adaptive tolerances and fixed Euler steps."""
    out = {f"ode_tol_{tol:g}": sgm.ProbabilityFlowODE(rtol=tol, atol=tol) for tol in SWEEP_TOLS}
    in_t = sgm.ODEVariables(time="t", state="x")
    for n in SWEEP_STEPS:
        out[f"euler_{n}"] = sgm.ProbabilityFlowODE(solver=diffrax.Euler(), steps=n)
        out[f"euler_t_{n}"] = sgm.ProbabilityFlowODE(
            solver=diffrax.Euler(), steps=n, variables=in_t
        )
    return out


def mixture(name: str) -> sgm.GaussianMixture:
    if name == "eight_2d":
        angles = jnp.arange(8) * math.pi / 4
        means = 2.0 * jnp.stack([jnp.cos(angles), jnp.sin(angles)], 1)
        return sgm.GaussianMixture(jnp.ones(8), means, jnp.full(8, 0.2**2))
    means = jnp.concatenate([jnp.eye(4), jnp.zeros((4, 12))], axis=1) * 1.5
    return sgm.GaussianMixture(jnp.array([0.1, 0.2, 0.3, 0.4]), means, jnp.full(4, 0.3**2))


def off_mode_radius2(d: int) -> float:
    """Squared Mahalanobis radius beyond which a sample counts as off the modes: 3 standard
    deviations in 2-D, the chi-square(d) 0.999 quantile otherwise (Wilson-Hilferty)."""
    if d == 2:
        return 9.0
    z = 3.090232  # the standard normal 0.999 quantile
    return d * (1 - 2 / (9 * d) + z * math.sqrt(2 / (9 * d))) ** 3


def judge_mixture(mix, x, data_lp, floor):
    """Quality of samples `x` under the exact mixture `mix`."""
    lp = jax.vmap(mix.log_prob)(x)
    ok = jnp.isfinite(lp) & jnp.all(jnp.isfinite(x), axis=1)
    lp = jnp.where(ok, lp, -jnp.inf)
    d = x.shape[1]
    var = mix.components.eigvals[:, 0]  # isotropic components
    r2 = jnp.min(jnp.sum((x[:, None] - mix.components.mean[None]) ** 2, -1) / var, 1)
    w = jnp.bincount(jax.vmap(mix.assign)(x), length=mix.weights.size) / len(x)
    finite_lp = jnp.where(ok, lp, jnp.nan)
    return {
        "gap": float(jnp.nanmean(finite_lp) - data_lp),
        "gap_stderr": float(jnp.nanstd(finite_lp) / math.sqrt(len(x))),
        "off_mode": float(jnp.mean(~ok | (r2 > off_mode_radius2(d)))),
        "max_weight_error": float(jnp.abs(w - mix.weights).max()),
        "far_outliers": int(jnp.sum(lp < floor - FAR_NATS)),
        "worst_log_density_below_floor": float(floor - jnp.min(lp)),
        "non_finite": int(jnp.sum(~ok)),
    }


def evaluate_mixture(score, sde, mix, data, n, key, samplers):
    data_lp_all = jax.vmap(mix.log_prob)(data)
    data_lp = float(data_lp_all.mean())
    floor = float(jnp.quantile(data_lp_all, 0.01))
    out = {}
    for name, sampler in samplers.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the sweep's coarse Euler grids are warned about
            x, nfe = sgm.sample(
                score, sde, sampler, key=key, shape=(n, data.shape[1]), return_nfe=True
            )
        out[name] = {"nfe": float(nfe.mean()), **judge_mixture(mix, x, data_lp, floor)}
    return out


def evaluate_images(model, sde, ds, n, key, t0s):
    """Test bits/dim of the first `n` test images (one Hutchinson probe, one uniform
    dequantization, the same for every model), integrating the probability-flow ODE from each
    time in `t0s`; and with the model's variational dequantizer when it has one. A model with
    a learned schedule is evaluated under its own SDE."""
    out = {}
    sde = model.sde if isinstance(model, sgm.ScoreModel) else sde
    for t0 in t0s:
        sde_t = dataclasses.replace(sde, t0=t0)
        m = dataclasses.replace(model, sde=sde_t) if isinstance(model, sgm.ScoreModel) else model
        bpd = sgm.bits_per_dim(
            m, sde_t, ds.test_int[:n], key=key, batch_size=min(n, 16), progress=False
        )
        tag = "" if t0 == sde.t0 else f"_t0_{t0:g}"
        out[f"bits_per_dim{tag}"] = float(bpd.mean())
        out[f"stderr{tag}"] = float(bpd.std() / math.sqrt(n))
        if isinstance(getattr(model, "dequantizer", None), sgm.VariationalDequantizer):
            bpd = sgm.dequantized_bits_per_dim(
                m,
                sde_t,
                ds.test_int[:n],
                model.dequantizer,
                key=key,
                batch_size=min(n, 16),
                progress=False,
            )
            out[f"variational_bits_per_dim{tag}"] = float(bpd.mean())
    return out


def curve_reference(sde, train_x, eval_steps, evaluate, batch, key):
    """Learning curve of the plain-JAX reference trainer."""
    params = ref.init(jr.fold_in(key, 10), train_x.shape[1])
    opt, step = ref.make_step(sde)
    state = (params, params, opt.init(params))
    points, seconds, done = [], 0.0, 0
    x = jnp.asarray(train_x)
    for target in eval_steps:
        start = time.perf_counter()
        for s in range(done, target):
            k = jr.fold_in(key, s)
            idx = jr.randint(k, (batch,), 0, len(x))
            state, value = step(state, x[idx], jr.fold_in(k, 1))
        jax.block_until_ready(value)
        seconds += time.perf_counter() - start
        done = target
        points.append(
            {
                "step": done,
                "train_seconds": seconds,
                "loss": float(value),
                **evaluate(ref.score(state[1], sde)),
            }
        )
        print(json.dumps({"config": "reference", **points[-1]}), flush=True)
    return points, sum(a.size for a in jax.tree.leaves(params))


def curve_sgm(
    model, sde, data, eval_steps, evaluate, batch, key, *, loss, optimizer, ema, name="", save=None
):
    """Learning curve of `sgm.train`: one run, resumed from its checkpoint at each
    evaluation step so that the curve is that of a single run; the final EMA model is written
    to `save` when given."""
    points, seconds = [], 0.0
    with tempfile.TemporaryDirectory() as ckpt:
        for i, target in enumerate(eval_steps):
            start = time.perf_counter()
            ema_model, hist = sgm.train(
                model,
                sde,
                data,
                optimizer,
                steps=target,
                key=key,
                batch_size=batch,
                loss=loss,
                ema_decay=ema,
                checkpoints=sgm.Checkpoints(ckpt, every=10**9, resume=i > 0),
                monitor=sgm.Monitor(every=min(100, target), progress=False, history=True),
            )
            seconds += time.perf_counter() - start
            points.append(
                {
                    "step": target,
                    "train_seconds": seconds,
                    "loss": hist["loss"][-1],
                    **evaluate(ema_model, i == len(eval_steps) - 1),
                }
            )
            print(json.dumps({"config": name, **points[-1]}), flush=True)
    if save is not None:
        eqx.tree_serialise_leaves(save, ema_model)
    return points, sgm.nets.param_count(model)


def run_target(args, target):
    sde = sgm.VPSDE(beta_min=0.1, beta_max=20.0)
    if target in ("eight_2d", "mix_16d"):
        mix = mixture(target)
        train_x = np.asarray(mix.sample(jr.key(0), 65_536))
        data = mix.sample(jr.key(1), 50_000)
        samplers = {"em1000": sgm.EulerMaruyama(steps=1000), "ode": sgm.ProbabilityFlowODE()}
        sweep = sweep_samplers() if args.nfe_sweep else {}

        def evaluate(score, final=False):
            # a flow-matching configuration samples under its own path (`model.sde`)
            own = score.sde if isinstance(score, sgm.ScoreModel) else sde
            chosen = {**samplers, **sweep} if final else samplers
            return evaluate_mixture(score, own, mix, data, args.n, jr.key(2), chosen)

        shape, batch = train_x.shape[1:], 256
        dataset = train_x
    else:
        ds = sgm.data.load(target, data_dir=args.data_dir)
        shape, batch, dataset, train_x = ds.data_shape, args.batch_size, ds, ds.train

        t0s = [sde.t0] + [float(t) for t in args.eval_t0.split(",") if t]

        def evaluate(model, final=False):
            return evaluate_images(model, sde, ds, args.n_images, jr.key(2), t0s)

    results = {}
    if args.save_models is not None:
        save_dir = Path(args.save_models)
        save_dir.mkdir(parents=True, exist_ok=True)
    for name in args.configs:
        start = time.perf_counter()
        if name == "reference":
            if len(shape) != 1:
                continue
            points, params = curve_reference(
                sde, train_x, args.eval_steps, evaluate, batch, jr.key(3 + 100 * args.seed)
            )
        else:
            model, loss, optimizer, ema = build(
                name, sde, shape, args.eval_steps[-1], jr.key(4 + 100 * args.seed)
            )
            points, params = curve_sgm(
                model,
                model.sde,
                dataset,
                args.eval_steps,
                evaluate,
                batch,
                jr.key(3 + 100 * args.seed),
                loss=loss,
                optimizer=optimizer,
                ema=ema,
                name=name,
                save=None if args.save_models is None else save_dir / f"{target}_{name}.eqx",
            )
        results[name] = {
            "params": params,
            "points": points,
            "total_seconds": time.perf_counter() - start,
        }
    return results


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="2-D target, 3000 steps, 1024 samples")
    p.add_argument("--targets", default="eight_2d,mix_16d")
    p.add_argument("--configs", default="reference,default")
    p.add_argument("--eval-steps", default="1000,2500,5000,10000")
    p.add_argument("--n", type=int, default=4096, help="samples per evaluation (mixtures)")
    p.add_argument("--n-images", type=int, default=32, help="test images (bits/dim)")
    p.add_argument("--batch-size", type=int, default=64, help="images only")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--eval-t0", default="", help="images: also bits/dim from these start times")
    p.add_argument("--seed", type=int, default=0, help="offsets the training and init keys")
    p.add_argument("--nfe-sweep", action="store_true", help="mixtures: NFE against accuracy")
    p.add_argument("--save-models", help="write the final EMA models to this directory")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    if args.quick:
        args.targets, args.eval_steps, args.n = "eight_2d", "1000,3000", 1024
    args.configs = args.configs.split(",")
    unknown = [c for c in args.configs if c != "reference" and c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configs {unknown}; choose from reference, {sorted(CONFIGS)}")
    args.eval_steps = [int(s) for s in args.eval_steps.split(",")]
    out = {
        "benchmark": "train_quality",
        "quick": args.quick,
        "n": args.n,
        "eval_steps": args.eval_steps,
        "nfe_sweep": args.nfe_sweep,
        "jax": jax.__version__,
        "targets": {},
    }
    for target in args.targets.split(","):
        out["targets"][target] = run_target(args, target)
    report(out, args.out)


if __name__ == "__main__":
    main()
