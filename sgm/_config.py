"""Typed, frozen experiment configurations and the one path from a config to objects."""

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Literal

from ._fast_samplers import DPMSolver, HeunSampler, UniPC
from ._losses import DSMLoss
from ._samplers import AbstractSampler, EulerMaruyama, PredictorCorrector, ProbabilityFlowODE
from ._score import ScoreModel
from ._sde import VESDE, VPSDE, AbstractSDE, SubVPSDE


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"
    n_train: int | None = None  # None: all
    n_test: int | None = None
    resolution: int = 64  # flowers only
    series_length: int = 64  # ou, ou_theta
    lowres_factor: int | None = None  # images: condition on block means (super-resolution)


@dataclass(frozen=True)
class SDEConfig:
    kind: Literal["vp", "subvp", "ve"] = "vp"
    beta_min: float = 0.1
    beta_max: float = 20.0
    schedule: Literal["linear", "cosine"] = "linear"
    sigma_min: float = 0.01
    sigma_max: float = 50.0


@dataclass(frozen=True)
class ModelConfig:
    kind: Literal["unet", "mlp", "dit"] = "unet"
    channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (2,)
    num_groups: int = 8
    dropout: float = 0.0
    width: int = 256  # mlp
    depth: int = 4  # mlp, dit
    hidden: int = 128  # dit
    patch_size: int = 2  # dit
    # Condition on what the dataset carries: its parameter vectors or maps when it has them
    # (Dataset.train_cond), else its class labels (with label dropout: classifier-free guidance).
    conditional: bool = False


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-4
    warmup: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    weighting: Literal["sigma2", "likelihood"] = "sigma2"
    importance_sampling: bool = False
    label_dropout: float = 0.1
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 500
    seed: int = 0


@dataclass(frozen=True)
class SampleConfig:
    n_samples: int = 64
    samplers: tuple[str, ...] = ("em", "pc", "ode")
    steps: int = 1000
    snr: float = 0.16
    guidance_scale: float = 1.0  # classifier-free guidance for --mode classes
    classifier_scale: float = 3.0  # classifier guidance for --mode guided
    classifier_steps: int = 2000  # --mode guided: the time-dependent classifier's training
    classifier_batch_size: int = 128
    classifier_lr: float = 2e-3
    classifier_width: int = 32
    inpaint_steps: int = 200
    inpaint_particles: int = 8
    inpaint_method: Literal["smc", "replace"] = "smc"


@dataclass(frozen=True)
class EvalConfig:
    n_images: int = 64
    exact: bool = False
    n_probes: int = 1
    n_dequant: int = 1
    batch_size: int = 32


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: where the data come from, the SDE, the network, and the budgets."""

    name: str
    description: str
    budget: str  # the measured CPU budget behind its defaults
    data: DataConfig = field(default_factory=DataConfig)
    sde: SDEConfig = field(default_factory=SDEConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ExperimentConfig":
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in d.items():
            section = sections.get(key)
            if isinstance(section, type) and dataclasses.is_dataclass(section):
                kwargs[key] = section(**{k: _coerce(section, k, v) for k, v in value.items()})
            else:
                kwargs[key] = value
        return cls(**kwargs)

    def override(self, dotted: dict[str, str]) -> "ExperimentConfig":
        """`{"train.steps": "2000", ...}` -> a new config; values are parsed by field type and
        unknown keys are an error that lists the valid ones."""
        cfg = self
        for key, raw in dotted.items():
            section, _, name = key.partition(".")
            valid = sorted(valid_keys(self))
            sub = getattr(cfg, section, None) if name else None
            if sub is None or not dataclasses.is_dataclass(sub) or name not in _field_names(sub):
                raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(valid)}.")
            value = _parse(type(sub), name, raw)
            cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(sub, **{name: value})})
        return cfg


def _field_names(dc) -> set[str]:
    return {f.name for f in dataclasses.fields(dc)}


def valid_keys(cfg: ExperimentConfig) -> list[str]:
    out = []
    for f in dataclasses.fields(cfg):
        sub = getattr(cfg, f.name)
        if dataclasses.is_dataclass(sub):
            out += [f"{f.name}.{n}" for n in _field_names(sub)]
    return out


def _coerce(section: type, name: str, value):
    hint = typing.get_type_hints(section)[name]
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        return tuple(value)
    return value


def _parse(section: type, name: str, raw: str):
    """Parses a command-line string into the field's declared type."""
    hint = typing.get_type_hints(section)[name]
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if raw.lower() == "none" and type(None) in options:
        return None
    base = next(o for o in options if o is not type(None))
    try:
        if typing.get_origin(base) is Literal:
            if raw not in typing.get_args(base):
                raise ValueError(f"expected one of {typing.get_args(base)}")
            return raw
        if typing.get_origin(base) is tuple:
            item = typing.get_args(base)[0]
            return tuple(item(p) for p in raw.replace(",", " ").split())
        if base is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError("expected true or false")
            return raw.lower() in ("true", "1")
        return base(raw)
    except ValueError as e:
        raise ValueError(f"bad value {raw!r} for {section.__name__}.{name}: {e}") from None


