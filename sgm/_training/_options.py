"""The options of `sgm.train`, one small frozen object per concern (as diffrax's `SaveAt`):
where and how often to checkpoint, what to watch while training, the held-out evaluation.
Each validates its fields once, when it is built."""

import os
from pathlib import Path

import equinox as eqx
import numpy as np
from jaxtyping import ArrayLike

from .._checks import check_float, check_int, check_integer_images
from .._scaler import AbstractScaler, AffineScaler

BATCH_SIZE = 128
"""`sgm.train`'s default global batch."""

EMA_DECAY = 0.999
"""`sgm.train`'s default decay of the exponential moving average of the weights, the model
that Song et al. (2021, appendix H) sample from."""


def _as_path(value) -> Path:
    if not isinstance(value, str | os.PathLike):
        raise ValueError(f"Checkpoints.directory must be a path, got {type(value).__name__}.")
    return Path(value)


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r}.")


class Checkpoints(eqx.Module):
    """Checkpoints of the full train state (model, EMA, optimizer state, step, key), with the
    loss history so far: every `every` steps, at the end, and on SIGINT/SIGTERM. Each is
    written atomically and checksummed (`sgm.save_checkpoint`: the arrays through
    orbax-checkpoint); the newest `keep` are kept. A checkpoint resumes onto any device count.

    **Arguments:**

    - `directory`: the folder of the checkpoints (`directory/step_00001000/...`).
    - `every`: steps between checkpoints.
    - `keep`: how many of the newest checkpoints are kept.
    - `resume`: continue from the newest good checkpoint in `directory` (it must hold one);
      without, `directory` must hold none, so that no run is overwritten.
    - `fingerprint`: a hash of the run's configuration, recorded in each checkpoint; resuming
      from a checkpoint with another fingerprint is a `CheckpointError`.
    - `verify`: resume only from a checkpoint whose state files and metadata match their
      checksums (a `CheckpointError` otherwise); `False` accepts one without checksums, such
      as one written by an earlier version, as it is.
    - `asynchronous`: copy the state to host memory at the step and write it in the
      background while training goes on; the next checkpoint, the end of training, a stop
      request and an error wait for it. A crash during the write leaves the previous
      checkpoint.
    """

    directory: Path = eqx.field(converter=_as_path)
    every: int = eqx.field(default=500, kw_only=True)
    keep: int = eqx.field(default=2, kw_only=True)
    resume: bool = eqx.field(default=False, kw_only=True)
    fingerprint: str | None = eqx.field(default=None, kw_only=True)
    verify: bool = eqx.field(default=True, kw_only=True)
    asynchronous: bool = eqx.field(default=False, kw_only=True)

    def __check_init__(self):
        check_int("Checkpoints.every", self.every)
        check_int("Checkpoints.keep", self.keep)
        _check_bool("Checkpoints.resume", self.resume)
        _check_bool("Checkpoints.verify", self.verify)
        _check_bool("Checkpoints.asynchronous", self.asynchronous)
        if self.fingerprint is not None and not isinstance(self.fingerprint, str):
            raise ValueError(
                f"Checkpoints.fingerprint must be a string or None, got {self.fingerprint!r}."
            )


