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
    name="eight_gaussians_ve",
    description="eight Gaussians on a circle in 2-D, VE SDE (sigma_max 4), residual MLP",
    budget="3000 steps x 256: 73 s training, 3 min with sampling and likelihood (2-core CPU)",
    data=DataConfig(name="eight_gaussians", n_train=20_000, n_test=2000),
    sde=SDEConfig(kind="ve", sigma_min=0.01, sigma_max=4.0),
    model=ModelConfig(kind="mlp", width=128, depth=3),
    train=TrainConfig(steps=3000, batch_size=256, lr=2e-3, warmup=100, ema_decay=0.99),
    sample=SampleConfig(n_samples=2000, samplers=("em", "pc", "ode"), steps=500),
    eval=EvalConfig(n_images=256, exact=True),
)
