"""MNIST by flow matching on the rectified-flow path (as mnist_vp otherwise), uniform times: at
this budget the logit-normal density cost 1.05 bits/dim (benchmarks/README.md, "Flow matching")."""

import diffrax

import sgm
from sgm.experiment import Data, Eval, Experiment, Net, Sample, Train
from sgm.nets import UNet

EXPERIMENT = Experiment(
    name="mnist_fm",
    description="MNIST 28x28, rectified flow, flow matching (uniform times), UNet",
    budget="2000 steps x 64: 42-49 min training on 2 CPU cores (shared), 1.80 bits/dim",
    data=Data("mnist"),
    sde=sgm.RectifiedFlow(),
    net=Net(
        UNet,
        channels=32,
        channel_mults=(1, 2, 2),
        attention_levels=(2,),
        preconditioning=sgm.VelocityPrediction(),
    ),
    loss=sgm.FlowMatchingLoss(),
    optimizer=sgm.Adam(lr=1e-3, warmup=100, decay=True),
    train=Train(steps=2000, batch_size=64, eval_bound=True),
    sample=Sample(
        n_samples=36,
        samplers={
            "euler": sgm.ProbabilityFlowODE(solver=diffrax.Euler(), steps=50),
            "ode": sgm.ProbabilityFlowODE(),
            "dpm": sgm.DPMSolver(steps=20),
            "em": sgm.EulerMaruyama(steps=500),
        },
    ),
    eval=Eval(n_images=32),
)
