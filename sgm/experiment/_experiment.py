"""An experiment: a small description made of sgm's own objects and their constructor
arguments. The SDE, loss, optimizer and samplers are instances; the network, which needs the
data's shape and a key, is a class with its arguments (`Net`); the data a name with options
(`Data`). There is no second copy of any default: what is not given comes from the classes
(for `Train`, from `sgm.train` and its option objects)."""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import jax.random as jr

from .._checks import check_float, check_int, check_positive, check_probability
from .._losses import AbstractLoss, DSMLoss
from .._optimizer import Adam
from .._samplers import (
    AbstractSampler,
    DPMSolver,
    EulerMaruyama,
    HeunSampler,
    PredictorCorrector,
    ProbabilityFlowODE,
    UniPC,
)
from .._scaler import AffineScaler
from .._score import ScoreModel
from .._sde import AbstractSDE
from .._trace import AbstractTraceEstimator, Hutchinson
from .._training._options import (
    BATCH_SIZE,
    EMA_DECAY,
    Checkpoints,
    Evaluation,
    HeldOutBound,
    Monitor,
)
from .._training._posthoc import PostHocEMA
from .._training._precision import check_precision
from ._serial import fields_of
from ._specs import Data, Net

# Short names of the samplers main.py offers (`--sample.samplers em,pc,dpm`); an experiment
# may also name its own instances.
SAMPLERS: dict[str, Callable[[], AbstractSampler]] = {
    "em": EulerMaruyama,
    "pc": PredictorCorrector,
    "ode": ProbabilityFlowODE,
    "dpm": DPMSolver,
    "heun": HeunSampler,
    "heun_churn": lambda: HeunSampler(steps=64, churn=5.0),  # EDM's stochastic Heun
    "unipc": UniPC,
}