class HeldOutBound(eqx.Module):
    """The continuous-time variational bound on held-out examples, a cheap likelihood metric
    of training (Song et al. 2021, *Maximum Likelihood Training of Score-Based Diffusion
    Models*, theorem 2; Kingma et al. 2021, eq. 17): part of an `sgm.Evaluation`, read at its
    cadence on the EMA model. It costs one batch of `2 n_examples n_times` score evaluations
    and no ODE solve.

    With `images` (the integer form of `Evaluation.data`), the reading is
    `sgm.bits_per_dim(model, model.sde, images[:n_examples], key=jr.key(seed),
    num_bits=num_bits, scaler=scaler, method="bound", estimator="mean", n_times=n_times)`
    averaged over the images, in bits/dim (uniformly dequantized: an upper bound on the
    discrete data's bits/dim); its standard error is that of the mean over the images
    (`BitsPerDimInfo.sem`). Without, it is `sgm.variational_bound(model, model.sde,
    data[:n_examples], key=jr.key(seed), n_times=n_times)` divided by the dimension and
    averaged, in nats/dim of the model-scale data (a bound on a continuous density's
    `-log p / D`, which can be negative), with the standard error of that mean. Conditional
    models are given `Evaluation.labels[:n_examples]`. The examples and the key are fixed, so
    the readings are comparable over training and a resumed run repeats them exactly.

    **Arguments:**

    - `n_examples`: how many held-out examples (the first ones), at least 2.
    - `n_times`: importance-sampled times per example (each an antithetic pair of score
      evaluations), at least 2.
    - `images`: integer images in `[0, 2**num_bits)`, shaped like `Evaluation.data` (`None`:
      the bound in nats/dim on `Evaluation.data` itself).
    - `num_bits`: bits per pixel of `images`.
    - `scaler`: the elementwise map from `[0, 1]` to model scale (`sgm.AffineScaler()`,
      `[-1, 1]`, by default; an image dataset's `scaler`).
    - `seed`: the key `jr.key(seed)` of the dequantization noise, times and noises.
    """

    n_examples: int = eqx.field(default=64, kw_only=True)
    n_times: int = eqx.field(default=16, kw_only=True)
    images: ArrayLike | None = eqx.field(default=None, kw_only=True)
    num_bits: int = eqx.field(default=8, kw_only=True)
    scaler: AbstractScaler = eqx.field(default=AffineScaler(), kw_only=True)
    seed: int = eqx.field(default=0, kw_only=True)

    def __check_init__(self):
        check_int("HeldOutBound.n_examples", self.n_examples, minimum=2)
        check_int("HeldOutBound.n_times", self.n_times, minimum=2)
        check_int("HeldOutBound.num_bits", self.num_bits)
        check_int("HeldOutBound.seed", self.seed, minimum=0)
        if not isinstance(self.scaler, AbstractScaler):
            raise ValueError(
                "HeldOutBound.scaler must be an sgm scaler (e.g. sgm.AffineScaler()), got "
                f"{type(self.scaler).__name__}."
            )
        if self.images is not None:
            try:
                check_integer_images(self.images, self.num_bits)
            except ValueError as error:
                raise ValueError(f"HeldOutBound.{error}") from None

    @property
    def unit(self) -> str:
        """`"bits_per_dim"` with `images`, else `"nats_per_dim"`."""
        return "nats_per_dim" if self.images is None else "bits_per_dim"

    def protocol(self) -> dict:
        """What a reading is (JSON-ready): the bound's estimator and its settings, alongside
        the number in `metrics.json`."""
        out = {
            "method": "bound",
            "estimator": "mean",
            "unit": self.unit,
            "n_examples": self.n_examples,
            "n_times": self.n_times,
            "seed": self.seed,
            "n_dequant": 1,
        }
        if self.images is not None:
            out.update(dequantizer="uniform", num_bits=self.num_bits)
        return out

    @property
    def keys(self) -> tuple[str, str]:
        """The history's keys of the readings and of their standard errors,
        `eval_bound_bits_per_dim(_se)` with `images`, else `eval_bound_nats_per_dim(_se)`."""
        return f"eval_bound_{self.unit}", f"eval_bound_{self.unit}_se"


