"""sgm: score-based generative modelling with SDEs, in JAX and Equinox."""

from . import data as data, nets as nets, plot as plot
from ._cache import enable_compilation_cache as enable_compilation_cache
from ._checkpoint import load_checkpoint as load_checkpoint, save_checkpoint as save_checkpoint
from ._classifier import (
    NoisyClassifier as NoisyClassifier,
    train_classifier as train_classifier,
)
from ._closed_form import (
    ClosedFormScore as ClosedFormScore,
    Gaussian as Gaussian,
    GaussianMixture as GaussianMixture,
)
from ._config import (
    DataConfig as DataConfig,
    EvalConfig as EvalConfig,
    ExperimentConfig as ExperimentConfig,
    ModelConfig as ModelConfig,
    SampleConfig as SampleConfig,
    SDEConfig as SDEConfig,
    TrainConfig as TrainConfig,
)
from ._control import (
    ClassifierFreeGuidance as ClassifierFreeGuidance,
    ClassifierGuidance as ClassifierGuidance,
    colorize as colorize,
    inpaint as inpaint,
)
from ._dequant import (
    AbstractDequantizer as AbstractDequantizer,
    UniformDequantizer as UniformDequantizer,
    VariationalDequantizer as VariationalDequantizer,
    dequantized_bits_per_dim as dequantized_bits_per_dim,
)
from ._fast_samplers import (
    DPMSolver as DPMSolver,
    HeunSampler as HeunSampler,
    ReverseSDESolver as ReverseSDESolver,
    UniPC as UniPC,
)
from ._likelihood import (
    LogLikelihood as LogLikelihood,
    bits_per_dim as bits_per_dim,
    log_likelihood as log_likelihood,
)
from ._losses import DSMLoss as DSMLoss
from ._optim import adam as adam, lr_schedule as lr_schedule
from ._run import Run as Run, load_run as load_run
from ._samplers import (
    AbstractSampler as AbstractSampler,
    EulerMaruyama as EulerMaruyama,
    PredictorCorrector as PredictorCorrector,
    ProbabilityFlowODE as ProbabilityFlowODE,
)
from ._sampling import sample as sample
from ._scaler import AffineScaler as AffineScaler
from ._score import (
    AbstractPreconditioning as AbstractPreconditioning,
    EDMPreconditioning as EDMPreconditioning,
    NoisePrediction as NoisePrediction,
    ScoreModel as ScoreModel,
    noise_conditioning as noise_conditioning,
)
from ._sde import (
    VESDE as VESDE,
    VPSDE as VPSDE,
    AbstractSDE as AbstractSDE,
    SubVPSDE as SubVPSDE,
)
from ._train import (
    TrainState as TrainState,
    default_optimizer as default_optimizer,
    train as train,
)

__version__ = "0.1.0"
