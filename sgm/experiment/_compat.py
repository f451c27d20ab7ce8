"""Runs of earlier versions, in one place: reading their `config.json` and their command-line
keys. Removed in sgm 0.3 (with the library's deprecated keywords in `sgm._compat`; the library
cannot import this application layer, hence the second module).

- `from_legacy`: the flat format before configurations were the library's objects (sections
  `data`, `sde`, `model`, `train`, `sample`, `eval` with `kind` switches).
- `before_preconditioning`: configurations written before networks recorded a
  preconditioning.
- `OVERRIDE_ALIASES`, `SECTION_ALIASES`: dotted keys of earlier configurations.
"""

from .._losses import DSMLoss
from .._optimizer import Adam
from .._samplers import EulerMaruyama, PredictorCorrector
from .._score import NoisePrediction
from .._sde import VESDE, VPSDE, SubVPSDE
from .._trace import Exact, Hutchinson
from ._experiment import SAMPLERS, Data, Eval, Experiment, Net, Sample, Train
from ._serial import registered

# What the earlier `build_model` passed to each network (the rest were the class defaults).
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


def from_legacy(d: dict) -> Experiment:
    """The `Experiment` an earlier `config.json` describes; a ValueError says what could not be
    read."""
    try:
        data, sde, model, train = d["data"], d["sde"], d["model"], d["train"]
        sample, ev = d.get("sample", {}), d.get("eval", {})
        options = {}
        if data["name"] == "flowers":
            options["resolution"] = data["resolution"]
        if data["name"] in ("ou", "ou_theta"):
            options["length"] = data["series_length"]
        if sde["kind"] == "ve":
            sde_obj = VESDE(sigma_min=sde["sigma_min"], sigma_max=sde["sigma_max"])
        else:
            family = VPSDE if sde["kind"] == "vp" else SubVPSDE
            sde_obj = family(
                beta_min=sde["beta_min"],
                beta_max=sde["beta_max"],
                schedule=sde.get("schedule", "linear"),
            )
        cls, names = _NET_ARGS[model["kind"]]
        kwargs = {n: tuple(model[n]) if isinstance(model[n], list) else model[n] for n in names}
        steps, snr = sample.get("steps", 1000), sample.get("snr", 0.16)
        samplers = {}
        for name in sample.get("samplers", ("em", "pc", "ode")):
            if name == "em":
                samplers[name] = EulerMaruyama(steps=steps)
            elif name == "pc":
                samplers[name] = PredictorCorrector(steps=steps, snr=snr)
            else:  # the earlier fixed choices of the fast solvers
                fixed = {"dpm": {"steps": 20}, "heun": {"steps": 18}, "unipc": {"steps": 20}}
                samplers[name] = SAMPLERS[name](**fixed.get(name, {}))
        return Experiment(
            name=d["name"],
            description=d.get("description", ""),
            budget=d.get("budget", ""),
            data=Data(
                data["name"],
                n_train=data.get("n_train"),
                n_test=data.get("n_test"),
                lowres_factor=data.get("lowres_factor"),
                **options,
            ),
            sde=sde_obj,
            # Then every network predicted the noise, conditioned on t through Fourier
            # features of scale 16.
            net=Net(
                registered(cls),
                conditional=model.get("conditional", False),
                preconditioning=NoisePrediction(),
                fourier_scale=16.0,
                **kwargs,
            ),
            loss=DSMLoss(
                weighting=train.get("weighting", "sigma2"),
                importance_sampling=train.get("importance_sampling", False),
            ),
            optimizer=Adam(lr=train["lr"], warmup=train["warmup"], grad_clip=train["grad_clip"]),
            train=Train(
                steps=train["steps"],
                batch_size=train["batch_size"],
                ema_decay=train["ema_decay"],
                label_dropout=train.get("label_dropout", 0.1),
                log_every=train["log_every"],
                eval_every=train["eval_every"],
                checkpoint_every=train["checkpoint_every"],
                seed=train["seed"],
            ),
            sample=Sample(
                samplers=samplers,
                n_samples=sample.get("n_samples", 64),
                controlled=EulerMaruyama(steps=sample.get("inpaint_steps", 200)),
                **{
                    k: sample[k]
                    for k in (
                        "inpaint_particles",
                        "inpaint_method",
                        "guidance_scale",
                        "classifier_scale",
                        "classifier_steps",
                        "classifier_batch_size",
                        "classifier_lr",
                        "classifier_width",
                    )
                    if k in sample
                },
            ),
            eval=Eval(
                trace=Exact() if ev.get("exact") else Hutchinson(n_probes=ev.get("n_probes", 1)),
                **{k: ev[k] for k in ("n_images", "n_dequant", "batch_size") if k in ev},
            ),
        )
    except (KeyError, TypeError) as e:
        raise ValueError(
            f"a configuration of an earlier version that cannot be read (missing or bad {e}); "
            "its model can still be loaded with eqx.tree_deserialise_leaves and the network it "
            "names."
        ) from e


def before_preconditioning(data: dict) -> dict:
    """A configuration written before networks had a preconditioning names none: its
    network predicted the noise (`NoisePrediction`) from Fourier features of scale 16, the
    defaults then, which it did not record either."""
    net = data.get("net")
    if isinstance(net, dict) and "preconditioning" not in net:
        data = {
            **data,
            "net": {
                "preconditioning": {"__class__": "NoisePrediction"},
                "fourier_scale": 16.0,
                **net,
            },
        }
    return data


# Dotted keys of earlier configurations and what they stand for now.
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
