"""Experiments defined in a user's own Python file (`main.py --experiment my_experiment.py`)."""

import importlib.util
import sys
from pathlib import Path

from ._experiment import Experiment


def is_experiment_file(spec: str) -> bool:
    """Whether `--experiment spec` names a file (`*.py`, or a path) rather than a built-in."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def experiment_from_file(path: str | Path) -> Experiment:
    """The `EXPERIMENT` a Python file defines, run as a module of its own (its folder first
    on `sys.path` while it runs, so that it may import its neighbours)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"experiment file {path} does not exist; check the path.")
    module_name = f"_sgm_experiment_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path} cannot be imported as a Python module; name it *.py.")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except (ValueError, TypeError) as e:  # an experiment's own checks
        raise ValueError(f"{path}: {e}") from None
    finally:
        sys.path.remove(str(path.parent))
    exp = getattr(module, "EXPERIMENT", None)
    if not isinstance(exp, Experiment):
        found = "nothing" if exp is None else f"a {type(exp).__name__}"
        raise ValueError(
            f"{path} must define EXPERIMENT = sgm.experiment.Experiment(...); it defines "
            f"{found} under that name."
        )
    return exp
