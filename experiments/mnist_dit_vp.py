"""`mnist_vp` with the transformer: a DiT of about the UNet's size (785k against 810k)."""

import dataclasses

from sgm.experiment import Net
from sgm.nets import DiT

from .mnist_vp import EXPERIMENT as MNIST_VP

EXPERIMENT = dataclasses.replace(
    MNIST_VP,
    name="mnist_dit_vp",
    description="MNIST 28x28, VP SDE, DiT (patch 2, 100 x 4); tfds or --data-dir IDX",
    budget="2000 steps x 64: not run on a CPU; on an H200 about 15 s of steps (6.5 ms each)",
    net=Net(DiT, patch_size=2, hidden=100, depth=4, heads=4),
)
