"""What the phases of the main job write besides their numbers: samples and their figures in
data units, the loss history, and the error a phase raises when it does not apply to a run."""

import numpy as np

from .._io import write_json
from .._training import checkpoint_meta
from ..data import Dataset
from ..distributed import is_main
from . import plot
from ._run import HISTORY, RunDir


class PhaseError(ValueError):
    """A mode that does not apply to this run or its data."""


def to_unit(ds: Dataset, x):
    """Samples in model scale back to data units (the dataset's inverse scaler): `[0, 1]`
    intensities for images, the original units for series and standardised data."""
    return np.asarray(ds.scaler.inverse(x)) if ds.scaler is not None else np.asarray(x)


def save_sample_arrays(ds: Dataset, x, path, y=None) -> None:
    """Writes samples to `path` (`.npz`): `x` in data units (`to_unit`), `x_model` as the
    network produced them, and `y`, what they were drawn given (when conditional)."""
    if not is_main():  # process 0 alone writes files
        return
    x_data, x_model = to_unit(ds, x).astype(np.float32), np.asarray(x)
    if y is None:
        np.savez(path, x=x_data, x_model=x_model)
    else:
        np.savez(path, x=x_data, x_model=x_model, y=np.asarray(y))


def save_history(run: RunDir, history: dict | None = None) -> None:
    """Writes `history.json` and `loss.png`: `history`, or the newest checkpoint's."""
    if not is_main():  # process 0 alone writes files
        return
    if history is None:
        try:
            history = checkpoint_meta(run.checkpoint_dir).get("history")
        except ValueError:
            return
    if history and history["step"]:
        write_json(run.path / HISTORY, history)
        plot.save_loss_curve(history, run.path / "loss.png")


def save_samples(ds: Dataset, x, path, title: str) -> None:
    if not is_main():  # process 0 alone writes files
        return
    if len(ds.data_shape) == 3:
        plot.save_image_grid(to_unit(ds, x), path, title=title)
    elif ds.data_shape == (2,):
        plot.save_scatter(x, path, reference=ds.test[:2000], title=title, lim=2.5)
    else:
        plot.save_series(
            np.asarray(x).reshape(len(x), -1),
            path,
            title=title,
            reference=ds.test.reshape(len(ds.test), -1),
        )


def save_conditional(ds, x, y, path, title):
    """Figures of samples drawn given parameters or maps (classes use the sample grid)."""
    if not is_main():
        return
    if ds.condition == "map":
        k = min(8, len(x))
        idx = np.arange(k) % len(ds.test)
        rows = np.concatenate([np.asarray(y[:k]), np.asarray(x[:k]), ds.test[idx]])
        plot.save_image_grid(
            to_unit(ds, rows), path, ncol=k, title=f"{title}\nrows: condition, sample, truth"
        )
    elif ds.condition == "vector" and len(ds.data_shape) == 2 and y.shape[1] == 1:
        lag1 = lambda s: np.sum(s[:, 1:] * s[:, :-1], 1) / np.sum(s[:, :-1] ** 2, 1)  # noqa: E731
        flat = lambda a: np.asarray(a).reshape(len(a), -1)  # noqa: E731
        plot.save_parameter_response(
            np.asarray(y[:, 0]),
            lag1(flat(x)),
            path,
            reference=(ds.test_cond[:, 0], lag1(flat(ds.test))),
            xlabel="conditioning parameter y[0]",
            ylabel="lag-1 autocorrelation",
            title=title,
        )
