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
    name="digits_sr_vp",
    description="8x8 digits conditioned on their 4x4 block means (a map, concatenated as an "
    "extra channel): super-resolution, VP SDE, UNet",
    budget="1000 steps x 128: 12 min training, 1.2 min sampling, 1.4 min bits/dim "
    "(2-core CPU, shared)",
    data=DataConfig(name="digits", lowres_factor=2),
    sde=SDEConfig(kind="vp"),
    model=ModelConfig(
        kind="unet", channels=32, channel_mults=(1, 2), attention_levels=(1,), conditional=True
    ),
    train=TrainConfig(steps=1000, batch_size=128, lr=1e-3, warmup=100),
    sample=SampleConfig(n_samples=64, samplers=("em", "dpm", "unipc"), steps=500),
    eval=EvalConfig(n_images=64, n_probes=1),
)
