"""MNIST under the VP SDE."""

import sgm
from sgm.experiment import Data, Eval, Experiment, Net, Sample, Train
from sgm.nets import UNet

EXPERIMENT = Experiment(
    name="mnist_vp",
    description="MNIST 28x28, VP SDE (linear beta 0.1 to 20), UNet; tfds or --data-dir IDX",
    budget="2000 steps x 64: 33-38 min training on 2 CPU cores (shared)",
    data=Data("mnist"),
    sde=sgm.VPSDE(),
    net=Net(UNet, channels=32, channel_mults=(1, 2, 2), attention_levels=(2,)),
    optimizer=sgm.Adam(lr=1e-3, warmup=100, decay=True),
    train=Train(steps=2000, batch_size=64, eval_bound=True),
    sample=Sample(
        n_samples=36,
        samplers={
            "em": sgm.EulerMaruyama(steps=500),
            "pc": sgm.PredictorCorrector(steps=500),
            "ode": sgm.ProbabilityFlowODE(),
            "dpm": sgm.DPMSolver(steps=20),
        },
    ),
    eval=Eval(n_images=32),
)
