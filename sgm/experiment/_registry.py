"""The classes a configuration may hold, by name. A new SDE, network or sampler becomes
configurable (and readable back from `config.json`) with one line here."""

import diffrax

from .. import nets
from .._coupling import ExactOTCoupling, IndependentCoupling, SinkhornCoupling
from .._dequant import UniformDequantizer
from .._flow import ODEVariables
from .._learned_schedule import LearnedVPSDE
from .._losses import DSMLoss, FlowMatchingLoss
from .._optimizer import Adam
from .._paths import RectifiedFlow
from .._samplers import (
    DPMSolver,
    EulerMaruyama,
    HeunSampler,
    PredictorCorrector,
    ProbabilityFlowODE,
    ReverseSDESolver,
    UniPC,
)
from .._scaler import AffineScaler
from .._score import EDMPreconditioning, NoisePrediction, VelocityPrediction
from .._sde import VESDE, VPSDE, SubVPSDE
from .._trace import Exact, Hutchinson, HutchPlusPlus
from .._training._posthoc import PostHocEMA
from ._experiment import Eval, Experiment, Quality, Sample, Train
from ._serial import register as register
from ._specs import Data, Net

register(VPSDE, SubVPSDE, VESDE, LearnedVPSDE, RectifiedFlow)
register(nets.MLP, nets.UNet, nets.DiT)
register(
    EulerMaruyama,
    PredictorCorrector,
    ProbabilityFlowODE,
    DPMSolver,
    UniPC,
    HeunSampler,
    ReverseSDESolver,
)
register(
    diffrax.Euler,
    diffrax.Heun,
    diffrax.Midpoint,
    diffrax.Ralston,
    diffrax.Bosh3,
    diffrax.Tsit5,
    diffrax.Dopri5,
    diffrax.Dopri8,
    diffrax.SRA1,
    diffrax.ShARK,
)
register(ODEVariables, Exact, Hutchinson, HutchPlusPlus)
register(EDMPreconditioning, NoisePrediction, VelocityPrediction, UniformDequantizer, AffineScaler)
register(FlowMatchingLoss, IndependentCoupling, ExactOTCoupling, SinkhornCoupling)
register(DSMLoss, Adam, Data, Net, Train, Sample, Eval, Quality, Experiment)
register(PostHocEMA)
