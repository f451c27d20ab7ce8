"""Dotted command-line overrides of an `Experiment` (`--train.steps 2000`, `--model.width 64`,
`--sample.samplers em,pc`, `--sample.dpm.steps 10`), and which of them an existing run
accepts."""

import dataclasses

from .._compat import OVERRIDE_ALIASES, SECTION_ALIASES, legacy_sampler_keys, legacy_trace
from .._sde import VESDE, VPSDE, SubVPSDE
from .._training._posthoc import PostHocEMA
from ._experiment import SAMPLERS, Eval, Experiment, Net, Sample
from ._serial import field_hints, fields_of, fingerprint, parse_value, registered, to_json

_SDE_KINDS = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}
_NET_KINDS = {"unet": "UNet", "mlp": "MLP", "dit": "DiT"}
_LOSS_FROM_DATA = ("label_dropout", "null_label")

# What an existing run accepts: settings that do not change the trained model.
RUN_SETTINGS = (
    "train.steps",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.divergence_factor",
    "data.n_test",
)
RUN_SECTIONS = ("sample", "eval", "quality")


def canonical(key: str) -> str:
    """The key an alias stands for (`model.width` -> `net.width`, `train.lr` -> `optimizer.lr`)."""
    key = OVERRIDE_ALIASES.get(key, key)
    section, dot, rest = key.partition(".")
    key = SECTION_ALIASES.get(section, section) + dot + rest
    return OVERRIDE_ALIASES.get(key, key)


def _rebuild(obj, **changes):
    return type(obj)(**{**fields_of(obj), **changes})


def valid_keys(exp: Experiment) -> list[str]:
    keys = [f"data.{k}" for k in exp.data.config_hints() if k != "name"]
    keys += ["sde.kind"] + [f"sde.{k}" for k in fields_of(exp.sde)]
    keys += ["model.kind"] + [f"model.{k}" for k in exp.net.config_hints()]
    keys += [f"loss.{k}" for k in fields_of(exp.loss) if k not in _LOSS_FROM_DATA]
    keys += [f"optimizer.{k}" for k in fields_of(exp.optimizer)]
    keys += [f"train.{f.name}" for f in dataclasses.fields(exp.train)]
    keys += ["train.posthoc_ema.<field>"]
    keys += ["sample.steps", "sample.snr"]
    keys += [f"sample.{f.name}" for f in dataclasses.fields(exp.sample)]
    keys += [f"sample.{n}.<field>" for n in exp.sample.samplers] + ["sample.controlled.<field>"]
    keys += [f"eval.{f.name}" for f in dataclasses.fields(exp.eval)]
    keys += ["eval.trace.<field>", "eval.exact", "eval.n_probes"]
    keys += [f"quality.{f.name}" for f in dataclasses.fields(exp.quality)]
    return keys


def _order(item) -> int:
    key = canonical(item[0])
    return 0 if key.endswith(".kind") else 1 if key == "sample.samplers" else 2


def override(exp: Experiment, dotted: dict[str, str]) -> Experiment:
    """`exp` with `{"train.steps": "2000", ...}` applied; values are parsed by the fields'
    declared types and checked by the classes themselves. Unknown keys and bad values are
    ValueErrors that say what would be right."""
    for key, raw in sorted(dotted.items(), key=_order):
        try:
            exp = _apply(exp, canonical(key), raw, key)
        except KeyError:
            raise ValueError(_unknown_key(exp, key)) from None
    return exp


def _unknown_key(exp: Experiment, key: str) -> str:
    """What to say about an unknown key: how to add a sampler the experiment lacks, else the
    valid keys of its section (all of them for an unknown section)."""
    section, _, rest = canonical(key).partition(".")
    head, dot, _ = rest.partition(".")
    have = list(exp.sample.samplers)
    if section == "sample" and dot and head not in have and head != "controlled":
        if head in SAMPLERS:
            return (
                f"{exp.name} has no sampler {head!r} (its samplers: {', '.join(have)}); add it "
                f"with --sample.samplers {','.join([*have, head])} (then --{key} applies)."
            )
        return f"unknown sampler {head!r} in {key!r}; samplers: {', '.join(have)}."
    keys = valid_keys(exp)
    prefix = {"net": "model"}.get(section, section) + "."
    same = [k for k in keys if k.startswith(prefix)] or keys
    return (
        f"unknown config key {key!r}; valid keys: {', '.join(same)} (every setting with its "
        f"value: python main.py --experiment {exp.name} --help)."
    )


