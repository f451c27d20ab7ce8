"""Where flow matching's over-concentration on the 16-D mixture comes from: the denoiser error
of a DSM model (`default`, VP SDE) and a flow-matching model (`fm`, `RectifiedFlow`, velocity
prediction) at equal noise levels, against the exact denoiser of the mixture, and the spread of
their samples.

    python benchmarks/fm_denoiser_error.py [--steps 3000] [--configs default,fm]
        [--n 4096] [--n-samples 4000] [--splice 0.03,0.3,3] [--models DIR] [--out F]

Both models are trained as `train_quality.py --targets mix_16d` trains them (`_configs.build`,
the same 65,536 training points, batch 256, the same keys), for `--steps` steps (one run, no
intermediate evaluations). Every linear path has `x_t / m = x_0 + sigma eps` at the noise level
`sigma = s / m`, so Tweedie's denoiser `D(x; sigma) = E[x_0 | x_t] = (x + s^2 score) / m` is a
common currency: at 12 log-spaced `sigma` in [0.01, 100] the same draws `x_0` (from the
mixture) and `eps` give `x_t` under each model's own SDE at the time of that `sigma`, and
`D_model - D_exact` (the exact denoiser from `GaussianMixture.score`) is reported per dimension,
split into the 4 mode coordinates (0-3) and the 12 pure-Gaussian ones (4-15): `mse` (mean
squared error), `bias2` (squared mean error, the systematic part), and `slope`, the regression
coefficient of the error on `r = D_exact - mu_k` (`mu_k` the mean of the component that drew
`x_0`): negative means the model's denoiser pulls towards the mode centres more than the exact
one (it shrinks), positive that it pushes away. `posterior_mse` is the exact denoiser's own
error `E|D_exact - x_0|^2` per dimension, the scale of the problem at that `sigma`.

Samples (`--n-samples`, the adaptive probability-flow ODE and Euler-Maruyama with 1000 steps,
and the exact score under each SDE as a control): the gap of `train_quality.judge_mixture`,
the per-coordinate variance relative to the exact mixture's (the marginal), and the
within-component variance (residual from the nearest component's mean, over 0.3^2), for the
mode and the Gaussian coordinates separately. `--splice`: for the flow-matching model(s), the
ODE and EM gaps when the exact score replaces the model below (`exact_below`) or above
(`exact_above`) each noise level `sigma*`: which noise levels the gap comes from.
`--models DIR` keeps the trained models (`{config}_{steps}.eqx`) and reloads them.
Prints JSON.
"""

import argparse
import math
import time
import warnings
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _configs import CONFIGS, build
from _report import report
from train_quality import judge_mixture, mixture

import sgm

GROUPS = {"mode": slice(0, 4), "gauss": slice(4, 16)}
STD = 0.3


class Spliced(eqx.Module):
    """The exact score where `below` says (below `sigma*`, or above it), the model elsewhere."""

    model: sgm.ScoreModel
    exact: sgm.ClosedFormScore
    sigma_star: float
    exact_below: bool = eqx.field(static=True)

    def __call__(self, t, x, **kwargs):
        m, s = self.model.sde.marginal(t)
        low = s / m < self.sigma_star
        use_exact = low if self.exact_below else ~low
        return jnp.where(use_exact, self.exact(t, x), self.model(t, x))


def train(name, steps, train_x, models_dir):
    sde = sgm.VPSDE(beta_min=0.1, beta_max=20.0)
    model, loss, optimizer, ema = build(name, sde, train_x.shape[1:], steps, jr.key(4))
    path = None if models_dir is None else Path(models_dir) / f"{name}_{steps}.eqx"
    if path is not None and path.exists():
        return eqx.tree_deserialise_leaves(path, model), {"loaded": str(path)}
    start = time.perf_counter()
    ema_model, hist = sgm.train(
        model,
        model.sde,
        train_x,
        optimizer,
        steps=steps,
        key=jr.key(3),
        batch_size=256,
        loss=loss,
        ema_decay=ema,
        monitor=sgm.Monitor(every=100, progress=False, history=True),
    )
    info = {"train_seconds": time.perf_counter() - start, "loss": hist["loss"][-1]}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        eqx.tree_serialise_leaves(path, ema_model)
    return ema_model, info


