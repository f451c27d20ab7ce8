"""Eight Gaussians on a circle in 2-D under the VE SDE."""

import sgm
from sgm.experiment import Data, Eval, Experiment, Net, Sample, Train
from sgm.nets import MLP

EXPERIMENT = Experiment(
    name="eight_gaussians_ve",
    description="eight Gaussians on a circle in 2-D, VE SDE (sigma_max 4), residual MLP",
    budget="3000 steps x 256: 73 s training, 3 min with sampling and likelihood (2-core CPU)",
    data=Data("eight_gaussians", n_train=20_000, n_test=2000),
    sde=sgm.VESDE(sigma_min=0.01, sigma_max=4.0),
    net=Net(MLP, width=128, depth=3),
    optimizer=sgm.Adam(lr=2e-3, warmup=100, decay=True),
    train=Train(steps=3000, batch_size=256, ema_decay=0.99),
    sample=Sample(
        n_samples=2000,
        samplers={
            "em": sgm.EulerMaruyama(steps=500),
            "pc": sgm.PredictorCorrector(steps=500),
            "ode": sgm.ProbabilityFlowODE(),
        },
    ),
    eval=Eval(n_images=256, trace=sgm.Exact()),
)
