from sgm import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    ModelConfig,
    SampleConfig,
    SDEConfig,
    TrainConfig,
)

CONFIG = ExperimentConfig(
    name="cifar10_vp",
    description="CIFAR-10 32x32 RGB via tfds, VP SDE, UNet (prepared tfds data, GPU)",
    budget="not run here: needs the tfds data set and an accelerator (paper: 1.3M steps)",
    data=DataConfig(name="cifar10"),
    sde=SDEConfig(kind="vp"),
    model=ModelConfig(
        kind="unet",
        channels=64,
        channel_mults=(1, 2, 2, 2),
        attention_levels=(2,),
        num_res_blocks=2,
        dropout=0.1,
    ),
    train=TrainConfig(steps=200_000, batch_size=128, lr=2e-4, warmup=5000),
    sample=SampleConfig(n_samples=64, samplers=("pc", "ode"), steps=1000),
    eval=EvalConfig(n_images=256, n_probes=1),
)
