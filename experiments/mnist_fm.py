"""MNIST by flow matching on the rectified-flow path (as mnist_vp otherwise)."""

import diffrax

import sgm
from sgm.experiment import Data, Eval, Experiment, Net, Sample, Train
from sgm.nets import UNet

EXPERIMENT = Experiment(
    name="mnist_fm",
    description="MNIST 28x28, rectified flow, flow matching (logit-normal times), UNet",
    budget="as mnist_vp: 2000 steps x 64 (2 CPU cores, shared)",
    data=Data("mnist"),
    sde=sgm.RectifiedFlow(),
    net=Net(
        UNet,
        channels=32,
        channel_mults=(1, 2, 2),
        attention_levels=(2,),
        preconditioning=sgm.VelocityPrediction(),
    ),
    loss=sgm.FlowMatchingLoss(time_density="logit_normal"),
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
