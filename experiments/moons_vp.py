"""Two moons in 2-D under the VP SDE."""

import sgm
from sgm.experiment import Data, Eval, Experiment, Net, Sample, Train
from sgm.nets import MLP

EXPERIMENT = Experiment(
    name="moons_vp",
    description="two moons in 2-D, VP SDE, residual MLP",
    budget="3000 steps x 256: 75 s training, 2.5 min with sampling and likelihood (2-core CPU)",
    data=Data("two_moons", n_train=20_000, n_test=2000),
    sde=sgm.VPSDE(),
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