@dataclass(frozen=True)
class Train:
    """The training run: `steps`, the global `batch_size`, the EMA decay, label dropout for
    class-conditional models (classifier-free guidance), the cadences of logging, held-out
    evaluation (`None`: off) and checkpoints, how many checkpoints to keep, the divergence
    rule's factor, the seed, the network's compute `precision` (`"float32"` or `"bfloat16"`,
    mixed precision), the micro-batches per step `accumulate` and the parameter shards
    `fsdp` (`sgm.train`'s: fully sharded data parallelism); `checkpoint_async` writes the
    checkpoints in the background (`sgm.Checkpoints(asynchronous=True)`). `eval_bound` adds the
    variational bound on the first `eval_bound_examples` test examples to each held-out
    reading (`sgm.HeldOutBound`: bits/dim of the integer test images where the data have
    them, else nats/dim). `random_flip` mirrors training images left-right at random
    (`sgm.train`'s). Unset values are the
    defaults of `sgm.train` and of its option objects (`sgm.Checkpoints`, `sgm.Evaluation`,
    `sgm.HeldOutBound`, `sgm.Monitor`); `options` builds those objects. `posthoc_ema`, an
    `sgm.PostHocEMA` without a directory, snapshots power-function EMAs into
    `RUN/checkpoint/ema` (`main.py --mode ema` rebuilds any length from them)."""

    steps: int
    batch_size: int = BATCH_SIZE
    ema_decay: float = EMA_DECAY
    label_dropout: float = 0.1
    log_every: int = Monitor.every
    eval_every: int | None = Evaluation.every
    checkpoint_every: int = Checkpoints.every
    keep_checkpoints: int = Checkpoints.keep
    divergence_factor: float | None = Monitor.divergence_factor
    seed: int = 0
    eval_bound: bool = False
    eval_bound_examples: int = HeldOutBound.n_examples
    random_flip: bool = False
    posthoc_ema: PostHocEMA | None = None
    precision: str = "float32"
    accumulate: int = 1
    fsdp: int = 1
    checkpoint_async: bool = False

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
            check_int(f"train.{name}", getattr(self, name))
        check_int("train.eval_every", self.eval_every, none=True)
        check_probability("train.ema_decay", self.ema_decay)
        check_probability("train.label_dropout", self.label_dropout)
        check_float("train.divergence_factor", self.divergence_factor, above=1.0, none=True)
        check_int("train.seed", self.seed, minimum=0)
        if not isinstance(self.eval_bound, bool):
            raise ValueError(f"train.eval_bound must be true or false, got {self.eval_bound!r}.")
        check_int("train.eval_bound_examples", self.eval_bound_examples, minimum=2)
        if not isinstance(self.random_flip, bool):
            raise ValueError(f"train.random_flip must be true or false, got {self.random_flip!r}.")
        if self.posthoc_ema is not None and not isinstance(self.posthoc_ema, PostHocEMA):
            raise ValueError(
                f"train.posthoc_ema must be a PostHocEMA or None, got {self.posthoc_ema!r}."
            )
        if self.posthoc_ema is not None and self.posthoc_ema.directory is not None:
            raise ValueError(
                "train.posthoc_ema.directory must be None: a run keeps its snapshots in "
                "RUN/checkpoint/ema."
            )
        check_precision("train.precision", self.precision)
        check_int("train.accumulate", self.accumulate)
        if self.batch_size % self.accumulate:
            raise ValueError(
                f"train.batch_size={self.batch_size} must be a multiple of "
                f"train.accumulate={self.accumulate}."
            )
        check_int("train.fsdp", self.fsdp)
        if not isinstance(self.checkpoint_async, bool):
            raise ValueError(
                f"train.checkpoint_async must be true or false, got {self.checkpoint_async!r}."
            )

    def options(
        self,
        directory,
        *,
        fingerprint,
        resume: bool,
        eval_data,
        eval_labels,
        verify: bool = True,
        eval_images=None,
        num_bits: int | None = None,
        scaler=None,
    ) -> dict:
        """The keyword arguments of `sgm.train` for this run (besides the key, loss and
        labels): `steps`, `batch_size`, `ema_decay`, `random_flip`, `precision`, `accumulate`,
        `fsdp`, the `sgm.Checkpoints` in `directory` (recording `fingerprint`, resuming with
        `resume`, from a checkpoint that verifies unless `verify=False`), and an `sgm.Monitor`
        holding the held-out `sgm.Evaluation` on `eval_data` (with `eval_labels`; with
        `eval_bound`, its `sgm.HeldOutBound` on `eval_images`, their `num_bits` and `scaler`,
        when given) and returning the history, so that `sgm.train` returns `(model, history)`."""
        evaluation = None
        if self.eval_every is not None and eval_data is not None:
            bound = self._bound(len(eval_data), eval_images, num_bits, scaler)
            evaluation = Evaluation(
                eval_data, labels=eval_labels, every=self.eval_every, bound=bound
            )
        return dict(
            steps=self.steps,
            batch_size=self.batch_size,
            ema_decay=self.ema_decay,
            random_flip=self.random_flip,
            precision=self.precision,
            accumulate=self.accumulate,
            fsdp=self.fsdp,
            checkpoints=Checkpoints(
                directory,
                every=self.checkpoint_every,
                keep=self.keep_checkpoints,
                resume=resume,
                fingerprint=fingerprint,
                verify=verify,
                asynchronous=self.checkpoint_async,
            ),
            monitor=Monitor(
                every=self.log_every,
                divergence_factor=self.divergence_factor,
                evaluation=evaluation,
                history=True,
            ),
            posthoc_ema=self.posthoc_ema,
        )

    def _bound(self, n_test: int, images, num_bits, scaler) -> HeldOutBound | None:
        """The held-out bound on at most `eval_bound_examples` of the `n_test` examples."""
        n = min(self.eval_bound_examples, n_test)
        if not self.eval_bound or n < 2:
            return None
        if images is None:
            return HeldOutBound(n_examples=n)
        return HeldOutBound(
            n_examples=n,
            images=images,
            num_bits=8 if num_bits is None else num_bits,
            scaler=scaler if isinstance(scaler, AffineScaler) else AffineScaler(),
        )


def _default_samplers():
    return {name: SAMPLERS[name]() for name in ("em", "pc", "ode")}


