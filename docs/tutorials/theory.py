# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The theory on closed forms
#
# Score-based models (Song et al. 2021) rest on five objects: the **perturbation kernel** of
# an SDE, the **score** of every perturbed distribution, the **reverse-time SDE**, the
# **probability-flow ODE** and the **likelihood** it gives. For a Gaussian mixture all five
# are known in closed form under every linear SDE, so each can be looked at exactly — and
# each of sgm's numerical methods can be checked against it. This notebook does both.

# %%
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np

import sgm

# %% [markdown]
# ## 1. Perturbation kernels
#
# A linear SDE `dx = f(t) x dt + g(t) dw` perturbs a data point `x_0` into
# `x_t | x_0 ~ N(m(t) x_0, s(t)^2 I)`. The VP SDE shrinks the signal while the noise grows to
# one; the VE SDE keeps the signal and lets the noise explode; the subVP SDE lies below VP.

# %%
t = jnp.linspace(1e-3, 1.0, 200)
fig, axes = plt.subplots(1, 3, figsize=(11, 3))
for ax, sde in zip(axes, [sgm.VPSDE(), sgm.SubVPSDE(), sgm.VESDE()], strict=True):
    m, s = jax.vmap(sde.marginal)(t)
    ax.plot(t, m, label="m(t)")
    ax.plot(t, s, label="s(t)")
    ax.set_title(type(sde).__name__)
    ax.set_xlabel("t")
    ax.set_yscale("log" if isinstance(sde, sgm.VESDE) else "linear")
    ax.legend()
plt.tight_layout()

# %% [markdown]
# ## 2. Scores of the perturbed distributions
#
# Data from a mixture of Gaussians stay a mixture of Gaussians under a linear SDE, so
# `grad_x log p_t(x)` is exact at every `t`. The score points towards the data: at small `t`
# towards each mode, at large `t` towards the prior's centre.

# %%
mixture = sgm.GaussianMixture(
    weights=jnp.array([0.3, 0.7]),
    means=jnp.array([[-1.5, 0.0], [1.0, 1.0]]),
    covs=jnp.array([0.05, 0.1]),
)
sde = sgm.VPSDE()
score = mixture.score(sde)  # score(t, x) on one example

grid = jnp.stack(jnp.meshgrid(jnp.linspace(-3, 3, 15), jnp.linspace(-3, 3, 15)), -1).reshape(-1, 2)
fig, axes = plt.subplots(1, 3, figsize=(11, 3.5))
for ax, time in zip(axes, [0.05, 0.3, 0.9], strict=True):
    v = jax.vmap(lambda x, time=time: score(time, x))(grid)
    v = v / (1 + jnp.linalg.norm(v, axis=1, keepdims=True))  # arrows of readable length
    logp = jax.vmap(lambda x, time=time: mixture.log_prob(x, sde=sde, t=time))(grid)
    ax.scatter(grid[:, 0], grid[:, 1], c=logp, s=8, cmap="viridis")
    ax.quiver(grid[:, 0], grid[:, 1], v[:, 0], v[:, 1], width=0.004)
    ax.set_title(f"score at t = {time}")
plt.tight_layout()

# %% [markdown]
# ## 3. The reverse-time SDE
#
# Running `dx = [f(t) x - g(t)^2 score(t, x)] dt + g(t) dw_bar` backwards from the prior
# (Anderson 1982; Song et al. 2021, eq. 6) turns noise into data. With the exact score,
# Euler-Maruyama samples reproduce the mixture: the share of samples nearer each mode matches
# its weight.

# %%
samples = sgm.sample(score, sde, sgm.EulerMaruyama(steps=500), key=jr.key(0), shape=(2000, 2))
nearer_second = float(jnp.mean(jax.vmap(mixture.assign)(samples) == 1))
print(f"share of samples in the second mode: {nearer_second:.3f} (its weight: 0.7)")

data = mixture.sample(jr.key(1), 2000)
fig, axes = plt.subplots(1, 2, figsize=(7, 3.5), sharex=True, sharey=True)
axes[0].scatter(data[:, 0], data[:, 1], s=2)
axes[0].set_title("data")
axes[1].scatter(samples[:, 0], samples[:, 1], s=2, c="C1")
axes[1].set_title("reverse SDE, exact score")
plt.tight_layout()

# %% [markdown]
# ## 4. The probability-flow ODE
#
# The ODE `dx/dt = f(t) x - g(t)^2 score(t, x) / 2` (Song et al. 2021, eq. 13) has the same
# marginals as the SDE, but is deterministic: each prior draw maps to one data point. For a
# single Gaussian the map is affine and known exactly (`sgm.Gaussian.flow`); the numerical
# solve (`sgm.ProbabilityFlowODE`, adaptive diffrax steps) lands on it.

# %%
g = sgm.Gaussian(mean=jnp.array([1.0, -0.5]), cov=jnp.array([[0.3, 0.1], [0.1, 0.2]]))
ode = sgm.ProbabilityFlowODE(t_end=sde.t0)
z = sde.prior_sample(jr.key(2), (5, 2))
x_num = jax.vmap(lambda z: ode.sample_one(g.score(sde), sde, z, key=jr.key(0))[0])(z)
x_num = x_num * sde.marginal(sde.t0)[0]  # samplers return x / m at their end time
x_exact = jax.vmap(lambda z: g.flow(sde, sde.t1, sde.t0, z))(z)
print("largest distance from the exact flow map:", float(jnp.max(jnp.abs(x_num - x_exact))))

# %% [markdown]
# ## 5. The likelihood
#
# Along the flow, `log p_t0(x) = log p_t1(x(t1)) + int div F dt` (the instantaneous change of
# variables; Chen et al. 2018). `sgm.log_likelihood` solves this augmented ODE; with the exact
# score and the exact divergence (`sgm.Exact()`), it matches the closed form of the model's
# density — the prior at the exact flow map's image plus that map's log-determinant — to the
# solver's tolerance. Hutchinson's estimator (`sgm.Hutchinson()`) replaces the divergence by
# an unbiased one-probe estimate, much cheaper in high dimensions.

# %%
x = g.sample(jr.key(3), 256)
exact_model = jax.vmap(lambda v: sde.prior_log_prob(g.flow(sde, sde.t0, sde.t1, v)))(x)
exact_model = exact_model + g.flow_log_det(sde, sde.t0, sde.t1)
lp_exact = sgm.log_likelihood(g.score(sde), sde, x, trace=sgm.Exact())
lp_hutch = sgm.log_likelihood(g.score(sde), sde, x, key=jr.key(4), trace=sgm.Hutchinson())
print("Exact trace: largest error", float(jnp.max(jnp.abs(lp_exact - exact_model))), "nats")
err = lp_hutch - exact_model
print(
    f"Hutchinson: mean error {float(err.mean()):.4f} +- "
    f"{float(err.std() / np.sqrt(len(err))):.4f} nats (unbiased), spread {float(err.std()):.3f}"
)

# %%
plt.figure(figsize=(4, 3.2))
plt.scatter(exact_model, lp_exact, s=6, label="Exact trace")
plt.scatter(exact_model, lp_hutch, s=6, label="Hutchinson, 1 probe")
plt.plot([exact_model.min(), exact_model.max()], [exact_model.min(), exact_model.max()], "k--")
plt.xlabel("closed form")
plt.ylabel("ODE solve")
plt.legend()
plt.tight_layout()

# %% [markdown]
# Everything above used exact scores. A trained network takes their place unchanged
# (`sgm.ScoreModel` is a score like any other): see [An image model](images.py) and
# [A time-series model](timeseries.py).
