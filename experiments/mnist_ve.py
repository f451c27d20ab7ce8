"""MNIST under the VE SDE."""

import sgm
from sgm.experiment import Data, Eval, Experiment, Net, Sample, Train
from sgm.nets import UNet

EXPERIMENT = Experiment(
    name="mnist_ve",
    description="MNIST 28x28, VE SDE (sigma_max 50), UNet; tfds or --data-dir IDX",
    budget="2000 steps x 64: 2 h 11 min training on 2 CPU cores (shared), 17 min sampling",
    data=Data("mnist"),
    sde=sgm.VESDE(sigma_min=0.01, sigma_max=50.0),
    net=Net(UNet, channels=32, channel_mults=(1, 2, 2), attention_levels=(2,)),
    optimizer=sgm.Adam(lr=1e-3, warmup=100, decay=True),
    train=Train(steps=2000, batch_size=64, eval_bound=True),
    sample=Sample(
        n_samples=36,
        samplers={
            "em": sgm.EulerMaruyama(steps=500),
            "pc": sgm.PredictorCorrector(steps=500),
            "ode": sgm.ProbabilityFlowODE(),
            "heun": sgm.HeunSampler(steps=18),
        },
    ),
    eval=Eval(n_images=32),
)
