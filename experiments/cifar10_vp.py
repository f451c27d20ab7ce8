"""CIFAR-10 at 32x32 (tfds)."""

import sgm
from sgm.experiment import Data, Eval, Experiment, Net, Sample, Train
from sgm.nets import UNet

EXPERIMENT = Experiment(
    name="cifar10_vp",
    description="CIFAR-10 32x32 RGB via tfds, VP SDE, UNet (prepared tfds data, GPU)",
    budget="not run here: needs the tfds data set and an accelerator (paper: 1.3M steps)",
    data=Data("cifar10"),
    sde=sgm.VPSDE(),
    net=Net(
        UNet,
        channels=64,
        channel_mults=(1, 2, 2, 2),
        attention_levels=(2,),
        num_res_blocks=2,
        dropout=0.1,
    ),
    optimizer=sgm.Adam(lr=2e-4, warmup=5000),
    train=Train(steps=200_000, batch_size=128),
    sample=Sample(
        n_samples=64,
        samplers={"pc": sgm.PredictorCorrector(steps=1000), "ode": sgm.ProbabilityFlowODE()},
    ),
    eval=Eval(n_images=256),
)
