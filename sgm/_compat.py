"""Compatibility with earlier versions, in one place. Everything here is removed in sgm 0.3.

- Deprecated keywords of the library's entry points: the entry point hands what it was given
  to a translator here, which warns through `deprecated` (a `DeprecationWarning` pointing at
  the caller's line by a fixed `stacklevel`, no frame walking) and returns the current form:
  `pop_trace_flags` for the likelihoods, `train_keywords` (with `train_options`) for
  `sgm.train`'s flat keywords, which become its option objects.
- Runs written by earlier versions: `upgrade_config` turns their `config.json` into the
  current JSON (read by `sgm.experiment`), `legacy_checkpoint` finds a checkpoint in the
  single-checkpoint layout, `read_state_file` reads the state of a checkpoint written as one
  `state.eqx` file, `OVERRIDE_ALIASES` maps their command-line keys.

This module works on plain values (dicts, paths), so the numerical library needs nothing from
the application layer to hold it.
"""

import functools
import json
import warnings
from pathlib import Path

REMOVED_IN = "0.3"


def deprecated(message: str, *, stacklevel: int = 3) -> None:
    """Warns that something is deprecated: `message` says what to use instead. The default
    `stacklevel` points at the caller of the public function that calls this."""
    warnings.warn(
        f"{message} (deprecated; removed in sgm {REMOVED_IN})",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


TRACE_FLAGS = ("exact", "n_probes", "probe", "chunk_size")


def pop_trace_flags(options: dict, *, stacklevel: int) -> dict:
    """`options` with the keywords `exact=`, `n_probes=`, `probe=`, `chunk_size=` of
    `log_likelihood` and `LogLikelihood` replaced by the trace estimator they name
    (`exact=True` is `Exact(chunk_size)`, otherwise `Hutchinson(n_probes, probe)`).
    `stacklevel` counts from the function calling this one (1), as for `warnings.warn`."""
    from ._trace import Exact, Hutchinson

    flags = {k: options.pop(k) for k in TRACE_FLAGS if k in options}
    given = [k for k, v in flags.items() if v is not None]
    if not given:
        return options
    if options.get("trace") is not None:
        raise ValueError(f"pass either trace=... or the deprecated {given}, not both.")
    deprecated(
        f"{', '.join(given)}: pass trace=sgm.Exact(chunk_size=...) or "
        "trace=sgm.Hutchinson(n_probes=..., probe=...)",
        stacklevel=stacklevel + 2,
    )
    if flags.get("exact"):
        chunk = flags.get("chunk_size")
        options["trace"] = Exact() if chunk is None else Exact(chunk_size=chunk)
    else:
        n_probes = flags.get("n_probes")
        options["trace"] = Hutchinson(
            n_probes=1 if n_probes is None else n_probes, probe=flags.get("probe") or "rademacher"
        )
    return options


def legacy_checkpoint(directory) -> tuple[int, Path] | None:
    """The one checkpoint of a run written when a run kept a single checkpoint,
    `directory/{state.eqx, meta.json}`, as `(step, directory)` (step -1 when unreadable)."""
    meta = Path(directory) / "meta.json"
    if not meta.exists():
        return None
    try:
        return int(json.loads(meta.read_text())["step"]), Path(directory)
    except (OSError, ValueError, KeyError, TypeError):
        return -1, Path(directory)


def read_state_file(path, like):
    """The train state in `path`, a `state.eqx` file of equinox's serialisation (the layout of
    train checkpoints before they went through orbax-checkpoint), in the structure of `like`;
    its arrays are put where `like`'s are (a jax.Array's sharding, or host memory)."""
    import equinox as eqx
    import jax

    state = eqx.tree_deserialise_leaves(path, like)

    def place(new, old):
        return jax.device_put(new, old.sharding) if isinstance(old, jax.Array) else new

    arrays, static = eqx.partition(state, eqx.is_array)
    targets = eqx.filter(like, eqx.is_array)
    return eqx.combine(jax.tree.map(place, arrays, targets), static)


# --- runs written by earlier versions ----------------------------------------------------------

# Dotted command-line keys of earlier configurations and what they stand for now.
OVERRIDE_ALIASES = {
    "train.lr": "optimizer.lr",
    "train.warmup": "optimizer.warmup",
    "train.grad_clip": "optimizer.grad_clip",
    "train.weighting": "loss.weighting",
    "train.importance_sampling": "loss.importance_sampling",
    "data.series_length": "data.length",
    "sample.inpaint_steps": "sample.controlled.steps",
}
SECTION_ALIASES = {"model": "net"}

# What the flat format's `build_model` passed to each network (the rest were class defaults).
_NET_ARGS = {
    "unet": (
        "UNet",
        (
            "channels",
            "channel_mults",
            "num_res_blocks",
            "attention_levels",
            "num_groups",
            "dropout",
        ),
    ),
    "mlp": ("MLP", ("width", "depth")),
    "dit": ("DiT", ("patch_size", "hidden", "depth", "dropout")),
}
_SAMPLER_CLASSES = {
    "em": "EulerMaruyama",
    "pc": "PredictorCorrector",
    "ode": "ProbabilityFlowODE",
    "dpm": "DPMSolver",
    "heun": "HeunSampler",
    "unipc": "UniPC",
}
_FIXED_STEPS = {"dpm": 20, "heun": 18, "unipc": 20}  # the flat format's fast-solver choices
_SAMPLE_KEYS = (
    "inpaint_particles",
    "inpaint_method",
    "guidance_scale",
    "classifier_scale",
    "classifier_steps",
    "classifier_batch_size",
    "classifier_lr",
    "classifier_width",
)
# A network written without a preconditioning predicted the noise (Ho et al. 2020) from
# Fourier features of scale 16 of `t`, the defaults then, which it did not record.
_NOISE_PREDICTION = {"preconditioning": {"__class__": "NoisePrediction"}, "fourier_scale": 16.0}


def upgrade_config(data: dict) -> dict:
    """The `config.json` of a run as this version writes it (`{"__class__": "Experiment",
    ...}`), from what this or an earlier version wrote: the flat format (sections `data`,
    `sde`, `model`, `train`, `sample`, `eval` with `kind` switches), or objects whose network
    records no preconditioning. A ValueError says what could not be read."""
    if "__class__" not in data:
        return _from_flat(data)
    net = data.get("net")
    if isinstance(net, dict) and "preconditioning" not in net:
        return {**data, "net": {**_NOISE_PREDICTION, **net}}
    return data


def _obj(class_name: str, /, **fields) -> dict:
    return {"__class__": class_name, **fields}


def _from_flat(d: dict) -> dict:
    try:
        data, sde, model, train = d["data"], d["sde"], d["model"], d["train"]
        sample, ev = d.get("sample", {}), d.get("eval", {})
        options = {}
        if data["name"] == "flowers":
            options["resolution"] = data["resolution"]
        if data["name"] in ("ou", "ou_theta"):
            options["length"] = data["series_length"]
        if sde["kind"] == "ve":
            sde_obj = _obj("VESDE", sigma_min=sde["sigma_min"], sigma_max=sde["sigma_max"])
        else:
            family = {"vp": "VPSDE", "subvp": "SubVPSDE"}[sde["kind"]]
            sde_obj = _obj(
                family,
                beta_min=sde["beta_min"],
                beta_max=sde["beta_max"],
                schedule=sde.get("schedule", "linear"),
            )
        cls, names = _NET_ARGS[model["kind"]]
        steps, snr = sample.get("steps", 1000), sample.get("snr", 0.16)
        samplers = {}
        for name in sample.get("samplers", ("em", "pc", "ode")):
            fields = {"steps": steps} if name in ("em", "pc") else {}
            fields.update({"snr": snr} if name == "pc" else {})
            fields.update({"steps": _FIXED_STEPS[name]} if name in _FIXED_STEPS else {})
            samplers[name] = _obj(_SAMPLER_CLASSES[name], **fields)
        if ev.get("exact"):
            trace = _obj("Exact")
        else:
            trace = _obj("Hutchinson", n_probes=ev.get("n_probes", 1))
        train_keys = ("steps", "batch_size", "ema_decay", "log_every", "eval_every")
        return _obj(
            "Experiment",
            name=d["name"],
            description=d.get("description", ""),
            budget=d.get("budget", ""),
            data=_obj(
                "Data",
                name=data["name"],
                n_train=data.get("n_train"),
                n_test=data.get("n_test"),
                lowres_factor=data.get("lowres_factor"),
                **options,
            ),
            sde=sde_obj,
            net=_obj(
                "Net",
                cls={"__type__": cls},
                conditional=model.get("conditional", False),
                **_NOISE_PREDICTION,
                **{n: model[n] for n in names},
            ),
            loss=_obj(
                "DSMLoss",
                weighting=train.get("weighting", "sigma2"),
                importance_sampling=train.get("importance_sampling", False),
            ),
            optimizer=_obj(
                "Adam", lr=train["lr"], warmup=train["warmup"], grad_clip=train["grad_clip"]
            ),
            train=_obj(
                "Train",
                **{k: train[k] for k in train_keys},
                label_dropout=train.get("label_dropout", 0.1),
                checkpoint_every=train["checkpoint_every"],
                seed=train["seed"],
            ),
            sample=_obj(
                "Sample",
                samplers=samplers,
                n_samples=sample.get("n_samples", 64),
                controlled=_obj("EulerMaruyama", steps=sample.get("inpaint_steps", 200)),
                **{k: sample[k] for k in _SAMPLE_KEYS if k in sample},
            ),
            eval=_obj(
                "Eval",
                trace=trace,
                **{k: ev[k] for k in ("n_images", "n_dequant", "batch_size") if k in ev},
            ),
        )
    except (KeyError, TypeError) as e:
        raise ValueError(
            f"a configuration of an earlier version that cannot be read (missing or bad {e}); "
            "its model can still be loaded with eqx.tree_deserialise_leaves and the network it "
            "names."
        ) from e


def legacy_sampler_keys(name: str, samplers: dict) -> list[str] | None:
    """The flat format's `sample.steps` and `sample.snr` set the steps of every Euler-Maruyama
    and predictor-corrector sampler and the snr of every predictor-corrector one: the keys
    (`"em.steps"`, ...) they stand for among `samplers`, or None for other names."""
    from ._samplers import EulerMaruyama, PredictorCorrector

    kinds = {"steps": (EulerMaruyama, PredictorCorrector), "snr": (PredictorCorrector,)}
    if name not in kinds:
        return None
    return [f"{n}.{name}" for n, s in samplers.items() if isinstance(s, kinds[name])]


def legacy_trace(name: str, value, trace):
    """The trace estimator that the flat format's `eval.exact` (a bool) or `eval.n_probes` (an
    int) makes of `trace`, or None for other names."""
    from ._trace import Exact, Hutchinson, HutchPlusPlus

    if name == "exact":
        return Exact() if value else Hutchinson() if isinstance(trace, Exact) else trace
    if name == "n_probes":
        if isinstance(trace, HutchPlusPlus):
            return HutchPlusPlus(n_probes=value, probe=trace.probe)
        probe = trace.probe if isinstance(trace, Hutchinson) else "rademacher"
        return Hutchinson(n_probes=value, probe=probe)
    return None


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