def denoiser_errors(models, mix, sigmas, n, key):
    k1, k2, k3 = jr.split(key, 3)
    comp = jr.categorical(k1, jnp.log(mix.weights), shape=(n,))
    mu = mix.components.mean[comp]
    x0 = mu + STD * jr.normal(k2, (n, mu.shape[1]))
    eps = jr.normal(k3, x0.shape)
    out = {name: [] for name in models}
    for sigma in sigmas:
        for name, model in models.items():
            sde = model.sde
            t = sde.time_at_log_snr(-2 * math.log(sigma))
            m, s = sde.marginal(t)
            xt = m * x0 + s * eps
            exact = mix.score(sde)
            d_model = jax.vmap(sde.denoise, (None, None, 0))(model, t, xt)
            d_exact = jax.vmap(sde.denoise, (None, None, 0))(exact, t, xt)
            err, r = d_model - d_exact, d_exact - mu
            row = {"sigma": float(sigma), "t": float(t), "sigma_at_t": float(s / m)}
            for g, sl in GROUPS.items():
                e, rr = err[:, sl], r[:, sl]
                row[g] = {
                    "mse": float(jnp.mean(e**2)),
                    "bias2": float(jnp.mean(jnp.mean(e, 0) ** 2)),
                    "slope": float(jnp.sum(e * rr) / jnp.sum(rr**2)),
                    "posterior_mse": float(jnp.mean((d_exact[:, sl] - x0[:, sl]) ** 2)),
                }
            out[name].append(row)
    return out


def spread(x, mix, data_var):
    ok = jnp.all(jnp.isfinite(x), axis=1)
    x = x[ok]
    near = mix.components.mean[jax.vmap(mix.assign)(x)]
    var, within = jnp.var(x, 0), jnp.mean((x - near) ** 2, 0) / STD**2
    return {
        g: {
            "var_ratio": float(jnp.mean(var[sl] / data_var[sl])),
            "within_var_ratio": float(jnp.mean(within[sl])),
        }
        for g, sl in GROUPS.items()
    }


def judge(score, sde, mix, data, data_lp, floor, n, samplers, data_var):
    out = {}
    for name, sampler in samplers.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x, nfe = sgm.sample(
                score, sde, sampler, key=jr.key(2), shape=(n, data.shape[1]), return_nfe=True
            )
        out[name] = {
            "nfe": float(nfe.mean()),
            **judge_mixture(mix, x, data_lp, floor),
            **spread(x, mix, data_var),
            "seconds": time.perf_counter() - start,
        }
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--configs", default="default,fm")
    p.add_argument("--n", type=int, default=4096, help="draws per noise level (denoiser)")
    p.add_argument("--n-samples", type=int, default=4000)
    p.add_argument("--splice", default="0.03,0.3,3", help="sigma* of the spliced scores")
    p.add_argument("--no-em", action="store_true", help="skip Euler-Maruyama (ODE only)")
    p.add_argument("--models", help="keep and reload the trained models here")
    p.add_argument("--out")
    args = p.parse_args()
    configs = args.configs.split(",")
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configs {unknown}")

    mix = mixture("mix_16d")
    train_x = np.asarray(mix.sample(jr.key(0), 65_536))
    data = mix.sample(jr.key(1), 50_000)
    data_lp_all = jax.vmap(mix.log_prob)(data)
    data_lp, floor = float(data_lp_all.mean()), float(jnp.quantile(data_lp_all, 0.01))
    data_var = jnp.var(data, 0)
    samplers = {"ode": sgm.ProbabilityFlowODE()}
    if not args.no_em:
        samplers["em1000"] = sgm.EulerMaruyama(steps=1000)
    sigmas = np.logspace(-2, 2, 12)

    out = {
        "benchmark": "fm_denoiser_error",
        "target": "mix_16d",
        "steps": args.steps,
        "n": args.n,
        "n_samples": args.n_samples,
        "sigmas": sigmas.tolist(),
        "jax": jax.__version__,
        "train": {},
    }
    models = {}
    for name in configs:
        models[name], out["train"][name] = train(name, args.steps, train_x, args.models)
        print(name, out["train"][name], flush=True)

    out["denoiser"] = denoiser_errors(models, mix, sigmas, args.n, jr.key(5))
    print("denoiser done", flush=True)

    out["samples"] = {}
    rf = sgm.RectifiedFlow()
    vp = sgm.VPSDE(beta_min=0.1, beta_max=20.0)
    for name, sde in (("exact_vp", vp), ("exact_rf", rf)):
        out["samples"][name] = judge(
            mix.score(sde), sde, mix, data, data_lp, floor, args.n_samples, samplers, data_var
        )
        print(name, out["samples"][name], flush=True)
    for name, model in models.items():
        out["samples"][name] = judge(
            model, model.sde, mix, data, data_lp, floor, args.n_samples, samplers, data_var
        )
        print(name, out["samples"][name], flush=True)

    out["splice"] = {}
    stars = [float(s) for s in args.splice.split(",") if s]
    for name, model in models.items():
        if not isinstance(model.preconditioning, sgm.VelocityPrediction):
            continue
        exact = mix.score(model.sde)
        rows = []
        for star in stars:
            for below in (True, False):
                score = Spliced(model, exact, star, below)
                res = judge(
                    score, model.sde, mix, data, data_lp, floor, args.n_samples, samplers, data_var
                )
                rows.append({"sigma_star": star, "exact_below": below, **res})
                print(name, rows[-1], flush=True)
        out["splice"][name] = rows
    report(out, args.out)


if __name__ == "__main__":
    main()
