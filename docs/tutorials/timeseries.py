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
# # A time-series model
#
# A score model of stationary Ornstein-Uhlenbeck series `dx = -theta x dt + sigma dW`, sampled
# on a grid of step `dt`. Standardised, such a series is a Gaussian vector with covariance
# `a^|i - j|`, `a = exp(-theta dt)`: the model's samples, likelihoods and imputations can be
# held against that closed form.

# %%
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np

import sgm

LENGTH, THETA, DT = 32, 1.0, 0.05
a = np.exp(-THETA * DT)

# %% [markdown]
# ## Data
#
# `sgm.data.ou` simulates the series exactly and returns a `Dataset` of shape `(1, L)` in
# model scale (centred and divided by the training series' standard deviation).

# %%
ds = sgm.data.ou(key=jr.key(0), n_series=3000, length=LENGTH, theta=THETA, dt=DT)
print(ds.data_shape, ds.train.shape, ds.test.shape)
exact = sgm.Gaussian(
    mean=jnp.zeros(LENGTH), cov=a ** np.abs(np.subtract.outer(np.arange(LENGTH), np.arange(LENGTH)))
)

plt.figure(figsize=(6, 2.5))
plt.plot(ds.train[:5, 0].T)
plt.title("training series (model scale)")

# %% [markdown]
# ## Training
#
# A residual MLP over the whole series, trained by denoising score matching under the VP SDE.

# %%
sde = sgm.VPSDE()
model = sgm.ScoreModel(sgm.nets.MLP(ds.data_shape, key=jr.key(1), width=256, depth=3), sde)
model = sgm.train(
    model,
    sde,
    ds.train,
    sgm.Adam(lr=2e-3, warmup=50, decay=True),
    steps=600,
    batch_size=128,
    key=jr.key(2),
    monitor=sgm.Monitor(progress=False),
)

# %% [markdown]
# ## Samples against the closed form
#
# The autocorrelation of the samples at each lag, against `a^k`; the per-time variance
# against 1.

# %%
x = sgm.sample(model, sde, sgm.DPMSolver(steps=20), key=jr.key(3), shape=(1000, *ds.data_shape))
s = np.asarray(x[:, 0])
lags = np.arange(12)
acf = [np.mean(s[:, : LENGTH - k] * s[:, k:]) / np.mean(s**2) for k in lags]
print("variance per time step (should be near 1):", float(s.var(0).mean()))

plt.figure(figsize=(4, 3))
plt.plot(lags, a**lags, "k--", label="closed form a^k")
plt.plot(lags, acf, "o", label="model samples")
plt.xlabel("lag")
plt.ylabel("autocorrelation")
plt.legend()

# %% [markdown]
# ## Likelihood of held-out series
#
# `sgm.log_likelihood` of test series through the probability-flow ODE, next to their exact
# log-density under the Gaussian (in model scale; nats per series). The closed form is the
# best any model can do on average; a short training run stays some nats below it, and the
# gap is the measure of what longer training buys.

# %%
test = jnp.asarray(ds.test[:32])
lp_model = sgm.log_likelihood(model, sde, test, key=jr.key(4))
lp_exact = jax.vmap(exact.log_prob)(test[:, 0])
print(f"model {float(lp_model.mean()):.2f} nats, closed form {float(lp_exact.mean()):.2f} nats")

# %% [markdown]
# ## Imputation
#
# The second half of test series given the first (`sgm.inpaint` works on series too). The
# process is Markov, so the exact conditional mean of the missing half is
# `a^k x_last`, with variance `1 - a^(2k)`.

# %%
mask = jnp.zeros(ds.data_shape, bool).at[:, : LENGTH // 2].set(True)
filled = sgm.inpaint(
    model, sde, sgm.EulerMaruyama(steps=100), key=jr.key(5), x=test[:3], mask=mask, n_particles=8
)
k = np.arange(1, LENGTH // 2 + 1)
fig, axes = plt.subplots(1, 3, figsize=(11, 2.8), sharey=True)
for i, ax in enumerate(axes):
    last = float(test[i, 0, LENGTH // 2 - 1])
    mean, sd = last * a**k, np.sqrt(1 - a ** (2 * k))
    t_missing = np.arange(LENGTH // 2, LENGTH)
    ax.fill_between(t_missing, mean - 2 * sd, mean + 2 * sd, color="0.85", label="exact +-2 sd")
    ax.plot(np.asarray(test[i, 0]), "k", lw=1, label="truth")
    ax.plot(t_missing, np.asarray(filled[i, 0, LENGTH // 2 :]), "C1", label="imputed")
axes[0].legend(fontsize=7)
plt.tight_layout()
