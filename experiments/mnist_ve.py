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
    name="mnist_ve",
    description="MNIST 28x28, VE SDE (sigma_max 50), UNet; tfds or --data-dir IDX",
    budget="2000 steps x 64: 2 h 11 min training on 2 CPU cores (shared), 17 min sampling",
    data=DataConfig(name="mnist"),
    sde=SDEConfig(kind="ve", sigma_min=0.01, sigma_max=50.0),
    model=ModelConfig(kind="unet", channels=32, channel_mults=(1, 2, 2), attention_levels=(2,)),
    train=TrainConfig(steps=2000, batch_size=64, lr=1e-3, warmup=100),
    sample=SampleConfig(n_samples=36, samplers=("em", "pc", "ode", "heun"), steps=500),
    eval=EvalConfig(n_images=32, n_probes=1),
)