def build_sde(cfg: SDEConfig) -> AbstractSDE:
    if cfg.kind == "ve":
        return VESDE(sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max)
    family = VPSDE if cfg.kind == "vp" else SubVPSDE
    return family(beta_min=cfg.beta_min, beta_max=cfg.beta_max, schedule=cfg.schedule)


def conditioning(cfg: ModelConfig, num_classes, cond_shape) -> dict:
    """The network keywords of a model conditioned as `cfg` asks on data carrying
    `num_classes` labels or conditioning inputs of shape `cond_shape` (those win)."""
    if not cfg.conditional:
        return {}
    if cond_shape is not None:
        if len(cond_shape) == 1:
            return {"cond_dim": cond_shape[0]}
        if cfg.kind != "unet":
            raise ValueError(f"conditioning on maps {cond_shape} needs model.kind unet, "
                             f"not {cfg.kind!r}.")  # fmt: skip
        return {"cond_channels": cond_shape[0]}
    if num_classes is None:
        raise ValueError("model.conditional needs data with labels, parameters or maps; this "
                         "dataset has none.")  # fmt: skip
    return {"num_classes": num_classes}


def build_model(
    cfg: ModelConfig,
    sde: AbstractSDE,
    data_shape: tuple[int, ...],
    num_classes,
    *,
    key,
    cond_shape: tuple[int, ...] | None = None,
) -> ScoreModel:
    from . import nets

    cond = conditioning(cfg, num_classes, cond_shape)
    if cfg.kind == "mlp":
        net = nets.MLP(data_shape, key=key, width=cfg.width, depth=cfg.depth, **cond)
    elif cfg.kind == "dit":
        net = nets.DiT(
            data_shape,
            key=key,
            patch_size=cfg.patch_size,
            hidden=cfg.hidden,
            depth=cfg.depth,
            dropout=cfg.dropout,
            **cond,
        )
    else:
        net = nets.UNet(
            data_shape,
            key=key,
            channels=cfg.channels,
            channel_mults=cfg.channel_mults,
            num_res_blocks=cfg.num_res_blocks,
            attention_levels=cfg.attention_levels,
            num_groups=cfg.num_groups,
            dropout=cfg.dropout,
            **cond,
        )
    return ScoreModel(net, sde)


def build_loss(cfg: TrainConfig, model_cfg: ModelConfig, num_classes, cond_shape=None) -> DSMLoss:
    """Label dropout (for classifier-free guidance) applies to class labels only."""
    conditional = model_cfg.conditional and num_classes is not None and cond_shape is None
    return DSMLoss(
        weighting=cfg.weighting,
        importance_sampling=cfg.importance_sampling,
        label_dropout=cfg.label_dropout if conditional else 0.0,
        null_label=num_classes if conditional else None,
    )


def build_samplers(cfg: SampleConfig) -> dict[str, AbstractSampler]:
    table = {
        "em": lambda: EulerMaruyama(steps=cfg.steps),
        "pc": lambda: PredictorCorrector(steps=cfg.steps, snr=cfg.snr),
        "ode": lambda: ProbabilityFlowODE(),
        "dpm": lambda: DPMSolver(steps=20),
        "heun": lambda: HeunSampler(steps=18),
        "unipc": lambda: UniPC(steps=20),
    }
    unknown = [s for s in cfg.samplers if s not in table]
    if unknown:
        raise ValueError(f"unknown samplers {unknown}; choose from {sorted(table)}.")
    return {name: table[name]() for name in cfg.samplers}
