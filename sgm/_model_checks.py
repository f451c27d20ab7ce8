"""Checks of a score model against what it is used with: its SDE, and the labels of a
class-conditional network. They live apart from `ScoreModel` so that every entry point can use
them without importing the model's own dependencies."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._learned_schedule import same_sde
from ._sde import AbstractSDE
from .nets._embedding import Conditioning


class AbstractScoreModel(eqx.Module):
    """A score built from a network for one SDE (`sgm.ScoreModel`): what the checks read."""

    net: eqx.AbstractVar[Callable[..., Array]]
    sde: eqx.AbstractVar[AbstractSDE]


def score_models(score) -> list[AbstractScoreModel]:
    """The `ScoreModel`s that `score` is or holds (a guided score wraps one); none for a plain
    callable such as a closed-form score."""
    leaves = jax.tree.leaves(score, is_leaf=lambda node: isinstance(node, AbstractScoreModel))
    return [leaf for leaf in leaves if isinstance(leaf, AbstractScoreModel)]


def check_model_sde(score, sde: AbstractSDE) -> None:
    """A `ScoreModel` (or one inside `score`) must be used with its own SDE: its output is
    scaled by that SDE's marginal std, and sampling it with another SDE gives nonsense."""
    for model in score_models(score):
        if not same_sde(model.sde, sde):
            raise ValueError(
                f"the score model was built for {model.sde}, but sde={sde} was passed: pass "
                "the model's own SDE (model.sde)."
            )


def class_count(score) -> int | None:
    """`num_classes` of the class-conditional network of a `ScoreModel` in `score` (labels
    `0..num_classes-1`, and `num_classes` the null label), else None."""
    for model in score_models(score):
        cond = getattr(model.net, "cond", None)
        if isinstance(cond, Conditioning) and cond.label_table is not None:
            return cond.num_classes
    return None


def check_float32_model(score) -> None:
    """A likelihood needs a `ScoreModel` with float32 (or float64) parameters: its ODE is
    solved to tolerances near 1e-5 and its divergence estimated from the network's Jacobian,
    while a bfloat16 network errs by about 4e-3 relative in every evaluation. Refused rather
    than cast with a warning, so that no such number reaches a table unnoticed; the model
    `sgm.train` returns is float32 whatever its training precision."""
    for model in score_models(score):
        leaves = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
        low = sorted({str(a.dtype) for a in leaves if jnp.finfo(a.dtype).bits < 32})
        if low:
            raise ValueError(
                f"the score model has {'/'.join(low)} parameters, and a likelihood needs float32: "
                "cast them, jax.tree.map(lambda a: a.astype('float32') if "
                "eqx.is_inexact_array(a) else a, model)."
            )
