"""CIFAR-10 under the VE SDE with the settings of NCSN++ cont. (VE), Song et al. (2021),
*Score-Based Generative Modeling through Stochastic Differential Equations*, appendix H and
their `configs/ve/cifar10_ncsnpp_continuous.py` (on `configs/default_cifar10_configs.py`).

The same as theirs: random horizontal flips, the 50,000 / 10,000 split; the VE SDE of their
sigma_min 0.01 and sigma_max 50 for data in [0, 1] (`centered=False`), written here for sgm's
images in [-1, 1], twice as wide: sigma_min 0.02, sigma_max 100 is the same process in their
units (and the same loss: `sigma * score` is unchanged by the rescaling); a noise-predicting
network (`score = -net / s`, their `scale_by_sigma`) conditioned on `log s(t)` through Gaussian
Fourier features of scale 16, of width 128, channel multipliers (1, 2, 2, 2), 4 residual
blocks per level, attention at 16x16 (level 1) and in the middle, dropout 0.1, GroupNorm with
32 groups, SiLU; the unweighted noise-prediction loss (`sigma2`) summed over the entries
(`reduce_mean=False`), times uniform on [1e-5, 1]; Adam lr 2e-4 with 5000 warm-up steps,
gradient clipping at norm 1, no decay; EMA 0.999; batch 128 for 1.3M steps; their sampler (PC:
reverse-diffusion predictor and one Langevin corrector step at snr 0.16, 1000 steps, denoised
at the end) and the probability-flow ODE; test bits/dim on all 10,000 test images (the paper
reports none for VE). Their checkpoint of this configuration reaches FID 2.38 and Inception
score 9.83 with this sampler (the score_sde README's table). This UNet has 43.2M parameters.

What differs (sgm's UNet is the DDPM form, without NCSN++'s options):
- no FIR resampling (`fir=True`, kernel [1, 3, 3, 1]): a strided 3x3 convolution down and
  nearest-neighbour upsampling then a 3x3 convolution up, outside the residual blocks (theirs:
  BigGAN-type blocks that resample inside, with FIR filters);
- no progressive input (`progressive_input="residual"`, the input image downsampled and added
  at each level); no `skip_rescale` (residual sums are not divided by sqrt 2); default
  initialisation with only the output convolution zeroed (theirs: `init_scale=0` zeroes each
  block's last convolution);
- skip connections: one per level, concatenated into the first up-block of the level (theirs:
  one per down-block and `num_res_blocks + 1` up-blocks per level);
- attention: multi-head (width / 32 heads) rather than DDPM's single head;
- the input is scaled by `1 / sqrt(1 + s^2)` (`NoisePrediction`), theirs enters unscaled;
- the EMA's decay warms up as `min(0.999, (1 + n) / (10 + n))` (theirs is 0.999 from step 0).
"""

import sgm
from sgm.experiment import Data, Eval, Experiment, Net, Sample, Train
from sgm.nets import UNet

EXPERIMENT = Experiment(
    name="cifar10_ve",
    description="CIFAR-10 32x32 (tfds or --data-dir tfds data_dir), VE SDE, NCSN++ cont. (VE) "
    "settings of Song et al. 2021 on sgm's UNet: no FIR, no progressive input (see the file)",
    budget="not run here (no CIFAR-10 data, 2 shared CPU cores; only tiny versions on mock data "
    "in the tests): the defaults are the paper's 1.3M steps x 128 on accelerators",
    data=Data("cifar10"),
    sde=sgm.VESDE(sigma_min=0.02, sigma_max=100.0),
    net=Net(
        UNet,
        preconditioning=sgm.NoisePrediction(),
        channels=128,
        channel_mults=(1, 2, 2, 2),
        num_res_blocks=4,
        attention_levels=(1,),
        dropout=0.1,
        num_groups=32,
        fourier_scale=16.0,
    ),
    loss=sgm.DSMLoss(weighting="sigma2", time_density="uniform", reduce="sum", eps=1e-5),
    optimizer=sgm.Adam(lr=2e-4, warmup=5000, grad_clip=1.0),
    train=Train(
        steps=1_300_000,
        batch_size=128,
        ema_decay=0.999,
        random_flip=True,
        log_every=100,
        eval_every=5000,
        checkpoint_every=10_000,
        eval_bound=True,
    ),
    sample=Sample(
        n_samples=64,
        samplers={
            "pc": sgm.PredictorCorrector(
                steps=1000, predictor="reverse_diffusion", corrector_steps=1, snr=0.16
            ),
            "ode": sgm.ProbabilityFlowODE(),
        },
    ),
    eval=Eval(n_images=10_000, batch_size=125, chunk_size=250),
)