@dataclass(frozen=True)
class Sample:
    """What the sampling phases draw: `samplers` by name (each an sgm sampler), `n_samples`;
    `controlled`, the sampler of inpainting, colorization and the class grids; and the
    settings of guidance and of the time-dependent classifier of `--mode guided`."""

    samplers: dict = field(default_factory=_default_samplers)
    n_samples: int = 64
    controlled: AbstractSampler = EulerMaruyama(steps=200)
    inpaint_particles: int = 8
    inpaint_method: Literal["smc", "replace"] = "smc"
    guidance_scale: float = 1.0  # classifier-free guidance for --mode classes
    classifier_scale: float = 3.0  # classifier guidance for --mode guided
    classifier_steps: int = 2000
    classifier_batch_size: int = 128
    classifier_lr: float = 2e-3
    classifier_width: int = 32

    def __post_init__(self):
        if not self.samplers:
            raise ValueError("sample.samplers must name at least one sampler.")
        for name, s in self.samplers.items():
            if not isinstance(s, AbstractSampler):
                raise ValueError(f"sample.samplers[{name!r}] must be an sgm sampler, got {s!r}.")
        if not isinstance(self.controlled, AbstractSampler):
            raise ValueError(f"sample.controlled must be an sgm sampler, got {self.controlled!r}.")
        for name in (
            "n_samples",
            "inpaint_particles",
            "classifier_steps",
            "classifier_batch_size",
            "classifier_width",
        ):
            check_int(f"sample.{name}", getattr(self, name))
        if self.inpaint_method not in ("smc", "replace"):
            raise ValueError(
                f"sample.inpaint_method must be smc or replace, got {self.inpaint_method!r}."
            )
        check_positive("sample.classifier_lr", self.classifier_lr)
        check_float("sample.guidance_scale", self.guidance_scale, at_least=0.0)
        check_float("sample.classifier_scale", self.classifier_scale, at_least=0.0)


@dataclass(frozen=True)
class Eval:
    """The likelihood phase: the first `n_images` test examples, the trace estimator
    (`sgm.Exact()`, `sgm.Hutchinson(n_probes)`, ...), `n_dequant` dequantization draws,
    `batch_size` examples per call, and `chunk_size` images per stored chunk: each finished
    chunk is kept under the run, so an interrupted evaluation continues where it stopped.
    64 images (two calls of the default `batch_size`) are about two minutes of work for an
    MNIST UNet with Hutchinson's estimate on a 2-core CPU (2 s per image, benchmarks/README.md)
    and a file of a few kilobytes: an interruption loses little, and a whole test set of
    10,000 images is 157 files."""

    n_images: int = 64
    trace: AbstractTraceEstimator = Hutchinson()
    n_dequant: int = 1
    batch_size: int = 32
    chunk_size: int = 64

    def __post_init__(self):
        for name in ("n_images", "n_dequant", "batch_size", "chunk_size"):
            check_int(f"eval.{name}", getattr(self, name))
        if not isinstance(self.trace, AbstractTraceEstimator):
            raise ValueError(f"eval.trace must be an sgm trace estimator, got {self.trace!r}.")


