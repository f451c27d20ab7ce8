"""The first run on a CPU: scikit-learn's 8x8 digits, class-conditional."""

import sgm
from sgm.experiment import Data, Eval, Experiment, Net, Sample, Train
from sgm.nets import UNet

EXPERIMENT = Experiment(
    name="digits_vp",
    description="8x8 scikit-learn digits, VP SDE, class-conditional UNet: the first run on a CPU",
    budget="1500 steps x 128: 3.7 min training, 45 s sampling, 40 s bits/dim (2-core CPU, idle)",
    data=Data("digits"),
    sde=sgm.VPSDE(),
    net=Net(UNet, conditional=True, channels=32, channel_mults=(1, 2), attention_levels=(1,)),
    optimizer=sgm.Adam(lr=1e-3, warmup=100, decay=True),
    train=Train(steps=1500, batch_size=128, eval_bound=True),
    sample=Sample(
        n_samples=64,
        samplers={
            "em": sgm.EulerMaruyama(steps=500),
            "pc": sgm.PredictorCorrector(steps=500),
            "ode": sgm.ProbabilityFlowODE(),
            "dpm": sgm.DPMSolver(steps=20),
        },
    ),
    eval=Eval(n_images=128),
)
