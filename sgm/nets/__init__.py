"""Score networks: each an `eqx.Module` called `net(t, x, *, y=None, key=None)` on one
example, returning a noise prediction shaped like `x`."""

from ._classifier import Classifier as Classifier
from ._dit import DiT as DiT
from ._embedding import (
    Conditioning as Conditioning,
    fourier_features as fourier_features,
    param_count as param_count,
)
from ._mlp import MLP as MLP
from ._unet import UNet as UNet