class Evaluation(eqx.Module):
    """The held-out loss of the EMA model on one fixed batch (the first `batch_size` rows of
    `data`, with a fixed key, so that readings are comparable over training), every `every`
    steps and at the end; recorded in the history as `eval_step` and `eval_loss`. With
    `bound`, also the variational bound on the first held-out examples at the same steps
    (`sgm.HeldOutBound`; history keys `eval_bound_bits_per_dim` and
    `eval_bound_bits_per_dim_se` for images, `eval_bound_nats_per_dim(_se)` otherwise).

    **Arguments:**

    - `data`: held-out examples `(N, *data_shape)` in model scale.
    - `labels`: their labels, one per example, for conditional models.
    - `every`: steps between readings.
    - `bound`: an `sgm.HeldOutBound`, or `None` for the loss alone.
    """

    data: ArrayLike
    labels: ArrayLike | None = eqx.field(default=None, kw_only=True)
    every: int = eqx.field(default=500, kw_only=True)
    bound: HeldOutBound | None = eqx.field(default=None, kw_only=True)

    def __check_init__(self):
        check_int("Evaluation.every", self.every)
        shape = np.shape(self.data)
        if len(shape) < 2 or shape[0] < 1:
            raise ValueError(f"Evaluation.data must be a batch (N, *data_shape), got {shape}.")
        n_labels = None if self.labels is None else np.shape(self.labels)[0]
        if n_labels is not None and n_labels != shape[0]:
            raise ValueError(
                f"Evaluation.labels must have one entry per example: {n_labels} labels "
                f"for {shape[0]} examples."
            )
        if self.bound is not None:
            self._check_bound(shape)

    def _check_bound(self, shape) -> None:
        bound = self.bound
        if not isinstance(bound, HeldOutBound):
            raise ValueError(
                f"Evaluation.bound must be an sgm.HeldOutBound or None, got {type(bound).__name__}."
            )
        if bound.images is not None and np.shape(bound.images) != shape:
            raise ValueError(
                f"HeldOutBound.images must be the integer form of Evaluation.data, shaped like it "
                f"{shape}; got {np.shape(bound.images)}."
            )
        if bound.n_examples > shape[0]:
            raise ValueError(
                f"HeldOutBound.n_examples={bound.n_examples} is more than the {shape[0]} "
                "held-out examples; lower it or give more examples."
            )


class Monitor(eqx.Module):
    """What training watches and reports. The mean training loss is read every `every` steps
    (the only host synchronisation of the loop); each reading is judged by the stopping rules
    and shown on the progress bar.

    Stopping rules: a non-finite loss or update is skipped (the state stays as it was) and
    stops the run at the next reading with `TrainingDiverged`; so does a reading more than
    `divergence_factor` times the smaller of the untrained model's loss and the median of the
    earlier readings. A SIGINT/SIGTERM stops the run at the next step boundary with
    `TrainingInterrupted`, after a checkpoint.

    **Arguments:**

    - `every`: steps between loss readings.
    - `divergence_factor`: the divergence rule's factor, > 1 (`None`: no divergence rule).
    - `evaluation`: an `sgm.Evaluation`, the held-out loss (`None`: none).
    - `progress`: show a progress bar.
    - `history`: `sgm.train` also returns the history of the readings,
      `{"step", "loss", "eval_step", "eval_loss", "steps_per_s"}` (with an
      `sgm.HeldOutBound`, also its readings and standard errors at `eval_step`, e.g.
      `eval_bound_bits_per_dim` and `eval_bound_bits_per_dim_se`), continuous across resumes.
    """

    every: int = eqx.field(default=50, kw_only=True)
    divergence_factor: float | None = eqx.field(default=100.0, kw_only=True)
    evaluation: Evaluation | None = eqx.field(default=None, kw_only=True)
    progress: bool = eqx.field(default=True, kw_only=True)
    history: bool = eqx.field(default=False, kw_only=True)

    def __check_init__(self):
        check_int("Monitor.every", self.every)
        check_float("Monitor.divergence_factor", self.divergence_factor, above=1.0, none=True)
        if self.evaluation is not None and not isinstance(self.evaluation, Evaluation):
            raise ValueError(
                "Monitor.evaluation must be an sgm.Evaluation or None, got "
                f"{type(self.evaluation).__name__}."
            )
        _check_bool("Monitor.progress", self.progress)
        _check_bool("Monitor.history", self.history)
