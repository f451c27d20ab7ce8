"""CIFAR-10 under the VP SDE with the settings of DDPM++ cont. (VP), Song et al. (2021),
*Score-Based Generative Modeling through Stochastic Differential Equations*, appendix H and
their `configs/vp/cifar10_ddpmpp_continuous.py` (on `configs/default_cifar10_configs.py`).

The same as theirs: data in [-1, 1] (`centered`) with random horizontal flips, the 50,000 /
10,000 split; VP SDE with linear beta from 0.1 to 20; a noise-predicting network
(`score = -net / s`, their continuous VP) of width 128, channel multipliers (1, 2, 2, 2), 4
residual blocks per level, attention at 16x16 (level 1) and in the middle, dropout 0.1,
GroupNorm with 32 groups, SiLU; the unweighted noise-prediction loss (`sigma2`) averaged over
the entries (`reduce_mean`), times uniform on [1e-5, 1]; Adam lr 2e-4 with 5000 warm-up steps,
gradient clipping at norm 1, no decay; EMA 0.9999; batch 128 for 1.3M steps; their sampler
(PC with the Euler-Maruyama predictor and no corrector, 1000 steps, denoised at the end) and
the probability-flow ODE (RK45 at 1e-5); test bits/dim on all 10,000 test images with one
Rademacher probe and uniform dequantization (their mean over 5 dequantization repeats has the
same expectation as one draw per image). Their checkpoint of this configuration reaches FID
2.55 with this sampler, 3.93 with the ODE, and 3.16 bits/dim (the score_sde README's table).
This UNet has 43.2M parameters.

What differs (sgm's UNet is the DDPM form, without NCSN++'s options):
- residual blocks: DDPM-style blocks and separate resampling (strided 3x3 convolution down,
  nearest then 3x3 convolution up), not BigGAN-type blocks that resample inside; no
  `skip_rescale` (residual sums are not divided by sqrt 2); default initialisation with only
  the output convolution zeroed (theirs: `init_scale=0` zeroes each block's last convolution);
- skip connections: one per level, concatenated into the first up-block of the level (theirs:
  one per down-block and `num_res_blocks + 1` up-blocks per level);
- attention: multi-head (width / 32 heads) rather than DDPM's single head;
- time embedding: Gaussian Fourier features of t with scale 16 through a two-layer MLP
  (theirs: sinusoidal positional features of 999 t);
- the EMA's decay warms up as `min(0.9999, (1 + n) / (10 + n))` (theirs is 0.9999 from step 0).
"""

import sgm
from sgm.experiment import Data, Eval, Experiment, Net, Sample, Train
from sgm.nets import UNet

EXPERIMENT = Experiment(
    name="cifar10_vp",
    description="CIFAR-10 32x32 (tfds or --data-dir tfds data_dir), VP SDE, DDPM++ cont. (VP) "
    "settings of Song et al. 2021 on sgm's UNet (differences: experiments/cifar10_vp.py)",
    budget="not run here (no CIFAR-10 data, 2 shared CPU cores; only tiny versions on mock data "
    "in the tests): the defaults are the paper's 1.3M steps x 128 on accelerators",
    data=Data("cifar10"),
    sde=sgm.VPSDE(beta_min=0.1, beta_max=20.0),
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
    loss=sgm.DSMLoss(weighting="sigma2", time_density="uniform", reduce="mean", eps=1e-5),
    optimizer=sgm.Adam(lr=2e-4, warmup=5000, grad_clip=1.0),
    train=Train(
        steps=1_300_000,
        batch_size=128,
        ema_decay=0.9999,
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
                steps=1000, predictor="euler_maruyama", corrector_steps=0, snr=0.16
            ),
            "ode": sgm.ProbabilityFlowODE(),
        },
    ),
    eval=Eval(n_images=10_000, batch_size=125, chunk_size=250),
)
