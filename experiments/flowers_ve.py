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
    name="flowers_ve",
    description="Oxford Flowers 102 at 64x64 via tfds, VE SDE, UNet (needs prepared tfds data)",
    budget="not run here: needs the tfds data set and an accelerator",
    data=DataConfig(name="flowers", resolution=64),
    sde=SDEConfig(kind="ve", sigma_min=0.01, sigma_max=100.0),
    model=ModelConfig(
        kind="unet",
        channels=64,
        channel_mults=(1, 2, 2, 2),
        attention_levels=(3,),
        num_res_blocks=2,
        dropout=0.1,
    ),
    train=TrainConfig(steps=200_000, batch_size=64, lr=2e-4, warmup=5000),
    sample=SampleConfig(n_samples=36, samplers=("pc", "ode"), steps=1000),
    eval=EvalConfig(n_images=128, n_probes=1),
)