def settings(exp: Experiment) -> dict[str, object]:
    """Every setting of `exp` an override may change, as `{dotted key: current value}`: what
    `python main.py --experiment NAME --help` lists."""
    out: dict[str, object] = {
        f"data.{k}": v for k, v in exp.data.config_fields().items() if k != "name"
    }
    kind = {v: k for k, v in _SDE_KINDS.items()}.get(type(exp.sde), type(exp.sde).__name__)
    out["sde.kind"] = kind
    out.update({f"sde.{k}": v for k, v in fields_of(exp.sde).items()})
    net_kind = {v: k for k, v in _NET_KINDS.items()}.get(exp.net.cls.__name__)
    out["model.kind"] = net_kind or exp.net.cls.__name__
    out.update({f"model.{k}": v for k, v in exp.net.config_fields().items() if k != "cls"})
    out.update({f"loss.{k}": v for k, v in fields_of(exp.loss).items() if k not in _LOSS_FROM_DATA})
    out.update({f"optimizer.{k}": v for k, v in fields_of(exp.optimizer).items()})
    out.update({f"train.{k}": v for k, v in fields_of(exp.train).items()})
    for f in dataclasses.fields(exp.sample):
        value = getattr(exp.sample, f.name)
        if f.name == "samplers":
            out["sample.samplers"] = ",".join(value)
            for name, sampler in value.items():
                out.update({f"sample.{name}.{k}": v for k, v in fields_of(sampler).items()})
        elif f.name == "controlled":
            out.update({f"sample.controlled.{k}": v for k, v in fields_of(value).items()})
        else:
            out[f"sample.{f.name}"] = value
    for f in dataclasses.fields(exp.eval):
        value = getattr(exp.eval, f.name)
        if f.name == "trace":
            out.update({f"eval.trace.{k}": v for k, v in fields_of(value).items()})
        else:
            out[f"eval.{f.name}"] = value
    out.update({f"quality.{k}": v for k, v in fields_of(exp.quality).items()})
    return out


def _set(obj, name: str, raw: str, where: str, *, hints=None):
    hints = field_hints(obj) if hints is None else hints
    if name not in fields_of(obj):
        raise KeyError(name)
    value = parse_value(raw, hints.get(name), where)
    try:
        return _rebuild(obj, **{name: value})
    except (ValueError, TypeError) as e:
        raise ValueError(f"bad value {raw!r} for {where}: {e}") from None


def _apply(exp: Experiment, key: str, raw: str, given: str) -> Experiment:
    section, _, name = key.partition(".")
    if not name:
        raise KeyError(key)
    replace = lambda **kw: dataclasses.replace(exp, **kw)  # noqa: E731
    if section == "sde":
        if name == "kind":
            cls = _SDE_KINDS.get(raw)
            if cls is None:
                raise ValueError(
                    f"bad value {raw!r} for sde.kind: expected one of {tuple(_SDE_KINDS)}"
                )
            shared = {
                k: v
                for k, v in fields_of(exp.sde).items()
                if k in {f.name for f in dataclasses.fields(cls)}
            }
            return replace(sde=cls(**shared))
        return replace(sde=_set(exp.sde, name, raw, given))
    if section == "net":
        if name == "kind":
            if raw not in _NET_KINDS:
                raise ValueError(
                    f"bad value {raw!r} for model.kind: expected one of {tuple(_NET_KINDS)}"
                )
            cls = registered(_NET_KINDS[raw])
            if cls is exp.net.cls:
                return exp
            kept = {k: v for k, v in exp.net.kwargs.items() if k in Net._parameters(cls)}
            return replace(net=Net(cls, conditional=exp.net.conditional, **kept))
        return replace(net=_set(exp.net, name, raw, given, hints=exp.net.config_hints()))
    if section == "data":
        if name == "name":
            raise KeyError(key)
        return replace(data=_set(exp.data, name, raw, given, hints=exp.data.config_hints()))
    if section == "loss":
        if name in _LOSS_FROM_DATA:
            raise KeyError(key)
        return replace(loss=_set(exp.loss, name, raw, given))
    if section == "optimizer":
        return replace(optimizer=_set(exp.optimizer, name, raw, given))
    if section == "eval":
        return replace(eval=_apply_eval(exp.eval, name, raw, given))
    if section == "train":
        head, dot, rest = name.partition(".")
        if dot and head == "posthoc_ema":  # --train.posthoc_ema.snapshot_every 100
            inner = exp.train.posthoc_ema or PostHocEMA()
            return replace(
                train=dataclasses.replace(exp.train, posthoc_ema=_set(inner, rest, raw, given))
            )
        return replace(train=_set(exp.train, name, raw, given))
    if section == "sample":
        return replace(sample=_apply_sample(exp.sample, name, raw, given))
    if section == "quality":
        return replace(quality=_set(exp.quality, name, raw, given))
    raise KeyError(key)


