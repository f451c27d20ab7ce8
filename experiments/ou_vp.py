"""Ornstein-Uhlenbeck series of length 64 under the VP SDE."""

import sgm
from sgm.experiment import Data, Eval, Experiment, Net, Sample, Train
from sgm.nets import UNet

EXPERIMENT = Experiment(
    name="ou_vp",
    description="Ornstein-Uhlenbeck series of length 64, VP SDE, 1-D UNet",
    budget="2000 steps x 64: 8 min training, 11 min with sampling and likelihood (2-core CPU)",
    data=Data("ou", n_train=4000, n_test=500, length=64),
    sde=sgm.VPSDE(),
    net=Net(UNet, channels=32, channel_mults=(1, 2), attention_levels=(1,)),
    optimizer=sgm.Adam(lr=1e-3, warmup=100, decay=True),
    train=Train(steps=2000, batch_size=64),
    sample=Sample(
        n_samples=64,
        samplers={
            "em": sgm.EulerMaruyama(steps=500),
            "pc": sgm.PredictorCorrector(steps=500),
            "ode": sgm.ProbabilityFlowODE(),
        },
    ),
    eval=Eval(n_images=64),
)
