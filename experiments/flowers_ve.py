"""Oxford Flowers 102 at 64x64 (tfds) under the VE SDE."""

import sgm
from sgm.experiment import Data, Eval, Experiment, Net, Sample, Train
from sgm.nets import UNet

EXPERIMENT = Experiment(
    name="flowers_ve",
    description="Oxford Flowers 102 at 64x64 via tfds, VE SDE, UNet (needs prepared tfds data)",
    budget="not run here: needs the tfds data set and an accelerator",
    data=Data("flowers", resolution=64),
    sde=sgm.VESDE(sigma_min=0.01, sigma_max=100.0),
    net=Net(
        UNet,
        channels=64,
        channel_mults=(1, 2, 2, 2),
        attention_levels=(3,),
        num_res_blocks=2,
        dropout=0.1,
    ),
    optimizer=sgm.Adam(lr=2e-4, warmup=5000),
    train=Train(steps=200_000, batch_size=64),
    sample=Sample(
        n_samples=36,
        samplers={"pc": sgm.PredictorCorrector(steps=1000), "ode": sgm.ProbabilityFlowODE()},
    ),
    eval=Eval(n_images=128),
)
