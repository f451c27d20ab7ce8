"""Mixed precision for the training step: the network's forward and backward passes in
bfloat16 while the parameters, the optimizer state, the EMA and the loss stay in float32
(Micikevicius et al. 2018, *Mixed Precision Training*, sec. 3; bfloat16 has float32's
exponent range, so it needs none of float16's loss scaling)."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from .._score import ScoreModel

PRECISIONS = ("float32", "bfloat16")
"""The compute precisions `sgm.train` takes."""


def check_precision(name: str, precision) -> str:
    """`precision` if `sgm.train` can train in it; a one-line `ValueError` otherwise."""
    if precision == "float16":
        raise ValueError(
            f"{name}='float16' needs dynamic loss scaling, which sgm.train does not do: use "
            "'bfloat16' (float32's exponent range, no scaling needed) or 'float32'."
        )
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"{name} must be one of {PRECISIONS}, got {precision!r}.")
    return precision


def check_float32_parameters(name: str, model) -> None:
    """The inexact parameters of `model` must be float32 (or float64 with x64): `sgm.train`
    keeps the parameters and optimizer state in full precision whatever it computes in."""
    dtypes = {a.dtype for a in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))}
    low = sorted(str(d) for d in dtypes if jnp.finfo(d).bits < 32)
    if low:
        raise ValueError(
            f"{name} has {'/'.join(low)} parameters; pass float32 parameters (the compute "
            "precision is set with precision='bfloat16')."
        )


def _cast(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, tree)


class LowPrecisionNet(eqx.Module):
    """A network computed in `dtype`: it holds the network with its inexact parameters cast
    to `dtype`, casts the example `x` to `dtype` and the output back to `x`'s dtype. The
    noise conditioning `c` and the condition `y` are passed as they are: the networks compute
    the Fourier features of `c` in float32 (a bfloat16 `c` keeps 3 significant digits, and
    `2 pi w c` would be off by radians at large `w`) and cast the embedding to their
    parameters' dtype. Built inside the differentiated function only, so that the gradients
    come back through the casts in float32."""

    net: Callable[..., Array]
    dtype: str = eqx.field(static=True)

    def __call__(self, c, x, *, y=None, key=None):
        out = self.net(c, x.astype(self.dtype), y=y, key=key)
        return out.astype(x.dtype)


def in_precision(model: ScoreModel, precision: str) -> ScoreModel:
    """`model` whose network computes in `precision`; the preconditioning, the SDE (a learned
    schedule included) and the dequantizer stay in float32. The identity for `"float32"`,
    so that the default step is the same program as without mixed precision."""
    if precision == "float32":
        return model
    net = LowPrecisionNet(_cast(model.net, precision), precision)
    return eqx.tree_at(lambda m: m.net, model, net)
