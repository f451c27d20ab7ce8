"""Sampler accuracy against NFE with exact closed-form scores.

    python benchmarks/sampler_accuracy.py [--quick] [--sdes vp,rf] [--samplers heun,ode-heun]
        [--out results.json]

Targets: a 2-D mixture of eight Gaussians (radius 1.5, std 0.1) and a 16-D mixture of four
Gaussians. For each SDE (VP, VE, subVP; `rf`, rectified flow, on request), sampler and step
count it reports the NFE, the mean log-density of the samples under the true density minus the
data's own (0 is perfect; negative = samples in low-density places), and the largest error of
a mode weight; then, per target and SDE, which samplers with at most 20 NFE are as accurate as
Euler-Maruyama with 1000 steps (`goal`).
Prints JSON.
"""

import argparse
import json
import math
import time

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
from _report import report

import sgm


def targets():
    angles = jnp.arange(8) * math.pi / 4
    eight = sgm.GaussianMixture(
        jnp.ones(8), 1.5 * jnp.stack([jnp.cos(angles), jnp.sin(angles)], 1), jnp.full(8, 0.01)
    )
    means = jnp.concatenate([jnp.eye(4), jnp.zeros((4, 12))], axis=1) * 1.5
    high = sgm.GaussianMixture(jnp.array([0.1, 0.2, 0.3, 0.4]), means, jnp.full(4, 0.09))
    return {"eight_gaussians_2d": eight, "four_gaussians_16d": high}


def samplers(quick: bool):
    em = [100, 1000] if quick else [20, 100, 300, 1000]
    few = [10, 19] if quick else [5, 10, 15, 19, 30, 50]
    out = [(f"em-{n}", sgm.EulerMaruyama(steps=n)) for n in em]
    out += [(f"pc-{n}", sgm.PredictorCorrector(steps=n)) for n in ([500] if quick else [100, 500])]
    out += [("ode-tsit5", sgm.ProbabilityFlowODE())]
    out += [(f"dpm2-{n}", sgm.DPMSolver(steps=n)) for n in few]
    out += [(f"unipc3-{n}", sgm.UniPC(steps=n)) for n in ([10, 20] if quick else [10, 15, 20, 30])]
    out += [(f"heun-{n}", sgm.HeunSampler(steps=n)) for n in ([10] if quick else [5, 10, 18])]
    # Heun steps of the probability-flow ODE in its default coordinates (log sigma, the state
    # normalised by the std of x_t) down to sigma = 0.01: 2 n + 1 NFE.
    out += [
        (f"ode-heun-{n}", sgm.ProbabilityFlowODE(solver=diffrax.Heun(), steps=n, sigma_end=0.01))
        for n in ([9] if quick else [5, 9, 17])
    ]
    out += [
        (f"sra1-{n}", sgm.ReverseSDESolver(solver=diffrax.SRA1(), steps=n))
        for n in ([50] if quick else [20, 50, 100])
    ]
    return out


def goal(rows, max_nfe: int = 20):
    """Issue 6's goal per target and SDE: the samplers with at most `max_nfe` NFE as accurate as
    Euler-Maruyama with 1000 steps, that is `|gap| <= |gap_EM| + 2 stderr` for the mean
    log-density and a mode-weight error at most 0.01 above Euler-Maruyama's."""
    out = []
    for target, sde in dict.fromkeys((r["target"], r["sde"]) for r in rows):
        cell = [r for r in rows if (r["target"], r["sde"]) == (target, sde)]
        em = next((r for r in cell if r["sampler"] == "em-1000"), None)
        if em is None:
            continue
        met = [
            r["sampler"]
            for r in cell
            if r["nfe"] <= max_nfe
            and abs(r["delta_mean_log_density"])
            <= abs(em["delta_mean_log_density"]) + 2 * r["stderr"]
            and r["max_weight_error"] <= em["max_weight_error"] + 0.01
        ]
        out.append(
            {"target": target, "sde": sde, "em_1000": em["delta_mean_log_density"], "met_by": met}
        )
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--n", type=int, default=None, help="samples per run")
    p.add_argument("--sdes", help="comma-separated subset of vp,ve,subvp,rf (default: vp,ve,subvp)")
    p.add_argument("--samplers", help="comma-separated name prefixes (em-, heun-, ...) to run")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    n = args.n or (2000 if args.quick else 10_000)
    every = {
        "vp": sgm.VPSDE(),
        "ve": sgm.VESDE(sigma_max=5.0),
        "subvp": sgm.SubVPSDE(),
        "rf": sgm.RectifiedFlow(),
    }
    names = args.sdes.split(",") if args.sdes else ["vp", "ve"] + ([] if args.quick else ["subvp"])
    if unknown := set(names) - set(every):
        p.error(f"--sdes: unknown {sorted(unknown)}; choose from {sorted(every)}")
    sdes = {k: every[k] for k in names}
    chosen = samplers(args.quick)
    if args.samplers:
        prefixes = tuple(args.samplers.split(","))
        chosen = [(k, v) for k, v in chosen if k.startswith(prefixes)]
        if not chosen:
            p.error(
                f"--samplers {args.samplers!r} matches none of "
                f"{[k for k, _ in samplers(args.quick)]}"
            )
    rows = []
    for tname, mix in targets().items():
        d = mix.components.mean.shape[-1]
        data = mix.sample(jr.key(1), 50_000)
        data_lp = float(jax.vmap(mix.log_prob)(data).mean())
        for sname, sde in sdes.items():
            for name, sampler in chosen:
                start = time.perf_counter()
                x, nfe = sgm.sample(
                    mix.score(sde), sde, sampler, key=jr.key(0), shape=(n, d), return_nfe=True
                )
                lp = jax.vmap(mix.log_prob)(x)
                w = jnp.bincount(jax.vmap(mix.assign)(x), length=mix.weights.size) / n
                rows.append(
                    {
                        "target": tname,
                        "sde": sname,
                        "sampler": name,
                        "nfe": float(nfe.mean()),
                        "delta_mean_log_density": float(lp.mean()) - data_lp,
                        "stderr": float(lp.std()) / math.sqrt(n),
                        "max_weight_error": float(jnp.abs(w - mix.weights).max()),
                        "seconds_incl_compile": time.perf_counter() - start,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    result = {
        "benchmark": "sampler_accuracy",
        "n": n,
        "quick": args.quick,
        "rows": rows,
        "goal_20_nfe": goal(rows),
    }
    report(result, args.out)


if __name__ == "__main__":
    main()
