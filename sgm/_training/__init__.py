"""Training: the train state and the jitted data-parallel step (`_state`), deterministic
batches (`_batches`), the options of `sgm.train` (`_options`), checkpoints (`_checkpoint`),
the loop (`_loop`) and why it stops early (`_stopping`), and post-hoc EMA (`_posthoc`, its
mathematics in `_phema`)."""

from ._checkpoint import (
    CheckpointError as CheckpointError,
    checkpoint_meta as checkpoint_meta,
    load_checkpoint as load_checkpoint,
    save_checkpoint as save_checkpoint,
)
from ._loop import train as train
from ._options import (
    Checkpoints as Checkpoints,
    Evaluation as Evaluation,
    HeldOutBound as HeldOutBound,
    Monitor as Monitor,
)
from ._posthoc import (
    EMAReconstruction as EMAReconstruction,
    PostHocEMA as PostHocEMA,
    reconstruct_ema as reconstruct_ema,
)
from ._state import TrainState as TrainState
from ._stopping import (
    TrainingDiverged as TrainingDiverged,
    TrainingInterrupted as TrainingInterrupted,
)