@dataclass(frozen=True)
class Quality:
    """The sample-quality phase (`--mode quality`, `sgm.metrics`): `n_samples` drawn with the
    sampler named `sampler` (one of the experiment's samplers or main.py's short names; `steps`
    replaces its number of steps), against the first `n_reference` (None: `n_samples`) images
    of the `reference` split; features of the FID Inception-v3 whose weights file is
    `inception` (pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, never downloaded),
    `batch_size` images per sampling and Inception call; KID over `kid_subsets` subsets of
    `kid_subset_size` (capped at the smaller set), IS over `is_splits` splits, precision and
    recall with `pr_k` neighbours; samples drawn from `jr.key(seed)`."""

    inception: str | None = None
    n_samples: int = 1000
    sampler: str = "ode"
    steps: int | None = None
    reference: Literal["train", "test"] = "train"
    n_reference: int | None = None
    batch_size: int = 50
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    is_splits: int = 10
    pr_k: int = 3
    seed: int = 3

    def __post_init__(self):
        for name in ("n_samples", "batch_size", "kid_subsets", "kid_subset_size", "is_splits"):
            check_int(f"quality.{name}", getattr(self, name))
        check_int("quality.steps", self.steps, none=True)
        check_int("quality.n_reference", self.n_reference, minimum=2, none=True)
        check_int("quality.pr_k", self.pr_k)
        check_int("quality.seed", self.seed, minimum=0)
        if self.reference not in ("train", "test"):
            raise ValueError(f"quality.reference must be train or test, got {self.reference!r}.")
        if self.n_samples < 2:
            raise ValueError(f"quality.n_samples must be at least 2, got {self.n_samples}.")
        if self.inception is not None and not isinstance(self.inception, str):
            raise ValueError(f"quality.inception must be a path, got {self.inception!r}.")

    def build_sampler(self, samplers: dict) -> AbstractSampler:
        """The sampler named `sampler` (from `samplers`, else main.py's `SAMPLERS`), with
        `steps` when given."""
        if self.sampler in samplers:
            s = samplers[self.sampler]
        elif self.sampler in SAMPLERS:
            s = SAMPLERS[self.sampler]()
        else:
            raise ValueError(
                f"quality.sampler {self.sampler!r} is not a sampler; one of "
                f"{sorted(set(SAMPLERS) | set(samplers))}."
            )
        if self.steps is None:
            return s
        fields = fields_of(s)
        if "steps" not in fields:
            raise ValueError(
                f"quality.steps: {type(s).__name__} has no steps; set its own fields with "
                f"--sample.{self.sampler}.<field>."
            )
        return type(s)(**{**fields, "steps": self.steps})


@dataclass(frozen=True)
class Experiment:
    """One experiment: data, SDE, network, loss, optimizer, training, sampling, evaluation.

    `python main.py --experiment NAME` runs one; `sgm.load_run(dir).config` is the one a run
    was trained with. Written to `config.json` generically (`sgm.to_json`)."""

    name: str
    data: Data
    sde: AbstractSDE
    net: Net
    train: Train
    loss: AbstractLoss = DSMLoss()
    optimizer: Adam = Adam()
    sample: Sample = field(default_factory=Sample)
    eval: Eval = field(default_factory=Eval)
    quality: Quality = field(default_factory=Quality)
    description: str = ""
    budget: str = ""  # the measured budget behind its defaults

    def __post_init__(self):
        expected = {
            "data": Data,
            "sde": AbstractSDE,
            "net": Net,
            "train": Train,
            "loss": AbstractLoss,
            "optimizer": Adam,
            "sample": Sample,
            "eval": Eval,
            "quality": Quality,
        }
        for name, kind in expected.items():
            if not isinstance(getattr(self, name), kind):
                raise ValueError(
                    f"Experiment.{name} must be a {kind.__name__}, got "
                    f"{type(getattr(self, name)).__name__}."
                )
        if self.loss.label_dropout or self.loss.null_label is not None:
            raise ValueError(
                "set label dropout with Train(label_dropout=...); the null label "
                "is the data's number of classes."
            )

    def load_data(self, data_dir=None, *, shard: tuple[int, int] | None = None):
        """The dataset this experiment trains and evaluates on (`Data.load`, its key from
        `train.seed`): what `main.py` loads and `Run.dataset` reloads."""
        return self.data.load(data_dir, key=jr.key(self.train.seed + 1), shard=shard)

    def build_model(self, data_shape, *, num_classes=None, cond_shape=None) -> ScoreModel:
        """The untrained model, initialised from `train.seed`."""
        key = jr.split(jr.key(self.train.seed))[0]
        return self.net.build(
            self.sde, data_shape, key=key, num_classes=num_classes, cond_shape=cond_shape
        )

    def build_loss(self, num_classes=None, cond_shape=None) -> AbstractLoss:
        """The loss; label dropout applies to class-conditional models only."""
        if self.net.conditional and num_classes is not None and cond_shape is None:
            return dataclasses.replace(
                self.loss, label_dropout=self.train.label_dropout, null_label=num_classes
            )
        return self.loss
