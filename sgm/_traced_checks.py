"""Checks of traced inputs (`eqx.error_if`), and leaving them out of programs whose inputs are
valid by construction. A traced check runs as a host callback, and JAX does not store a program
with host callbacks in its persistent compilation cache: the training step, whose times are
drawn inside `[eps, t1]` and whose labels `sgm.train` checks on the host, is traced without them
so that a second run loads it instead of compiling it again; so are unconditional sampling and
likelihood programs, whose times come from grids and solves inside `[t_end, t1]` checked on the
host. Programs given labels keep the network's check of their range."""

import contextlib
import contextvars

import equinox as eqx

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


def error_if(x, pred, msg: str):
    """`eqx.error_if(x, pred, msg)`, or `x` inside `inputs_checked_by_caller()`."""
    return x if _SKIP.get() else eqx.error_if(x, pred, msg)


def unchecked_unless_labelled(y):
    """`inputs_checked_by_caller()` when there are no labels `y` (every traced input of a
    sampling or likelihood program is then valid by construction), else no change."""
    return inputs_checked_by_caller() if y is None else contextlib.nullcontext()