def _apply_sample(s: Sample, name: str, raw: str, given: str) -> Sample:
    if name == "samplers":
        names = raw.replace(",", " ").split()
        unknown = [n for n in names if n not in s.samplers and n not in SAMPLERS]
        if unknown or not names:
            raise ValueError(
                f"unknown samplers {unknown}; choose from "
                f"{sorted(set(SAMPLERS) | set(s.samplers))}."
            )
        chosen = {n: s.samplers[n] if n in s.samplers else SAMPLERS[n]() for n in names}
        return dataclasses.replace(s, samplers=chosen)
    if (keys := legacy_sampler_keys(name, s.samplers)) is not None:
        for key in keys:
            s = _apply_sample(s, key, raw, given)
        return s
    head, dot, rest = name.partition(".")
    if dot:
        if head == "controlled":
            return dataclasses.replace(s, controlled=_set(s.controlled, rest, raw, given))
        if head not in s.samplers:
            raise KeyError(name)
        new = _set(s.samplers[head], rest, raw, given)
        return dataclasses.replace(s, samplers={**s.samplers, head: new})
    if name == "controlled" or name not in {f.name for f in dataclasses.fields(s)}:
        raise KeyError(name)
    return _set(s, name, raw, given)


def _apply_eval(e: Eval, name: str, raw: str, given: str) -> Eval:
    if name in ("exact", "n_probes"):
        value = parse_value(raw, bool if name == "exact" else int, given)
        return dataclasses.replace(e, trace=legacy_trace(name, value, e.trace))
    head, dot, rest = name.partition(".")
    if dot and head == "trace":
        return dataclasses.replace(e, trace=_set(e.trace, rest, raw, given))
    return _set(e, name, raw, given)


def _leaves(exp: Experiment) -> dict:
    """Every setting of `exp` as `{dotted key: value}` (for comparing configurations)."""
    out = {f"data.{k}": v for k, v in exp.data.config_fields().items()}
    out.update({f"sde.{k}": v for k, v in fields_of(exp.sde).items()})
    out["sde.kind"] = type(exp.sde).__name__
    out.update({f"net.{k}": v for k, v in exp.net.config_fields().items()})
    for section in ("loss", "optimizer", "train"):
        out.update({f"{section}.{k}": v for k, v in fields_of(getattr(exp, section)).items()})
    return out


def refused_changes(saved: Experiment, new: Experiment) -> list[str]:
    """The settings in which `new` differs from `saved` that an existing run cannot take: those
    that change the model, SDE, data or optimizer (sampling, evaluation and training length
    may change)."""
    a, b = _leaves(saved), _leaves(new)
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return [k for k in changed if k not in RUN_SETTINGS]


def training_changes(saved: Experiment, new: Experiment) -> dict:
    """The run settings (training length, cadences) in which `new` differs from `saved`."""
    a, b = _leaves(saved), _leaves(new)
    return {k: b[k] for k in RUN_SETTINGS if a.get(k) != b.get(k)}


def model_fingerprint(exp: Experiment) -> str:
    """A hash of everything that decides the trained model (all but the run settings,
    sampling and evaluation): a checkpoint records it, and resuming checks it. Computed on
    the configuration as `config.json` holds it (`written_fingerprint`)."""
    return written_fingerprint(to_json(exp))


def written_fingerprint(data: dict) -> str:
    """The fingerprint of the experiment a `config.json` holds, on the JSON as it was written:
    a run keeps its fingerprint when a later version adds fields with defaults (or reads it
    with new ones, as `sgm._compat.upgrade_config` does)."""
    leaves = {}
    for section in ("data", "sde", "net", "loss", "optimizer", "train"):
        fields = {k: v for k, v in data[section].items() if k != "__class__"}
        leaves.update({f"{section}.{k}": v for k, v in fields.items()})
    leaves["sde.kind"] = data["sde"]["__class__"]
    return fingerprint({k: v for k, v in sorted(leaves.items()) if k not in RUN_SETTINGS})


def apply_settings(exp: Experiment, settings: dict) -> Experiment:
    """`exp` with run settings `{"train.steps": 300, ...}` (values, not strings) applied."""
    for key, value in settings.items():
        if key not in RUN_SETTINGS:
            raise ValueError(f"{key!r} is not a setting a run may change; one of {RUN_SETTINGS}.")
        section, _, name = key.partition(".")
        sub = getattr(exp, section)
        exp = dataclasses.replace(exp, **{section: _rebuild(sub, **{name: value})})
    return exp
