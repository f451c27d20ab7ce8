"""Evaluations of the probability-flow ODE at equal accuracy on images: for one trained run,
the distance of each sampler's samples to the same model's converged ODE solution from the
same prior draws, against NFE.

    python benchmarks/ode_nfe_images.py --run-dir runs/mnist_fm/STAMP [--n 16]
        [--within 0.1,0.03] [--shape 1,28,28] [--out results.json]

The reference is the adaptive Tsit5 solve at rtol = atol = 1e-5 (the `ProbabilityFlowODE`
default). The families swept, all from the same `n` prior draws (`sgm.sample` with one key):
the adaptive solver at rtol = atol 1e-2, 1e-3, 1e-4; Euler with N equal steps in `log sigma`
(the default coordinates) and in `t` on `x` (`ODEVariables(time="t", state="x")`), N = 2-64;
Heun with N equal steps in `log sigma`. The accuracy of a sampler is the root mean square
distance of its samples to the reference's in data units (pixels in [-1, 1]), over pixels and
images. For each threshold in `--within` the script reports, per family, the NFE of the first
setting within it and that NFE interpolated linearly in log NFE (as `nfe_at_accuracy.py`).
Straighter paths (flow matching) should need fewer evaluations in `t`. Prints JSON.
"""

import argparse
import json
import time

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
from _report import report
from nfe_at_accuracy import nfe_within

import sgm
import sgm.experiment
from sgm._model_checks import class_count

STEPS = [2, 4, 8, 16, 32, 64]
IN_T = sgm.ODEVariables(time="t", state="x")


def families() -> dict[str, list[tuple[str, sgm.ProbabilityFlowODE]]]:
    return {
        "adaptive": [
            (f"tol_{tol:g}", sgm.ProbabilityFlowODE(rtol=tol, atol=tol))
            for tol in (1e-2, 1e-3, 1e-4)
        ],
        "euler_log_sigma": [
            (f"euler_{n}", sgm.ProbabilityFlowODE(solver=diffrax.Euler(), steps=n)) for n in STEPS
        ],
        "euler_t": [
            (
                f"euler_t_{n}",
                sgm.ProbabilityFlowODE(solver=diffrax.Euler(), steps=n, variables=IN_T),
            )
            for n in STEPS
        ],
        "heun_log_sigma": [
            (f"heun_{n}", sgm.ProbabilityFlowODE(solver=diffrax.Heun(), steps=n))
            for n in STEPS[:-1]
        ],
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--run-dir", required=True, help="a finished run written by main.py")
    p.add_argument("--n", type=int, default=16, help="prior draws (images)")
    p.add_argument("--shape", help="the data shape, comma-separated (default: the run's)")
    p.add_argument("--within", default="0.1,0.03", help="RMS distances to the reference")
    p.add_argument("--out")
    args = p.parse_args()
    within = [float(w) for w in args.within.split(",")]
    run = sgm.experiment.load_run(args.run_dir)
    example = run.data_shape if args.shape is None else [int(s) for s in args.shape.split(",")]
    shape = (args.n, *example)
    classes = class_count(run.model)
    extra = {} if classes is None else {"y": jnp.full(args.n, classes)}  # the null label

    def draw(sampler):
        start = time.perf_counter()
        x, nfe = sgm.sample(
            run.model, run.sde, sampler, key=jr.key(5), shape=shape, return_nfe=True, **extra
        )
        x = jax.block_until_ready(x)
        return x, float(nfe.mean()), time.perf_counter() - start

    ref, ref_nfe, ref_s = draw(sgm.ProbabilityFlowODE())
    print(json.dumps({"reference_nfe": ref_nfe, "seconds": ref_s}), flush=True)
    rows, needs = {}, {}
    for fam, members in families().items():
        curve = []
        for name, sampler in members:
            x, nfe, s = draw(sampler)
            rms = float(jnp.sqrt(jnp.mean((x - ref) ** 2)))
            rows[name] = {"family": fam, "nfe": nfe, "rms_to_reference": rms, "seconds": s}
            print(json.dumps({name: rows[name]}), flush=True)
            curve.append((nfe, rms))
        curve.sort()
        for w in within:
            first, interpolated = nfe_within(curve, 0.0, w)
            needs[f"{fam}@{w:g}"] = {"first": first, "interpolated": interpolated}
    result = {
        "benchmark": "ode_nfe_images",
        "run": str(args.run_dir),
        "experiment": run.config.name,
        "n": args.n,
        "reference": {"sampler": "adaptive Tsit5, rtol = atol = 1e-5", "nfe": ref_nfe},
        "metric": "RMS distance to the reference samples, data units",
        "rows": rows,
        "nfe_within": needs,
    }
    report(result, args.out)


if __name__ == "__main__":
    main()
