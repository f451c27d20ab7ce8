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
    name="mnist_subvp",
    description="MNIST 28x28, subVP SDE (linear beta 0.1 to 20), UNet; tfds or --data-dir IDX",
    budget="not run yet: same UNet and cost per step as mnist_vp (33 min on 2 CPU cores)",
    data=DataConfig(name="mnist"),
    sde=SDEConfig(kind="subvp"),
    model=ModelConfig(kind="unet", channels=32, channel_mults=(1, 2, 2), attention_levels=(2,)),
    train=TrainConfig(steps=2000, batch_size=64, lr=1e-3, warmup=100),
    sample=SampleConfig(n_samples=36, samplers=("em", "pc", "ode", "dpm"), steps=500),
    eval=EvalConfig(n_images=32, n_probes=1),
)
