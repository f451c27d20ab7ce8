"""One named experiment per module, each an `Experiment` made of the library's own
objects. `EXPERIMENTS[name]`; `python main.py --list` prints them."""

from . import (
    cifar10_vp,
    digits_dit_vp,
    digits_sr_vp,
    digits_vp,
    eight_gaussians_ve,
    flowers_ve,
    mnist_dit_vp,
    mnist_subvp,
    mnist_vdm,
    mnist_ve,
    mnist_vp,
    mnist_vp_likelihood,
    moons_vp,
    ou_theta_vp,
    ou_vp,
)

EXPERIMENTS = {
    m.EXPERIMENT.name: m.EXPERIMENT
    for m in (
        digits_vp,
        mnist_ve,
        mnist_vp,
        mnist_subvp,
        cifar10_vp,
        flowers_ve,
        moons_vp,
        eight_gaussians_ve,
        ou_vp,
        ou_theta_vp,
        digits_sr_vp,
        digits_dit_vp,
        mnist_dit_vp,
        mnist_vp_likelihood,
        mnist_vdm,
    )
}
