"""MNIST under the subVP SDE: `mnist_vp` with the SDE exchanged."""

import dataclasses

import sgm

from .mnist_vp import EXPERIMENT as MNIST_VP

EXPERIMENT = dataclasses.replace(
    MNIST_VP,
    name="mnist_subvp",
    description="MNIST 28x28, subVP SDE (linear beta 0.1 to 20), UNet; tfds or --data-dir IDX",
    budget="not run yet: same UNet and cost per step as mnist_vp (33-38 min on 2 CPU cores)",
    sde=sgm.SubVPSDE(),
)
