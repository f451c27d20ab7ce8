"""Training configurations compared by `train_quality.py`: each a dict of network, model,
loss and optimizer settings, built into sgm objects by `build`."""

import optax

import sgm
from sgm._optim import adam

# Each entry: net (keywords of the network), model (of ScoreModel), loss (of DSMLoss),
# opt (None: optax.adam(lr); else keywords of sgm._optim.adam, with decay=True for a decay
# over the run's steps), lr, ema.
_BASE = {"net": {}, "model": {}, "loss": {}, "opt": None, "lr": 1e-3, "ema": 0.999}

CONFIGS = {
    # The measurement of issue 15: sgm.nets.MLP defaults, Adam 1e-3, EMA 0.999.
    "issue": {},
    "default": {},
    # Ablations (exploration of issue 15, item 2).
    "small": {"net": {"width": 128, "depth": 3}},
    "edm": {"model": {"preconditioning": sgm.EDMPreconditioning()}},
    "small_edm": {
        "net": {"width": 128, "depth": 3},
        "model": {"preconditioning": sgm.EDMPreconditioning()},
    },
    "small_edm_f1": {
        "net": {"width": 128, "depth": 3, "fourier_scale": 1.0},
        "model": {"preconditioning": sgm.EDMPreconditioning()},
    },
    "small_edm_w": {
        "net": {"width": 128, "depth": 3},
        "model": {"preconditioning": sgm.EDMPreconditioning()},
        "loss": {"weighting": "edm"},
    },
    "small_edm_ln": {
        "net": {"width": 128, "depth": 3},
        "model": {"preconditioning": sgm.EDMPreconditioning()},
        "loss": {"weighting": "edm", "time_density": "lognormal"},
    },
    "small_f1": {"net": {"width": 128, "depth": 3, "fourier_scale": 1.0}},
}
_SMALL_EDM = {
    "net": {"width": 128, "depth": 3},
    "model": {"preconditioning": sgm.EDMPreconditioning()},
}
_SEL = {**_SMALL_EDM, "loss": {"weighting": "edm", "time_density": "lognormal"}}
CONFIGS.update(
    {
        "sel_s2": {**_SMALL_EDM, "loss": {"time_density": "lognormal"}},
        "sel_cos": {**_SEL, "opt": {"decay": True}},
        "sel_f1": {**_SEL, "net": {"width": 128, "depth": 3, "fourier_scale": 1.0}},
        "sel_big": {**_SEL, "net": {}},
        "sel_pm": {
            **_SEL,
            "loss": {"weighting": "edm", "time_density": "lognormal", "p_mean": -0.6},
        },
        "sel_ema9999": {**_SEL, "ema": 0.9999},
        "cand": {**_SMALL_EDM, "loss": {"time_density": "lognormal"}, "opt": {"decay": True}},
        "cand_w": {**_SEL, "opt": {"decay": True}},
        "cand_big": {
            **_SMALL_EDM,
            "net": {},
            "loss": {"time_density": "lognormal"},
            "opt": {"decay": True},
        },
        "se_cos": {**_SMALL_EDM, "opt": {"decay": True}},
        "se_cos_noclip": {**_SMALL_EDM, "opt": {"decay": True, "grad_clip": None}},
        "se_cos_lr3": {**_SMALL_EDM, "opt": {"decay": True}, "lr": 3e-3},
        "se_ema9999": {**_SMALL_EDM, "ema": 0.9999},
        "se_cos_ema99": {**_SMALL_EDM, "opt": {"decay": True}, "ema": 0.99},
    }
)


def build(name: str, sde, shape, total_steps: int, key):
    """`(model, loss, optimizer, ema_decay)` of configuration `name` for data of `shape`."""
    cfg = {**_BASE, **CONFIGS[name]}
    if len(shape) == 1:
        net = sgm.nets.MLP(shape, key=key, **cfg["net"])
    elif cfg["net"].get("kind") == "dit":
        net = sgm.nets.DiT(shape, key=key, **{k: v for k, v in cfg["net"].items() if k != "kind"})
    else:
        kw = {"channels": 32, "channel_mults": (1, 2, 2), "attention_levels": (2,)}
        if shape[-1] <= 8:
            kw.update(channel_mults=(1, 2), attention_levels=(1,))
        net = sgm.nets.UNet(shape, key=key, **{**kw, **cfg["net"]})
    model = sgm.ScoreModel(net, sde, **cfg["model"])
    loss = sgm.DSMLoss(**cfg["loss"])
    if cfg["opt"] is None:
        optimizer = optax.adam(cfg["lr"])
    else:
        opt = dict(cfg["opt"])
        if opt.pop("decay", False):
            opt["steps"] = total_steps
        optimizer = adam(cfg["lr"], **opt)
    return model, loss, optimizer, cfg["ema"]
