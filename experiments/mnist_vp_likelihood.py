"""`mnist_vp` trained for likelihood: likelihood weighting with importance sampling and
uniformly dequantized training images (Song et al. 2021, *Maximum Likelihood Training of
Score-Based Diffusion Models*), at the same budget."""

import dataclasses

import sgm
from sgm.experiment import Net

from .mnist_vp import EXPERIMENT as MNIST_VP

EXPERIMENT = dataclasses.replace(
    MNIST_VP,
    name="mnist_vp_likelihood",
    description="mnist_vp trained by the likelihood bound: g^2 weighting, importance-sampled "
    "times, dequantized images",
    budget="2000 steps x 64: 50 min training on 2 busy CPU cores (the cost per step of mnist_vp)",
    net=Net(MNIST_VP.net.cls, dequantizer=sgm.UniformDequantizer(), **MNIST_VP.net.kwargs),
    loss=sgm.DSMLoss(weighting="likelihood", importance_sampling=True),
)
