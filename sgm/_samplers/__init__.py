"""The sampler family: one module per sampler, the shared contract (`_base`), time grids
(`_grids`), the multistep solvers' shared settings (`_multistep`) and the entry point
`sample` (`_sample`)."""

from ._base import (
    BATCH_AXIS as BATCH_AXIS,
    AbstractSampler as AbstractSampler,
    end_time as end_time,
)
from ._dpm_solver import DPMSolver as DPMSolver
from ._euler_maruyama import EulerMaruyama as EulerMaruyama, euler_maruyama as euler_maruyama
from ._grids import (
    GRIDS as GRIDS,
    SIGMA_END as SIGMA_END,
    TimeGrid as TimeGrid,
    karras_sigmas as karras_sigmas,
    ode_end_time as ode_end_time,
    solver_times as solver_times,
    time_grid as time_grid,
)
from ._heun import HeunSampler as HeunSampler
from ._multistep import AbstractMultistepSolver as AbstractMultistepSolver
from ._predictor_corrector import PredictorCorrector as PredictorCorrector
from ._probability_flow import ProbabilityFlowODE as ProbabilityFlowODE
from ._reverse_sde import (
    ReverseSDESolver as ReverseSDESolver,
    drift_evaluations as drift_evaluations,
)
from ._sample import sample as sample
from ._unipc import UniPC as UniPC
