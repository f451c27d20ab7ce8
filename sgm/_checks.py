"""Checks at the API boundary: bad input raises a ValueError a user can act on.

One rule for settings everywhere: an integer setting accepts a Python or NumPy integer and
refuses `bool` (`True` is not a step count); a float setting accepts any real number (Python,
NumPy, or an integer) but neither `bool` nor NaN. Each check returns the value as a plain Python
`int` or `float`, so that what is stored (and serialised) has one type.
"""

import math
import numbers
from typing import Literal, Protocol, TypeGuard, overload

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

from ._sde import AbstractSDE
from ._traced_checks import unchecked_unless_labelled


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
    try:
        x = jnp.asarray(x)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be an array (n, *data_shape) of numbers, got {type(x).__name__}."
        ) from None
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


def check_labels(y, n: int, *, num_classes: int | None = None, name: str = "y") -> jax.Array | None:
    """Conditioning inputs `y`, one per example, finite. For a class-conditional model
    (`num_classes` given) they are required and must be integer labels in `[0, num_classes]`,
    `num_classes` being the null label: an unconditional draw is asked for explicitly with `y`
    filled with `num_classes`, never by leaving `y` out."""
    if y is None:
        if num_classes is None:
            return None
        raise ValueError(
            f"the model is class-conditional ({num_classes} classes) but no {name} was given: "
            f"pass {name}, one label in [0, {num_classes - 1}] per example, or ask for the null "
            f"label (unconditional) explicitly with {name}=jnp.full({n}, {num_classes})."
        )
    y = jnp.asarray(y)
    if y.ndim < 1 or y.shape[0] != n:
        raise ValueError(
            f"{name} must have one entry per example (leading axis {n}), got {y.shape}."
        )
    if jnp.issubdtype(y.dtype, jnp.inexact) and not bool(jnp.all(jnp.isfinite(y))):
        raise ValueError(f"{name} contains NaN or infinite values.")
    if num_classes is not None:
        bad = not jnp.issubdtype(y.dtype, jnp.integer) or y.ndim != 1
        if bad or (y.size and (int(y.min()) < 0 or int(y.max()) > num_classes)):
            got = f"{y.dtype} values" + (f" in [{y.min()}, {y.max()}]" if y.size else "")
            raise ValueError(
                f"{name} must be integer class labels in [0, {num_classes}] ({num_classes}: no "
                f"label), one per example, got {got} of shape {y.shape}."
            )
    return y


def check_key(key, name: str = "key"):
    """`key` must be a JAX PRNG key: a typed key `jax.random.key(seed)` or a raw `uint32` key
    from `jax.random.PRNGKey(seed)`."""
    if isinstance(key, jax.Array | np.ndarray):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
            return key
        if key.dtype == np.uint32 and key.shape in ((2,), (4,)):
            return key
        got = f"an array of dtype {key.dtype} and shape {key.shape}"
    else:
        got = f"{type(key).__name__} {key!r}"[:80]
    raise ValueError(f"{name} must be one JAX PRNG key, e.g. jax.random.key(0), got {got}.")


def check_data_shape(name: str, data_shape) -> tuple[int, ...]:
    """An example's shape as a tuple of positive ints; an int `d` means `(d,)`."""
    if _is_integer(data_shape):
        data_shape = (data_shape,)
    if not isinstance(data_shape, tuple | list) or not all(
        _is_integer(d) and int(d) > 0 for d in data_shape
    ):
        raise ValueError(
            f"{name} must be the shape of one example, e.g. (2,) or (1, 28, 28), got "
            f"{data_shape!r}."
        )
    return tuple(int(d) for d in data_shape)


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
        fix = (
            f"pass integer levels 0..{2**num_bits - 1}, e.g. "
            f"np.round(x * {2**num_bits - 1}).astype(np.uint8) for data x in [0, 1]"
        )
        if not bool(jnp.all(as_float == jnp.round(as_float))):
            raise ValueError(
                f"images must hold integer values (e.g. uint8 pixels), not floats: {fix}."
            )
        if bool(jnp.all((as_float == 0) | (as_float == 1))):
            raise ValueError(
                "images are floats that are all 0. or 1., which look like data in [0, 1], not "
                f"pixel levels: {fix}, or for binary images x.astype(np.uint8) with num_bits=1."
            )
    levels = 2**num_bits
    if bool(jnp.any(as_float < 0)) or bool(jnp.any(as_float >= levels)):
        raise ValueError(f"images must lie in [0, 2**num_bits) = [0, {levels}).")
    return as_float


@eqx.filter_jit
def _finite_rows(score, t, x, y):
    with unchecked_unless_labelled(y):
        return _finite_rows_traced(score, t, x, y)


def _finite_rows_traced(score, t, x, y):
    def one(x, y):
        value = score(t, x) if y is None else score(t, x, y=y)
        return jnp.all(jnp.isfinite(value))

    return jax.vmap(one)(x, y) if y is not None else jax.vmap(lambda x: one(x, None))(x)


def _pad(a, size: int):
    return jnp.concatenate([a, jnp.repeat(a[-1:], size - a.shape[0], 0)])


def check_finite_score(score, sde: AbstractSDE, x, y=None, *, size: int | None = None) -> None:
    """Evaluates `score(t0, x_i)` once per example (in compiled batches of `size`) and raises
    if any value is not finite: a solve started there cannot succeed, and would otherwise
    spend its whole step budget before saying so. Checks the score's output shape first."""
    check_score(score, sde, x.shape[1:], y)
    t, n = sde.t0, x.shape[0]
    size = n if size is None else min(size, n)
    bad = []
    for start in range(0, n, size):
        part = slice(start, start + size)
        xs, ys = x[part], None if y is None else y[part]
        m = xs.shape[0]
        if m < size:  # the last batch padded to the others' size: one compilation
            xs, ys = _pad(xs, size), None if ys is None else _pad(ys, size)
        finite = _finite_rows(score, t, xs, ys)
        if isinstance(finite, Tracer):
            return  # traced by the caller (e.g. differentiated): no host check is possible
        finite = np.asarray(finite)[:m]
        bad.extend(start + np.flatnonzero(~finite))
    if bad:
        raise ValueError(
            f"the score is not finite at t={t:g} on {len(bad)} of {n} examples (first: index "
            f"{bad[0]}): check the model's weights (a diverged training?) and the data."
        )


def count_non_finite(x) -> int:
    """The number of examples (rows of `x`) with a NaN or infinite entry."""
    return int(jnp.sum(~jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1)))
