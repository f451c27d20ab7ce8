"""`digits_vp` with the transformer: a class-conditional DiT of about the UNet's size."""

import dataclasses

from sgm.experiment import Net
from sgm.nets import DiT

from .digits_vp import EXPERIMENT as DIGITS_VP

EXPERIMENT = dataclasses.replace(
    DIGITS_VP,
    name="digits_dit_vp",
    description="8x8 scikit-learn digits, VP SDE, class-conditional DiT (patch 2, 84 x 4)",
    budget="1500 steps x 128: 4.4 min training on 2 CPU cores (partly shared), 4.66 bits/dim",
    net=Net(DiT, conditional=True, patch_size=2, hidden=84, depth=4, heads=4),
)
