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
# # An image model
#
# A class-conditional score model on scikit-learn's 8x8 digits (bundled with scikit-learn,
# so this runs offline), from data to samples, test bits/dim and inpainting. The settings are
# small so that the notebook runs in a couple of minutes on a laptop CPU; `python main.py
# --experiment digits_vp` is the same job at its full budget.

# %%
import jax.numpy as jnp
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np

import sgm

STEPS = 300  # training steps; digits_vp uses 1500 at batch 128

# %% [markdown]
# ## Data in model scale
#
# `sgm.data.digits()` returns a `Dataset`: pixel values mapped to `[-1, 1]` (model scale,
# by `ds.scaler`), the integer images kept for bits/dim, and the labels.

# %%
ds = sgm.data.digits(key=jr.key(0))
print(ds.name, ds.data_shape, ds.train.shape, ds.num_classes, ds.train.min(), ds.train.max())


def show(images, title, ncol=10):
    images = np.asarray(ds.scaler.inverse(images)).clip(0, 1)[:, 0]
    nrow = int(np.ceil(len(images) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(ncol * 0.6, nrow * 0.6))
    padded = list(images) + [None] * (nrow * ncol - len(images))
    for ax, im in zip(axes.ravel(), padded, strict=True):
        ax.axis("off")
        if im is not None:
            ax.imshow(im, cmap="gray", vmin=0, vmax=1)
    fig.suptitle(title, fontsize=9)


show(ds.train[:20], "training images")

# %% [markdown]
# ## A class-conditional UNet
#
# The network is conditioned on the label; label dropout (10%, the null label being
# `num_classes`) also trains the unconditional score that classifier-free guidance needs
# (Ho and Salimans 2022).

# %%
sde = sgm.VPSDE()
net = sgm.nets.UNet(
    ds.data_shape,
    key=jr.key(1),
    channels=16,
    channel_mults=(1, 2),
    attention_levels=(1,),
    num_classes=ds.num_classes,
)
model = sgm.ScoreModel(net, sde)
loss = sgm.DSMLoss(label_dropout=0.1, null_label=ds.num_classes)
model, history = sgm.train(
    model,
    sde,
    ds.train,
    sgm.Adam(lr=2e-3, warmup=50, decay=True),
    steps=STEPS,
    batch_size=64,
    key=jr.key(2),
    loss=loss,
    labels=ds.train_labels,
    monitor=sgm.Monitor(every=20, progress=False, history=True),
)
plt.figure(figsize=(4, 2.5))
plt.plot(history["step"], history["loss"])
plt.xlabel("step")
plt.ylabel("DSM loss")

# %% [markdown]
# ## Samples, one row per class
#
# DPM-Solver++ with 20 score evaluations (Lu et al. 2022), guided towards each class.

# %%
y = jnp.repeat(jnp.arange(10), 5)
guided = sgm.ClassifierFreeGuidance(model, 1.0, null_label=ds.num_classes)
x = sgm.sample(guided, sde, sgm.DPMSolver(steps=20), key=jr.key(3), shape=(50, 1, 8, 8), y=y)
show(x.reshape(10, 5, 1, 8, 8).transpose(1, 0, 2, 3, 4).reshape(50, 1, 8, 8), "classes 0-9")

# %% [markdown]
# ## Test bits/dim
#
# The likelihood through the probability-flow ODE of uniformly dequantized test images
# (`sgm.bits_per_dim`; Song et al. 2021, appendix D.2), with one Hutchinson probe. A short
# training run is far from the ~4.5 bits/dim that longer ones reach (`benchmarks/README.md`).
# The model is class-conditional, so it is told which density to score: here the
# unconditional `p(x)` (the number papers report), by the null label its label dropout
# trained; `y=ds.test_labels[:8]` would give `p(x | y)`.

# %%
null = jnp.full(8, ds.num_classes)
bpd = sgm.bits_per_dim(model, sde, ds.test_int[:8], key=jr.key(4), scaler=ds.scaler, y=null)
print(f"test bits/dim: {float(bpd.mean()):.2f} +- {float(bpd.std() / 8**0.5):.2f} (8 images)")

# %% [markdown]
# ## Inpainting
#
# The lower half of test images filled in from the upper half by sequential Monte Carlo
# (`sgm.inpaint`, method `"smc"`); the known pixels are kept exactly.

# %%
mask = jnp.zeros(ds.data_shape, bool).at[:, :4, :].set(True)  # True where known
x_test = jnp.asarray(ds.test[:10])
null = jnp.full(10, ds.num_classes)  # the unconditional model, by its null label
filled = sgm.inpaint(
    model,
    sde,
    sgm.EulerMaruyama(steps=100),
    key=jr.key(5),
    x=x_test,
    mask=mask,
    n_particles=4,
    y=null,
)
assert bool(jnp.all(jnp.where(mask, filled == x_test, True)))
show(jnp.concatenate([jnp.where(mask, x_test, -1.0), filled, x_test]), "known / filled / truth")
