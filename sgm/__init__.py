"""sgm: score-based generative modelling with SDEs, in JAX and Equinox."""

from . import data as data, distributed as distributed, metrics as metrics, nets as nets
from ._bits import BitsPerDimInfo as BitsPerDimInfo, bits_per_dim as bits_per_dim
from ._cache import enable_compilation_cache as enable_compilation_cache
from ._classifier import (
    NoisyClassifier as NoisyClassifier,
    train_classifier as train_classifier,
)
from ._closed_form import (
    ClosedFormScore as ClosedFormScore,
    Gaussian as Gaussian,
    GaussianMixture as GaussianMixture,
)
from ._control import (
    ClassifierFreeGuidance as ClassifierFreeGuidance,
    ClassifierGuidance as ClassifierGuidance,
    colorize as colorize,
    inpaint as inpaint,
)
from ._coupling import (
    AbstractCoupling as AbstractCoupling,
    ExactOTCoupling as ExactOTCoupling,
    IndependentCoupling as IndependentCoupling,
    SinkhornCoupling as SinkhornCoupling,
)
from ._dequant import (
    AbstractDequantizer as AbstractDequantizer,
    UniformDequantizer as UniformDequantizer,
    VariationalDequantizer as VariationalDequantizer,
    dequantized_bits_per_dim as dequantized_bits_per_dim,
)
from ._flow import ODEVariables as ODEVariables
from ._io import save_model as save_model
from ._learned_schedule import (
    AbstractLearnedSDE as AbstractLearnedSDE,
    LearnedVPSDE as LearnedVPSDE,
)
from ._likelihood import (
    LogLikelihood as LogLikelihood,
    log_likelihood as log_likelihood,
    variational_bound as variational_bound,
)
from ._losses import (
    AbstractLoss as AbstractLoss,
    DSMLoss as DSMLoss,
    FlowMatchingLoss as FlowMatchingLoss,
)
from ._optimizer import Adam as Adam, lr_schedule as lr_schedule
from ._paths import RectifiedFlow as RectifiedFlow
from ._sample_density import sample_with_log_prob as sample_with_log_prob
from ._samplers import (
    AbstractSampler as AbstractSampler,
    DPMSolver as DPMSolver,
    EulerMaruyama as EulerMaruyama,
    HeunSampler as HeunSampler,
    PredictorCorrector as PredictorCorrector,
    ProbabilityFlowODE as ProbabilityFlowODE,
    ReverseSDESolver as ReverseSDESolver,
    UniPC as UniPC,
    sample as sample,
)
from ._scaler import (
    AbstractScaler as AbstractScaler,
    AffineScaler as AffineScaler,
    Standardizer as Standardizer,
)
from ._score import (
    AbstractPreconditioning as AbstractPreconditioning,
    EDMPreconditioning as EDMPreconditioning,
    NoisePrediction as NoisePrediction,
    ScoreModel as ScoreModel,
    VelocityPrediction as VelocityPrediction,
)
from ._sde import (
    VESDE as VESDE,
    VPSDE as VPSDE,
    AbstractSDE as AbstractSDE,
    SubVPSDE as SubVPSDE,
)
from ._trace import (
    AbstractTraceEstimator as AbstractTraceEstimator,
    Exact as Exact,
    Hutchinson as Hutchinson,
    HutchPlusPlus as HutchPlusPlus,
)
from ._training import (
    CheckpointError as CheckpointError,
    Checkpoints as Checkpoints,
    EMAReconstruction as EMAReconstruction,
    Evaluation as Evaluation,
    HeldOutBound as HeldOutBound,
    Monitor as Monitor,
    PostHocEMA as PostHocEMA,
    TrainingDiverged as TrainingDiverged,
    TrainingInterrupted as TrainingInterrupted,
    TrainState as TrainState,
    checkpoint_meta as checkpoint_meta,
    load_checkpoint as load_checkpoint,
    reconstruct_ema as reconstruct_ema,
    save_checkpoint as save_checkpoint,
    train as train,
)

__version__ = "0.1.0"
