"""Makes the README's figures in figs/.

    python benchmarks/figures.py --digits-run runs/digits_vp/STAMP --mnist-run runs/mnist_ve/STAMP \
        --ou-theta-run runs/ou_theta_vp/STAMP --digits-sr-run runs/digits_sr_vp/STAMP \
        --fm-models /tmp/models

Closed-form figures (2-D samplers, SDE marginals, likelihood check) are computed here; sample
grids of trained models are copied from the given run directories, which `main.py` wrote; the
probability-flow paths of `figs/fm_paths.png` are drawn from the 2-D models that
`train_quality.py --save-models DIR` wrote.
"""

import argparse
import math
import shutil
import warnings
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _configs import build  # noqa: E402

import sgm  # noqa: E402
import sgm.experiment  # noqa: E402

FIGS = Path(__file__).resolve().parents[1] / "figs"


def eight_gaussians():
    angles = jnp.arange(8) * math.pi / 4
    centres = 1.5 * jnp.stack([jnp.cos(angles), jnp.sin(angles)], 1)
    return sgm.GaussianMixture(jnp.ones(8), centres, jnp.full(8, 0.01))


def toy_samplers():
    mix, sde = eight_gaussians(), sgm.VPSDE()
    panels = [
        ("data", None),
        ("Euler-Maruyama, 1000 steps", sgm.EulerMaruyama()),
        ("predictor-corrector, 1000", sgm.PredictorCorrector()),
        ("probability-flow ODE (Tsit5)", sgm.ProbabilityFlowODE()),
        ("DPM-Solver++ 2M, 19 steps", sgm.DPMSolver(steps=19)),
        ("Heun (EDM), 10 levels", sgm.HeunSampler(steps=10)),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2))
    for ax, (title, sampler) in zip(axes, panels, strict=True):
        if sampler is None:
            x, nfe = mix.sample(jr.key(1), 2000), None
        else:
            x, nfe = sgm.sample(
                mix.score(sde), sde, sampler, key=jr.key(0), shape=(2000, 2), return_nfe=True
            )
        ax.scatter(x[:, 0], x[:, 1], s=1)
        ax.set_xlim(-2.3, 2.3)
        ax.set_ylim(-2.3, 2.3)
        ax.set_aspect("equal")
        ax.set_title(title + ("" if nfe is None else f"\nNFE {float(nfe.mean()):.0f}"), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Eight Gaussians, exact score, VP SDE", fontsize=9)
    fig.savefig(FIGS / "toy_samplers.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def poor_combinations():
    """The combinations `sgm.sample` warns about (top) beside what it recommends (bottom), on
    the eight Gaussians with the exact score, each panel titled with its NFE and the mean
    log-density of its samples minus the data's."""
    mix = eight_gaussians()
    vp, ve = sgm.VPSDE(), sgm.VESDE()
    columns = [
        (
            ve,
            (
                "VE ODE, 20 fixed Euler steps",
                sgm.ProbabilityFlowODE(solver=diffrax.Euler(), steps=20),
            ),
            ("VE ODE, adaptive Tsit5", sgm.ProbabilityFlowODE()),
        ),
        (
            vp,
            ("VP Heun (EDM), 10 levels", sgm.HeunSampler(steps=10)),
            ("VP Heun (EDM), 18 levels", sgm.HeunSampler(steps=18)),
        ),
        (
            vp,
            ("VP DPM-Solver++ 2M, 10 steps", sgm.DPMSolver(steps=10)),
            ("VP DPM-Solver++ 2M, 19 steps", sgm.DPMSolver(steps=19)),
        ),
    ]
    data_lp = float(jax.vmap(mix.log_prob)(mix.sample(jr.key(1), 20_000)).mean())
    fig, axes = plt.subplots(2, len(columns), figsize=(3 * len(columns), 6.4))
    for j, (sde, *pair) in enumerate(columns):
        for i, (title, sampler) in enumerate(pair):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the top row is warned about on purpose
                x, nfe = sgm.sample(
                    mix.score(sde), sde, sampler, key=jr.key(0), shape=(2000, 2), return_nfe=True
                )
            gap = float(jax.vmap(mix.log_prob)(x).mean()) - data_lp
            ax = axes[i, j]
            ax.scatter(x[:, 0], x[:, 1], s=1, color="C3" if i == 0 else "C0")
            ax.set_xlim(-2.3, 2.3)
            ax.set_ylim(-2.3, 2.3)
            ax.set_aspect("equal")
            ax.set_title(
                f"{title}\nNFE {float(nfe.mean()):.0f}, log-density {gap:+.2f}", fontsize=8
            )
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Warned (top) and recommended (bottom); eight Gaussians, exact score", fontsize=9)
    fig.savefig(FIGS / "poor_combinations.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def likelihood_check():
    g = sgm.Gaussian(
        jnp.array([0.3, -0.2, 0.5]), jnp.array([[0.3, 0.1, 0], [0.1, 0.2, 0.05], [0, 0.05, 0.1]])
    )
    sde = sgm.VPSDE()
    x = g.sample(jr.key(0), 64)
    exact = sgm.log_likelihood(g.score(sde), sde, x, trace=sgm.Exact())
    hutch = sgm.log_likelihood(g.score(sde), sde, x, key=jr.key(1))
    truth = jax.vmap(lambda x: sde.prior_log_prob(g.flow(sde, sde.t0, sde.t1, x)))(x)
    truth = truth + g.flow_log_det(sde, sde.t0, sde.t1)
    fig, ax = plt.subplots(figsize=(3.8, 3.6))
    ax.plot(truth, exact, "o", ms=3, label="exact trace")
    ax.plot(truth, hutch, "x", ms=3, label="Hutchinson, 1 probe")
    lo, hi = float(truth.min()), float(truth.max())
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.7)
    ax.set_xlabel("closed-form log p (nats)")
    ax.set_ylabel("sgm.log_likelihood (nats)")
    err = float(jnp.abs(exact - truth).max())
    ax.set_title(f"3-D Gaussian, VP SDE: max |exact - closed form| = {err:.1e}", fontsize=8)
    ax.legend(fontsize=7)
    fig.savefig(FIGS / "likelihood_check.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def colorization():
    """Colours grey images with the exact score of a 10-component mixture of coloured 8x8
    digit prototypes (the class means of scikit-learn's digits, one hue per class)."""
    ds = sgm.data.digits()
    unit = jnp.stack([(ds.train[ds.train_labels == k].mean(0)[0] + 1) / 2 for k in range(10)])
    palette = jnp.asarray(plt.get_cmap("tab10").colors)  # (10, 3) RGB in [0, 1]
    means = 2 * unit[:, None] * palette[:, :, None, None] - 1  # (10, 3, 8, 8), model scale
    mix = sgm.GaussianMixture(jnp.ones(10), means.reshape(10, -1), jnp.full(10, 0.01))
    sde = sgm.VPSDE()
    flat = mix.score(sde)
    score = lambda t, x: flat(t, x.reshape(-1)).reshape(x.shape)  # noqa: E731
    truth = mix.sample(jr.key(0), 10).reshape(10, 3, 8, 8)
    grey = truth.mean(1, keepdims=True)
    rgb = sgm.colorize(score, sde, sgm.EulerMaruyama(steps=200), key=jr.key(1), grey=grey)
    same = jax.vmap(mix.assign)(rgb.reshape(10, -1)) == jax.vmap(mix.assign)(truth.reshape(10, -1))
    grey_err = float(jnp.abs(rgb.mean(1, keepdims=True) - grey).max())
    shown = jnp.concatenate([jnp.repeat(grey, 3, axis=1), rgb, truth])
    sgm.experiment.plot.save_image_grid(
        jnp.clip((shown + 1) / 2, 0, 1),
        FIGS / "colorization.png",
        ncol=10,
        title=f"grey input / sgm.colorize (exact mixture score) / truth\n"
        f"right colour {int(same.sum())}/10, max grey error {grey_err:.1e}",
    )


def ode_paths(model, sde, x1, ts):
    """The probability-flow ODE `dx/dt = f(t) x - g(t)^2 score(t, x) / 2` (Song et al. 2021,
    eq. 13) solved in `t` from each row of `x1` at `sde.t1`, saved at the decreasing times `ts`
    (adaptive Tsit5, tolerances 1e-5): an array `(len(x1), len(ts), d)`."""
    term = diffrax.ODETerm(lambda t, x, args: sde.ode_drift(model, t, x))

    def one(x):
        sol = diffrax.diffeqsolve(
            term,
            diffrax.Tsit5(),
            sde.t1,
            ts[-1],
            -(sde.t1 - ts[-1]) / 100,
            x,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=1e-5, atol=1e-5),
            max_steps=16_384,
        )
        return sol.ys

    return jax.jit(jax.vmap(one))(x1)


def fm_paths(models: Path, n: int = 200):
    """Probability-flow paths from the prior to the data of the 2-D models trained by
    `train_quality.py --save-models` (eight Gaussians): the DSM defaults under VP(0.1, 20),
    flow matching with independent pairs and with the exact minibatch OT coupling (Tong et al.
    2024; Pooladian et al. 2023) under `RectifiedFlow()`. Each panel's title gives the paths'
    total length over the total straight distance between their end points (1 is straight)."""
    panels = [
        ("default", "DSM defaults (VP SDE)"),
        ("fm", "flow matching, independent pairs"),
        ("fm_ot", "flow matching, minibatch OT coupling"),
    ]
    vp = sgm.VPSDE(beta_min=0.1, beta_max=20.0)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.5))
    for ax, (name, title) in zip(axes, panels, strict=True):
        skeleton = build(name, vp, (2,), 10_000, jr.key(0))[0]
        model = eqx.tree_deserialise_leaves(models / f"eight_2d_{name}.eqx", skeleton)
        sde = model.sde
        # the prior draws sgm.sample would make for example i from jr.key(0)
        pkeys = jax.vmap(lambda k: jr.split(k)[0])(jr.split(jr.key(0), n))
        x1 = jax.vmap(lambda k, s=sde: s.prior_sample(k, (2,)))(pkeys)
        eps = sde.sampling_eps
        ts = jnp.unique(
            jnp.concatenate([jnp.linspace(eps, sde.t1, 100), jnp.geomspace(eps, sde.t1, 100)])
        )[::-1]
        xs = ode_paths(model, sde, x1, ts)
        length = jnp.sum(jnp.linalg.norm(jnp.diff(xs, axis=1), axis=-1), axis=1)
        chord = jnp.linalg.norm(xs[:, -1] - xs[:, 0], axis=-1)
        for path in xs:
            ax.plot(path[:, 0], path[:, 1], color="C0", lw=0.5, alpha=0.5)
        ax.scatter(xs[:, 0, 0], xs[:, 0, 1], s=3, color="0.5", label="prior", zorder=3)
        ax.scatter(xs[:, -1, 0], xs[:, -1, 1], s=3, color="C3", label="sample", zorder=3)
        ax.set_xlim(-3.5, 3.5)
        ax.set_ylim(-3.5, 3.5)
        ax.set_aspect("equal")
        ax.set_title(
            f"{title}\npath length / distance {float(length.sum() / chord.sum()):.2f}", fontsize=8
        )
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(fontsize=7, loc="lower left", markerscale=3)
    fig.suptitle(
        f"Probability-flow ODE paths, {n} draws, eight Gaussians (10,000 training steps)",
        fontsize=9,
    )
    fig.savefig(FIGS / "fm_paths.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--digits-run")
    p.add_argument("--mnist-run")
    p.add_argument("--ou-theta-run", help="its conditional_*.png only")
    p.add_argument("--digits-sr-run", help="its conditional_*.png only")
    p.add_argument("--fm-models", help="train_quality.py --save-models's directory")
    p.add_argument("--runs-only", action="store_true", help="skip the closed-form figures")
    args = p.parse_args()
    FIGS.mkdir(exist_ok=True)
    if not args.runs_only:
        toy_samplers()
        poor_combinations()
        likelihood_check()
        colorization()
        for name, sde in {"vp": sgm.VPSDE(), "subvp": sgm.SubVPSDE(), "ve": sgm.VESDE()}.items():
            sgm.experiment.plot.save_marginals(sde, FIGS / f"marginals_{name}.png")
    if args.fm_models:
        fm_paths(Path(args.fm_models))
    runs = [
        ("digits", args.digits_run, "*.png"),
        ("mnist", args.mnist_run, "*.png"),
        ("ou_theta", args.ou_theta_run, "conditional_*.png"),
        ("digits_sr", args.digits_sr_run, "conditional_*.png"),
    ]
    for prefix, run, pattern in runs:
        if run:
            for png in sorted(Path(run).glob(pattern)):
                if png.name == "marginals.png":
                    continue  # the same as figs/marginals_{vp,subvp,ve}.png
                shutil.copy(png, FIGS / f"{prefix}_{png.name}")


if __name__ == "__main__":
    main()
