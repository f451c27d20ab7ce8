"""Sample quality of a trained image run (MNIST, the 8x8 digits): a Frechet distance in the
feature space of a small classifier of the run's data that this script trains itself (NOT the
Inception FID; the numbers are comparable only with each other, on one data set).

    python benchmarks/sample_quality.py --run-dir runs/mnist_vp/STAMP \
        --data-dir ../shared/data/mnist-subset [--quick] [--out results.json]
    python benchmarks/sample_quality.py --run-dir runs/digits_fm/STAMP --quick

The data are the run's own (`Run.config.load_data`). The classifier is an MLP D-256-32-10
trained for 1500 steps on the training images; its 32-D penultimate activations are the
features (few dimensions, so that a few hundred samples
estimate their covariance: with 128-D features and 64 samples the real-vs-real distance was as
large as that of the samples). For each sampler and step count the script draws `n` samples
(at most the test split's size) from the run's model, by the null label for a class-conditional
model (its unconditional p(x)), and reports the Frechet distance between the Gaussian fits of
their features and of the test images' features, with NFE and seconds. The distance
between two disjoint sets of `n` real images (test against train) is the floor that a finite
`n` allows. Prints JSON.
"""

import argparse
import json
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from _report import report

import sgm
import sgm.experiment
from sgm._model_checks import class_count


class Classifier(eqx.Module):
    layers: list

    def __init__(self, dim: int, key):
        k1, k2, k3 = jr.split(key, 3)
        self.layers = [
            eqx.nn.Linear(dim, 256, key=k1),
            eqx.nn.Linear(256, 32, key=k2),
            eqx.nn.Linear(32, 10, key=k3),
        ]

    def features(self, x):
        h = jax.nn.gelu(self.layers[0](x.reshape(-1)))
        return jax.nn.gelu(self.layers[1](h))

    def __call__(self, x):
        return self.layers[2](self.features(x))


def train_classifier(ds, steps=1500, batch=128):
    model = Classifier(int(np.prod(ds.train.shape[1:])), jr.key(0))
    opt = optax.adam(1e-3)
    state = opt.init(eqx.filter(model, eqx.is_array))
    x, y = jnp.asarray(ds.train), jnp.asarray(ds.train_labels)

    @eqx.filter_jit
    def step(model, state, key):
        idx = jr.choice(key, len(x), (batch,), replace=False)

        def loss(m):
            logits = jax.vmap(m)(x[idx])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y[idx]).mean()

        grads = eqx.filter_grad(loss)(model)
        updates, state = opt.update(grads, state)
        return eqx.apply_updates(model, updates), state

    for k in jr.split(jr.key(1), steps):
        model, state = step(model, state, k)
    logits = jax.vmap(model)(jnp.asarray(ds.test))
    accuracy = float(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(ds.test_labels)))
    return model, accuracy


def frechet_distance(f1, f2) -> float:
    """`|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2)` in float64."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    c1, c2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)

    def sqrtm_psd(c):
        w, v = np.linalg.eigh(c)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    r1 = sqrtm_psd(c1)
    cross = sqrtm_psd(r1 @ c2 @ r1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.trace(cross))


def samplers(sde, quick: bool):
    out = [(f"em-{n}", sgm.EulerMaruyama(steps=n)) for n in ([100] if quick else [100, 500])]
    if not quick:
        out += [
            ("pc-500", sgm.PredictorCorrector(steps=500)),
            ("ode-tsit5", sgm.ProbabilityFlowODE()),
        ]
    if not isinstance(sde, sgm.VESDE):
        out += [
            (f"dpm2-{n}", sgm.DPMSolver(steps=n)) for n in ([10, 20] if quick else [10, 20, 50])
        ]
    out += [(f"unipc3-{n}", sgm.UniPC(steps=n)) for n in ([20] if quick else [10, 20])]
    out += [(f"heun-{n}", sgm.HeunSampler(steps=n)) for n in ([18] if quick else [18, 35])]
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--run-dir", required=True, help="a finished image run written by main.py")
    p.add_argument("--data-dir", help="local data (MNIST IDX files), as main.py's")
    p.add_argument("--quick", action="store_true", help="200 samples, fewer samplers")
    p.add_argument("--n", type=int, default=1000, help="samples per sampler")
    p.add_argument("--out")
    args = p.parse_args()
    run = sgm.experiment.load_run(args.run_dir)
    ds = run.config.load_data(args.data_dir)
    n = min(200 if args.quick else args.n, len(ds.test), len(ds.train))
    classes = class_count(run.model)
    extra = {} if classes is None else {"y": jnp.full(n, classes)}  # the null label
    clf, accuracy = train_classifier(ds)
    feats = jax.jit(jax.vmap(clf.features))
    test_f = feats(jnp.asarray(ds.test))
    floor = frechet_distance(feats(jnp.asarray(ds.train[:n])), test_f[:n])
    print(json.dumps({"classifier_test_accuracy": accuracy, "real_vs_real": floor}), flush=True)
    rows = []
    for name, sampler in samplers(run.sde, args.quick):
        start = time.perf_counter()
        x, nfe = sgm.sample(
            run.model,
            run.sde,
            sampler,
            key=jr.key(3),
            shape=(n, *run.data_shape),
            return_nfe=True,
            **extra,
        )
        x = jax.block_until_ready(x)
        rows.append(
            {
                "sampler": name,
                "nfe": float(nfe.mean()),
                "frechet_distance": frechet_distance(feats(jnp.clip(x, -1, 1)), test_f[:n]),
                "seconds_incl_compile": time.perf_counter() - start,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "benchmark": "sample_quality",
        "metric": "Frechet distance of 32-D features of an MLP classifier of the data (not FID)",
        "run": str(args.run_dir),
        "experiment": run.config.name,
        "n": n,
        "classifier_test_accuracy": accuracy,
        "real_vs_real": floor,
        "rows": rows,
    }
    report(result, args.out)


if __name__ == "__main__":
    main()
