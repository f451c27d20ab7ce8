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
    name="ou_vp",
    description="Ornstein-Uhlenbeck series of length 64, VP SDE, 1-D UNet",
    budget="2000 steps x 64: 8 min training, 11 min with sampling and likelihood (2-core CPU)",
    data=DataConfig(name="ou", n_train=4000, n_test=500, series_length=64),
    sde=SDEConfig(kind="vp"),
    model=ModelConfig(kind="unet", channels=32, channel_mults=(1, 2), attention_levels=(1,)),
    train=TrainConfig(steps=2000, batch_size=64, lr=1e-3, warmup=100),
    sample=SampleConfig(n_samples=64, samplers=("em", "pc", "ode"), steps=500),
    eval=EvalConfig(n_images=64, n_probes=1),
)
