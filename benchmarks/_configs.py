"""Training configurations compared by `train_quality.py`, each built into sgm objects by
`build`: the library's defaults, the defaults before issue 15 (`issue`), and the one-change
ablations behind each new default (README, "Training defaults")."""

import jax.random as jr
import optax

import sgm

# net: keywords of the network (MLP for vectors, UNet or, with kind="dit", DiT for images);
# model: of ScoreModel; loss: of DSMLoss; opt: None for optax.adam(lr), else keywords of
# sgm.Adam (warm-up 100; decay=True for a cosine decay over the run); deq: "uniform" or
# "variational" dequantization of integer images in training; ema: the EMA decay; sde:
# "learned" replaces the target's SDE by a `LearnedVPSDE` with the same end points,
# "rectified" by `sgm.RectifiedFlow()`; fm: keywords of `FlowMatchingLoss`, which then
# replaces `DSMLoss`.
_DEFAULTS = {"net": {}, "model": {}, "loss": {}, "opt": {"decay": True}, "lr": 1e-3, "ema": 0.999}

# What the defaults were before issue 15, spelled out.
_OLD_NET = {"width": 256, "depth": 4, "fourier_scale": 16.0}
_OLD = {
    "net": _OLD_NET,
    "model": {"preconditioning": sgm.NoisePrediction()},
    "loss": {"weighting": "sigma2"},
    "opt": None,
}
_SMALL = {"width": 128, "depth": 3, "fourier_scale": 16.0}
_EDM = {"preconditioning": sgm.EDMPreconditioning()}
_LN = {"weighting": "sigma2", "time_density": "lognormal"}
_KARRAS = {"weighting": "edm"}
_LIK = {"weighting": "likelihood", "importance_sampling": True}


def _old(**changes):
    return {**_OLD, **changes}


_FM = {"sde": "rectified", "model": {"preconditioning": sgm.VelocityPrediction()}}

CONFIGS = {
    # The library's defaults, with sgm.Adam(1e-3, warmup=100, decay=True).
    "default": {},
    "default_const_lr": {"opt": None},
    # Issue 15's measurement: sgm.nets.MLP and the loss as they were, Adam 1e-3, EMA 0.999.
    "issue": _old(),
    # One change at a time, from the old defaults with the smaller MLP.
    "small": _old(net=_SMALL),
    "small_edm": _old(net=_SMALL, model=_EDM),
    "small_edm_lognormal": _old(net=_SMALL, model=_EDM, loss=_LN),
    "small_edm_karras": _old(net=_SMALL, model=_EDM, loss=_KARRAS),
    "small_edm_karras_uniform": _old(
        net=_SMALL, model=_EDM, loss={**_KARRAS, "time_density": "uniform"}
    ),
    "small_edm_karras_cosine": _old(net=_SMALL, model=_EDM, loss=_KARRAS, opt={"decay": True}),
    "small_edm_lognormal_cosine": _old(net=_SMALL, model=_EDM, loss=_LN, opt={"decay": True}),
    "small_edm_karras_f1": _old(net={**_SMALL, "fourier_scale": 1.0}, model=_EDM, loss=_KARRAS),
    "small_edm_karras_ema9999": _old(net=_SMALL, model=_EDM, loss=_KARRAS, ema=0.9999),
    "small_edm_karras_pmean06": _old(net=_SMALL, model=_EDM, loss={**_KARRAS, "p_mean": -0.6}),
    "big_edm_karras": _old(model=_EDM, loss=_KARRAS),
    # MNIST (UNet of mnist_vp): mnist_vp's settings (old defaults, lr 1e-3, 100 warm-up
    # steps, clip 1, no decay), then the changes for likelihood.
    "mnist_vp_old": _old(opt={"warmup": 100}),
    "mnist_old_dequant": _old(opt={"warmup": 100}, deq="uniform"),
    "mnist_old_likelihood": _old(opt={"warmup": 100}, deq="uniform", loss=_LIK),
    # DiT beside the UNet (defaults otherwise) at about the UNet's parameters: 542k against
    # 526k on the digits, 785k against 810k on MNIST.
    "dit_digits": {"net": {"kind": "dit", "hidden": 84, "depth": 4, "patch_size": 2}},
    "dit_mnist": {"net": {"kind": "dit", "hidden": 100, "depth": 4, "patch_size": 2}},
    "dequant": {"deq": "uniform"},
    "likelihood": {"deq": "uniform", "loss": _LIK},
    "variational": {"deq": "variational", "loss": _LIK},
    # flow matching on the rectified-flow path (velocity prediction, defaults otherwise):
    # independent pairs, minibatch OT (exact assignment), logit-normal times
    "fm": {**_FM, "fm": {}},
    "fm_ot": {**_FM, "fm": {"coupling": sgm.ExactOTCoupling()}},
    "fm_logit_normal": {**_FM, "fm": {"time_density": "logit_normal"}},
    # a learned noise schedule (VDM), trained by the bound with times uniform in t
    "vdm": {
        "sde": "learned",
        "deq": "uniform",
        "loss": {"weighting": "likelihood", "time_sampling": "antithetic"},
    },
}


def build(name: str, sde, shape, total_steps: int, key):
    """`(model, loss, optimizer, ema_decay)` of configuration `name` for data of `shape`; the
    model's SDE is `sde` unless the configuration learns its own (`model.sde`)."""
    cfg = {**_DEFAULTS, **CONFIGS[name]}
    net_kw = dict(cfg["net"])
    if len(shape) == 1:
        net = sgm.nets.MLP(shape, key=key, **net_kw)
    elif net_kw.pop("kind", "unet") == "dit":
        net = sgm.nets.DiT(shape, key=key, **net_kw)
    else:
        small = shape[-1] <= 8  # the digits: two levels, as digits_vp
        kw = {
            "channels": 32,
            "channel_mults": (1, 2) if small else (1, 2, 2),
            "attention_levels": (1,) if small else (2,),
        }
        net_kw.pop("width", None), net_kw.pop("depth", None)
        net = sgm.nets.UNet(shape, key=key, **{**kw, **net_kw})
    model_kw = dict(cfg["model"])
    if cfg.get("deq") == "uniform":
        model_kw["dequantizer"] = sgm.UniformDequantizer()
    elif cfg.get("deq") == "variational":
        model_kw["dequantizer"] = sgm.VariationalDequantizer(shape, key=jr.fold_in(key, 1))
    if cfg.get("sde") == "learned":
        sde = sgm.LearnedVPSDE(
            log_snr_max=float(sde.log_snr(sde.t0)),
            log_snr_min=float(sde.log_snr(sde.t1)),
            t0=sde.t0,
            t1=sde.t1,
        )
    if cfg.get("sde") == "rectified":
        sde = sgm.RectifiedFlow()
    model = sgm.ScoreModel(net, sde, **model_kw)
    loss = sgm.FlowMatchingLoss(**cfg["fm"]) if "fm" in cfg else sgm.DSMLoss(**cfg["loss"])
    if cfg["opt"] is None:
        optimizer = optax.adam(cfg["lr"])
    else:
        optimizer = sgm.Adam(cfg["lr"], **{"warmup": 100, **cfg["opt"]}).transform(total_steps)
    return model, loss, optimizer, cfg["ema"]
