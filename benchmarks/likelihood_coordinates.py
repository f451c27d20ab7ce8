"""NFE, seconds and error per image of the likelihood solve in several coordinates of the
probability-flow ODE, on a trained MNIST run. The error is against a tight solve (rtol = atol =
1e-7, Dopri8) with the same Hutchinson probe and dequantization; that solve's own uncertainty is
the difference of two tight solves in different coordinates (`ref_agreement_nats`).

    python benchmarks/likelihood_coordinates.py --run-dir RUN --data-dir MNIST_IDX \
        [--n-images 4] [--out F]

Seconds: one timed solve after a compiling one (say the machine's load with them).
"""

import argparse
import time

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
from _report import report

import sgm
import sgm.experiment

CHOICES = {
    "t/x rms (before issue 16)": dict(
        variables=sgm.ODEVariables(time="t", state="x"), error_norm="rms"
    ),
    "sigma/normalised (the default)": dict(variables=sgm.ODEVariables(time="sigma")),
    "log_sigma/normalised": dict(variables=sgm.ODEVariables(time="log_sigma")),
    "log_sigma/scaled": dict(variables=sgm.ODEVariables(time="log_sigma", state="scaled")),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--run-dir", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--n-images", type=int, default=4)
    p.add_argument("--out")
    args = p.parse_args()
    run, ds = sgm.experiment.load_run(args.run_dir), sgm.data.mnist(args.data_dir)
    n = args.n_images
    k = jnp.asarray(ds.test_int[:n], jnp.float32)
    x = ds.scaler((k + jr.uniform(jr.key(0), k.shape)) / 256.0)

    def solve(**opts):
        return sgm.log_likelihood(run.model, run.sde, x, key=jr.key(1), return_nfe=True, **opts)

    tight = dict(rtol=1e-7, atol=1e-7, solver=diffrax.Dopri8(), max_steps=20_000)
    ref, _ = solve(variables=sgm.ODEVariables(time="log_sigma"), **tight)
    ref_t, _ = solve(variables=sgm.ODEVariables(time="t", state="x"), **tight)
    out = {
        "benchmark": "likelihood_coordinates",
        "run": args.run_dir,
        "n_images": n,
        "ref_agreement_nats": float(jnp.abs(ref - ref_t).max()),
    }
    for name, opts in CHOICES.items():
        jax.block_until_ready(solve(**opts))  # compiles
        start = time.perf_counter()
        lp, nfe = jax.block_until_ready(solve(**opts))
        seconds = time.perf_counter() - start
        err = jnp.abs(lp - ref)
        out[name] = {
            "nfe": float(nfe.mean()),
            "s_per_image": seconds / n,
            "max_err_nats": float(err.max()),
            "mean_abs_err_nats": float(err.mean()),
        }
        print(name, out[name], flush=True)
    report(out, args.out)


if __name__ == "__main__":
    main()
