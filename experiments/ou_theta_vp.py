"""A simulator emulator: Ornstein-Uhlenbeck series given their rate."""

import sgm
from sgm.experiment import Data, Eval, Experiment, Net, Sample, Train
from sgm.nets import UNet

EXPERIMENT = Experiment(
    name="ou_theta_vp",
    description="Ornstein-Uhlenbeck family conditioned on its rate (y = log theta), VP SDE, "
    "1-D UNet: a simulator emulator checked against the exact conditional law",
    budget="2000 steps x 64: 13 min training, 2.5 min sampling (256 series), 1.3 min "
    "likelihood (2-core CPU, shared)",
    data=Data("ou_theta", n_train=4000, n_test=500, length=64),
    sde=sgm.VPSDE(),
    net=Net(UNet, conditional=True, channels=32, channel_mults=(1, 2), attention_levels=(1,)),
    optimizer=sgm.Adam(lr=1e-3, warmup=100, decay=True),
    train=Train(steps=2000, batch_size=64),
    sample=Sample(
        n_samples=256,
        samplers={
            "em": sgm.EulerMaruyama(steps=500),
            "dpm": sgm.DPMSolver(steps=20),
            "unipc": sgm.UniPC(steps=20),
        },
    ),
    eval=Eval(n_images=64),
)
