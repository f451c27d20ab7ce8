"""Two moons in 2-D by flow matching on the rectified-flow path, minibatch OT coupling."""

import diffrax

import sgm
from sgm.experiment import Data, Eval, Experiment, Net, Sample, Train
from sgm.nets import MLP

EXPERIMENT = Experiment(
    name="moons_fm",
    description="two moons in 2-D, rectified flow, flow matching with minibatch OT, MLP",
    budget="as moons_vp: 3000 steps x 256 (2-core CPU)",
    data=Data("two_moons", n_train=20_000, n_test=2000),
    sde=sgm.RectifiedFlow(),
    net=Net(MLP, width=128, depth=3, preconditioning=sgm.VelocityPrediction()),
    loss=sgm.FlowMatchingLoss(coupling=sgm.ExactOTCoupling()),
    optimizer=sgm.Adam(lr=2e-3, warmup=100, decay=True),
    train=Train(steps=3000, batch_size=256, ema_decay=0.99),
    sample=Sample(
        n_samples=2000,
        samplers={
            "euler": sgm.ProbabilityFlowODE(solver=diffrax.Euler(), steps=20),
            "dpm": sgm.DPMSolver(steps=16),
            "ode": sgm.ProbabilityFlowODE(),
            "em": sgm.EulerMaruyama(steps=500),
        },
    ),
    eval=Eval(n_images=256, trace=sgm.Exact()),
)
