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
    name="digits_vp",
    description="8x8 scikit-learn digits, VP SDE, class-conditional UNet: the first run on a CPU",
    budget="1500 steps x 128: 18 min training, 3 min sampling, 1.5 min bits/dim (2-core CPU)",
    data=DataConfig(name="digits"),
    sde=SDEConfig(kind="vp"),
    model=ModelConfig(
        kind="unet", channels=32, channel_mults=(1, 2), attention_levels=(1,), conditional=True
    ),
    train=TrainConfig(steps=1500, batch_size=128, lr=1e-3, warmup=100),
    sample=SampleConfig(n_samples=64, samplers=("em", "pc", "ode", "dpm"), steps=500),
    eval=EvalConfig(n_images=128, n_probes=1),
)
