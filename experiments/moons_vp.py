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
    name="moons_vp",
    description="two moons in 2-D, VP SDE, residual MLP",
    budget="3000 steps x 256: 75 s training, 2.5 min with sampling and likelihood (2-core CPU)",
    data=DataConfig(name="two_moons", n_train=20_000, n_test=2000),
    sde=SDEConfig(kind="vp"),
    model=ModelConfig(kind="mlp", width=128, depth=3),
    train=TrainConfig(steps=3000, batch_size=256, lr=2e-3, warmup=100, ema_decay=0.99),
    sample=SampleConfig(n_samples=2000, samplers=("em", "pc", "ode"), steps=500),
    eval=EvalConfig(n_images=256, exact=True),
)
