"""8x8 digits given their low-resolution version: super-resolution."""

import sgm
from sgm.experiment import Data, Eval, Experiment, Net, Sample, Train
from sgm.nets import UNet

EXPERIMENT = Experiment(
    name="digits_sr_vp",
    description="8x8 digits conditioned on their 4x4 block means (a map, concatenated as an "
    "extra channel): super-resolution, VP SDE, UNet",
    budget="1000 steps x 128: 12 min training, 1.2 min sampling, 1.4 min bits/dim "
    "(2-core CPU, shared)",
    data=Data("digits", lowres_factor=2),
    sde=sgm.VPSDE(),
    net=Net(UNet, conditional=True, channels=32, channel_mults=(1, 2), attention_levels=(1,)),
    optimizer=sgm.Adam(lr=1e-3, warmup=100, decay=True),
    train=Train(steps=1000, batch_size=128, eval_bound=True),
    sample=Sample(
        n_samples=64,
        samplers={
            "em": sgm.EulerMaruyama(steps=500),
            "dpm": sgm.DPMSolver(steps=20),
            "unipc": sgm.UniPC(steps=20),
        },
    ),
    eval=Eval(n_images=64),
)
