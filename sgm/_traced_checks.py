"""Checks of traced inputs (`eqx.error_if`), and leaving them out of programs whose inputs are
valid by construction. A traced check runs as a host callback, and JAX does not store a program
with host callbacks in its persistent compilation cache: the training step, whose times are
drawn inside `[eps, t1]` and whose labels `sgm.train` checks on the host, is traced without them
so that a second run loads it instead of compiling it again; so are unconditional sampling and
likelihood programs, whose times come from grids and solves inside `[t_end, t1]` checked on the
host. Programs given labels keep the network's check of their range.

A check whose values are concrete (an eager call such as `model(2.0, x)`) raises a `ValueError`
at once; a check that fails inside a compiled program surfaces as equinox's long
`EquinoxRuntimeError`, which the public entry points turn into a one-line exception with
`concise_errors`."""

import contextlib
import contextvars

import equinox as eqx
import jax.numpy as jnp
from jax.core import Tracer

_SKIP = contextvars.ContextVar("sgm_skip_traced_checks", default=False)


@contextlib.contextmanager
def inputs_checked_by_caller():
    """While tracing inside this block, `error_if` adds no check: the caller vouches for the
    inputs."""
    token = _SKIP.set(True)
    try:
        yield
    finally:
        _SKIP.reset(token)


# the messages of sgm's traced checks: a compiled failure with one of them is bad input
_MESSAGES: set[str] = set()


def error_if(x, pred, msg: str):
    """`eqx.error_if(x, pred, msg)`, or `x` inside `inputs_checked_by_caller()`; a `ValueError`
    at once where `pred` is concrete (not traced)."""
    if _SKIP.get():
        return x
    if not isinstance(pred, Tracer) and not isinstance(x, Tracer):
        if bool(jnp.any(pred)):
            raise ValueError(f"{msg}.")
        return x
    _MESSAGES.add(msg)
    return eqx.error_if(x, pred, msg)


def _message(error: Exception) -> str:
    """The check's own message in equinox's report (the line `...EquinoxRuntimeError: msg`)."""
    for line in str(error).splitlines():
        head, sep, rest = line.partition("EquinoxRuntimeError: ")
        if sep and head in ("", "equinox."):
            return rest.strip()
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


class concise_errors(contextlib.ContextDecorator):
    """Around a public entry point: a check that failed inside a compiled program is re-raised
    as a one-line `ValueError` (sgm's input checks) or `RuntimeError` (any other, e.g. a solver
    giving up) holding only its message, without equinox's report of the traced stack (which,
    for a program compiled earlier, is the stack of that earlier call)."""

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None or not isinstance(error, eqx.EquinoxRuntimeError):
            return False
        message = _message(error)
        cls = ValueError if message in _MESSAGES else RuntimeError
        raise cls(message if message.endswith(".") else f"{message}.") from None


def unchecked_unless_labelled(y):
    """`inputs_checked_by_caller()` when there are no labels `y` (every traced input of a
    sampling or likelihood program is then valid by construction), else no change."""
    return inputs_checked_by_caller() if y is None else contextlib.nullcontext()
