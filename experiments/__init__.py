"""One named experiment per module, each defining `EXPERIMENT`, an `Experiment` made of the
library's own objects. `EXPERIMENTS[name]`; `python main.py --list` prints them.

Modules are discovered: a new file here that defines `EXPERIMENT` is an experiment, with no
edit to this file. The order is `ORDER` (the built-ins), then the others alphabetically."""

import importlib
import pkgutil

ORDER = (
    "digits_vp",
    "mnist_ve",
    "mnist_vp",
    "mnist_subvp",
    "cifar10_vp",
    "cifar10_ve",
    "flowers_ve",
    "moons_vp",
    "eight_gaussians_ve",
    "ou_vp",
    "ou_theta_vp",
    "digits_sr_vp",
    "digits_dit_vp",
    "mnist_dit_vp",
    "mnist_vp_likelihood",
    "mnist_vdm",
)


def _modules() -> list[str]:
    found = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    return [m for m in ORDER if m in found] + [m for m in found if m not in ORDER]


def _discover() -> dict:
    experiments = {}
    for module in _modules():
        exp = getattr(importlib.import_module(f"{__name__}.{module}"), "EXPERIMENT", None)
        if exp is None:
            continue
        if exp.name in experiments:
            raise ValueError(f"experiments/{module}.py: a second experiment named {exp.name!r}.")
        experiments[exp.name] = exp
    return experiments


EXPERIMENTS = _discover()
