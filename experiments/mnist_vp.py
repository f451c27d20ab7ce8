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
    name="mnist_vp",
    description="MNIST 28x28, VP SDE (linear beta 0.1 to 20), UNet; tfds or --data-dir IDX",
    budget="2000 steps x 64: 33 min training on 2 CPU cores (shared)",
    data=DataConfig(name="mnist"),
    sde=SDEConfig(kind="vp"),
    model=ModelConfig(kind="unet", channels=32, channel_mults=(1, 2, 2), attention_levels=(2,)),
    train=TrainConfig(steps=2000, batch_size=64, lr=1e-3, warmup=100),
    sample=SampleConfig(n_samples=36, samplers=("em", "pc", "ode", "dpm"), steps=500),
    eval=EvalConfig(n_images=32, n_probes=1),
)
