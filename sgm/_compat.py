"""Compatibility with earlier versions, in one place: deprecated keywords of the library's
entry points. Everything here is removed in sgm 0.3.

A deprecated keyword keeps working for one minor version: the entry point calls `deprecated`,
which warns once per call with `DeprecationWarning` pointing at the caller's line (a fixed
`stacklevel` from the public function, no frame walking). `train_keywords` wraps `sgm.train`
to translate its flat keywords into its option objects.
"""

import functools
import warnings

REMOVED_IN = "0.3"


def deprecated(message: str, *, stacklevel: int = 3) -> None:
    """Warns that something is deprecated: `message` says what to use instead. The default
    `stacklevel` points at the caller of the public function that calls this."""
    warnings.warn(
        f"{message} (deprecated; removed in sgm {REMOVED_IN})",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


# `sgm.train`'s flat keywords: (option object, its field).
_TRAIN_KEYWORDS = {
    "checkpoint_dir": ("checkpoints", "directory"),
    "checkpoint_every": ("checkpoints", "every"),
    "keep_checkpoints": ("checkpoints", "keep"),
    "resume": ("checkpoints", "resume"),
    "fingerprint": ("checkpoints", "fingerprint"),
    "eval_data": ("evaluation", "data"),
    "eval_labels": ("evaluation", "labels"),
    "eval_every": ("evaluation", "every"),
    "log_every": ("monitor", "every"),
    "divergence_factor": ("monitor", "divergence_factor"),
    "progress": ("monitor", "progress"),
    "return_history": ("monitor", "history"),
}


def train_options(old: dict, new: dict) -> dict:
    """The option objects (`checkpoints`, `monitor`) that `sgm.train`'s flat keywords `old`
    stand for. The checkpoint keywords take effect with `checkpoint_dir`, the evaluation ones
    with `eval_data` and `eval_every`, as they did. A keyword of an option object that `new`
    (the other keywords given) also holds is a TypeError: one way of saying each thing."""
    from ._training._options import Checkpoints, Evaluation, Monitor

    fields = {"checkpoints": {}, "evaluation": {}, "monitor": {}}
    for name, value in old.items():
        option, field = _TRAIN_KEYWORDS[name]
        fields[option][field] = value
    for argument in ("checkpoints", "monitor"):
        inside = ("checkpoints",) if argument == "checkpoints" else ("evaluation", "monitor")
        given = [k for k in old if _TRAIN_KEYWORDS[k][0] in inside]
        if argument in new and given:
            raise TypeError(
                f"train() got both {argument}= and {', '.join(given)}=; give {argument}= alone."
            )
    c, e, m = fields["checkpoints"], fields["evaluation"], fields["monitor"]
    out = {}
    if c.get("directory") is not None:
        out["checkpoints"] = Checkpoints(c.pop("directory"), **c)
    if e.get("data") is not None and e.get("every") is not None:
        m["evaluation"] = Evaluation(e.pop("data"), **e)
    if m:
        out["monitor"] = Monitor(**m)
    return out


def train_keywords(train):
    """Wraps `sgm.train` so that its flat keywords of sgm 0.1 (`checkpoint_dir=`, `log_every=`,
    `return_history=`, ...) keep working, translated by `train_options`, with a
    `DeprecationWarning`; any other unknown keyword is train's own TypeError."""

    @functools.wraps(train)
    def wrapper(*args, **kwargs):
        old = {k: kwargs.pop(k) for k in list(kwargs) if k in _TRAIN_KEYWORDS}
        if old:
            options = train_options(old, kwargs)
            deprecated(
                f"sgm.train({'=..., '.join(old)}=...): use checkpoints=sgm.Checkpoints(...) "
                "and monitor=sgm.Monitor(..., evaluation=sgm.Evaluation(...))"
            )
            kwargs.update(options)
        return train(*args, **kwargs)

    return wrapper
