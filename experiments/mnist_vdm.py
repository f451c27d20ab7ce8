"""mnist_vp's network with a learned noise schedule (Kingma et al. 2021, *Variational
Diffusion Models*): `LearnedVPSDE` trained with the model by the likelihood bound, times
uniform in t, dequantized images."""

import dataclasses

import sgm
from sgm.experiment import Net

from .mnist_vp import EXPERIMENT as MNIST_VP

EXPERIMENT = dataclasses.replace(
    MNIST_VP,
    name="mnist_vdm",
    description="mnist_vp with a learned noise schedule (VDM): LearnedVPSDE trained with the "
    "model by the likelihood bound, dequantized images",
    budget="2000 steps x 64: not run on a CPU (a step is mnist_vp's plus a second backward pass)",
    sde=sgm.LearnedVPSDE(),
    net=Net(MNIST_VP.net.cls, dequantizer=sgm.UniformDequantizer(), **MNIST_VP.net.kwargs),
    loss=sgm.DSMLoss(weighting="likelihood", time_sampling="antithetic"),
)
