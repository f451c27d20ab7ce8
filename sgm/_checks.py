"""Checks at the API boundary: bad input raises a ValueError a user can act on.

One rule for settings everywhere: an integer setting accepts a Python or NumPy integer and
refuses `bool` (`True` is not a step count); a float setting accepts any real number (Python,
NumPy, or an integer) but neither `bool` nor NaN. Each check returns the value as a plain Python
`int` or `float`, so that what is stored (and serialised) has one type.
"""

import math
import numbers
from typing import Literal, Protocol, TypeGuard, overload

import jax
import jax.numpy as jnp
import numpy as np

from ._sde import AbstractSDE


class _Real(Protocol):
    """What the checks use of a real number (`numbers.Real` declares no `>` or `>=`)."""

    def __float__(self) -> float: ...
    def __lt__(self, other: float, /) -> bool: ...
    def __le__(self, other: float, /) -> bool: ...
    def __gt__(self, other: float, /) -> bool: ...
    def __ge__(self, other: float, /) -> bool: ...


def _is_integer(value) -> TypeGuard[numbers.Integral]:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _is_real(value) -> TypeGuard[_Real]:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


@overload
def check_int(name: str, value, *, minimum: int = 1, none: Literal[False] = False) -> int: ...
@overload
def check_int(name: str, value, *, minimum: int = 1, none: bool) -> int | None: ...
def check_int(name: str, value, *, minimum: int = 1, none: bool = False) -> int | None:
    """`value` as an `int >= minimum` (or `None` where `none`); else a ValueError naming `name`."""
    if value is None and none:
        return None
    if not _is_integer(value) or value < minimum:
        what = f"an integer >= {minimum}" + (" or None" if none else "")
        raise ValueError(f"{name} must be {what}, got {value!r}.")
    return int(value)


@overload
def check_float(
    name: str,
    value,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    none: Literal[False] = False,
) -> float: ...
@overload
def check_float(
    name: str,
    value,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    none: bool,
) -> float | None: ...
def check_float(
    name: str,
    value,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    none: bool = False,
) -> float | None:
    """`value` as a finite-or-infinite real `float` with `value > above`, `value >= at_least` and
    `value < below` (the bounds given), or `None` where `none`."""
    if value is None and none:
        return None
    if not (
        _is_real(value)
        and not math.isnan(value)
        and (above is None or value > above)
        and (at_least is None or value >= at_least)
        and (below is None or value < below)
    ):
        parts = [f"> {above:g}"] if above is not None else []
        parts += [f">= {at_least:g}"] if at_least is not None else []
        parts += [f"< {below:g}"] if below is not None else []
        what = "a number" + (" " + " and ".join(parts) if parts else "")
        raise ValueError(
            f"{name} must be {what}" + (" or None" if none else "") + f", got {value!r}."
        )
    return float(value)


@overload
def check_positive(name: str, value, *, none: Literal[False] = False) -> float: ...
@overload
def check_positive(name: str, value, *, none: bool) -> float | None: ...
def check_positive(name: str, value, *, none: bool = False) -> float | None:
    """`value` as a finite `float > 0` (or `None` where `none`)."""
    value = check_float(name, value, above=0.0, none=none)
    if value is not None and math.isinf(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    return value


def check_probability(name: str, value, *, closed: bool = False) -> float:
    """`value` as a `float` in `[0, 1)` (`[0, 1]` where `closed`)."""
    if closed:
        value = check_float(name, value, at_least=0.0)
        if value > 1:
            raise ValueError(f"{name} must be a number in [0, 1], got {value!r}.")
        return value
    return check_float(name, value, at_least=0.0, below=1.0)


def check_sde(sde) -> None:
    if not isinstance(sde, AbstractSDE):
        raise ValueError(
            f"sde must be an sgm SDE (VPSDE, SubVPSDE, VESDE), got {type(sde).__name__}."
        )


def check_shape(shape) -> tuple[int, ...]:
    """`shape` must be `(n, *data_shape)` with positive ints."""
    if not isinstance(shape, tuple | list) or len(shape) < 2:
        raise ValueError(
            f"shape must be (n, *data_shape), e.g. (64, 1, 28, 28) or (1000, 2); got {shape!r}."
        )
    if not all(isinstance(d, int | np.integer) and d > 0 for d in shape):
        raise ValueError(f"shape must contain positive ints, got {shape!r}.")
    return tuple(int(d) for d in shape)


def check_batch(x, name: str = "x", *, data_shape: tuple[int, ...] | None = None) -> jax.Array:
    """`x` must be a finite float batch `(n, *data_shape)` with `n >= 1`."""
    x = jnp.asarray(x)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(
            f"{name} must be a batch shaped (n, *data_shape) with n >= 1, got shape {x.shape}; "
            f"add a leading axis for a single example ({name}[None])."
        )
    if data_shape is not None and x.shape[1:] != tuple(data_shape):
        raise ValueError(f"{name} has example shape {x.shape[1:]}, expected {tuple(data_shape)}.")
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return x


def check_labels(y, n: int) -> jax.Array | None:
    """Conditioning inputs `y`, one per example."""
    if y is None:
        return None
    y = jnp.asarray(y)
    if y.ndim < 1 or y.shape[0] != n:
        raise ValueError(f"y must have one entry per example (leading axis {n}), got {y.shape}.")
    return y


def check_score(score, sde: AbstractSDE, data_shape: tuple[int, ...], y=None) -> None:
    """Traces `score(t, x)` once (no computation) to check that it maps one example of shape
    `data_shape` to an array of the same shape."""
    if not callable(score):
        raise ValueError(f"score must be a callable score(t, x), got {type(score).__name__}.")
    t = jax.ShapeDtypeStruct((), jnp.result_type(float))
    x = jax.ShapeDtypeStruct(data_shape, jnp.result_type(float))
    if y is None:
        out = jax.eval_shape(score, t, x)
    else:
        y_one = jax.ShapeDtypeStruct(y.shape[1:], y.dtype)
        out = jax.eval_shape(lambda t, x, y: score(t, x, y=y), t, x, y_one)
    if getattr(out, "shape", None) != tuple(data_shape):
        raise ValueError(
            f"score(t, x) must return an array shaped like one example {tuple(data_shape)}, "
            f"got {getattr(out, 'shape', type(out).__name__)}. A score acts on ONE unbatched "
            "example; sgm vmaps it."
        )


def check_integer_images(images, num_bits: int) -> jax.Array:
    """`images` must be a batch `(n, *data_shape)`, `n >= 1`, of integer values in
    `[0, 2**num_bits)`; returns them as floats. The range is compared in float (in uint8,
    the usual pixels' type, `2**8` would wrap to 0)."""
    images = jnp.asarray(images)
    if images.ndim < 2 or images.shape[0] < 1:
        raise ValueError(f"images must be shaped (n, *data_shape) with n >= 1, got {images.shape}.")
    if images.dtype == jnp.bool_:
        raise ValueError("images must be integers in [0, 2**num_bits), not booleans.")
    as_float = images.astype(jnp.result_type(float))
    if not jnp.issubdtype(images.dtype, jnp.integer):
        if not bool(jnp.all(as_float == jnp.round(as_float))):
            raise ValueError("images must hold integer values (e.g. uint8 pixels), not floats.")
    levels = 2**num_bits
    if bool(jnp.any(as_float < 0)) or bool(jnp.any(as_float >= levels)):
        raise ValueError(f"images must lie in [0, 2**num_bits) = [0, {levels}).")
    return as_float
