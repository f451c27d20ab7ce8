"""Turning a network into a score: the parametrisation (preconditioning) of the network."""

import abc
from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, ScalarLike

from ._dequant import AbstractDequantizer
from ._model_checks import AbstractScoreModel
from ._sde import AbstractSDE, _check_time


class AbstractPreconditioning(eqx.Module):
    """How a network `F` becomes a noise prediction: with `x_t = m(t) x_0 + s(t) eps`,

    `eps_hat(t, x) = c_skip(t) c_in(t) x + c_out(t) F(c_noise(t), c_in(t) x)`

    (Karras et al. 2022, eq. 7, written for the noise instead of the denoised data).
    """

    @abc.abstractmethod
    def coefficients(self, sde: AbstractSDE, t: ScalarLike) -> tuple[Array, Array, Array, Array]:
        """`(c_in, c_skip, c_out, c_noise)` at time `t`."""


class NoisePrediction(AbstractPreconditioning):
    """The network predicts the noise itself (Ho et al. 2020; Song et al. 2021, appendix C):
    `c_skip = 0`, `c_out = 1`, `c_in = 1 / sqrt(m^2 + s^2)` (unit-variance input for
    unit-variance data) and `c_noise = sde.noise_conditioning(t)`."""

    def coefficients(self, sde, t):
        m, s = sde.marginal(t)
        c_in = jnp.reciprocal(jnp.sqrt(m**2 + s**2))
        return c_in, jnp.zeros_like(c_in), jnp.ones_like(c_in), sde.noise_conditioning(t)


class EDMPreconditioning(AbstractPreconditioning):
    """Karras et al. (2022, table 1, "ours") for any linear SDE, in terms of the noise level
    `sigma = s / m` of the rescaled state `x / m = x_0 + sigma eps`: the input has unit variance
    for data of standard deviation `sigma_data` (`c_in = 1 / (m sqrt(sigma^2 + sigma_data^2))`),
    the noise is conditioned on `c_noise = log(sigma) / 4`, and the network's target has unit
    variance at every noise level. Their denoiser `c_skip x + c_out F` gives the noise prediction

    `eps_hat = (sigma z - sigma_data F) / sqrt(sigma^2 + sigma_data^2)`, `z = c_in x`,

    which passes the input through at high noise (where `eps ~ z`) and predicts the noise at low
    noise; for VP with `sigma_data = 1` it is the v-prediction of Salimans & Ho (2022).

    **Arguments:**

    - `sigma_data`: the standard deviation of the data (in model scale) it is tuned for.
    """

    sigma_data: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        if not self.sigma_data > 0:
            raise ValueError(f"sigma_data must be positive, got {self.sigma_data}.")

    def coefficients(self, sde, t):
        m, s = sde.marginal(t)
        sigma = s / m
        norm = jnp.sqrt(sigma**2 + self.sigma_data**2)
        return 1 / (m * norm), sigma / norm, -self.sigma_data / norm, 0.25 * jnp.log(sigma)


class VelocityPrediction(AbstractPreconditioning):
    """The network predicts the velocity `v = m'(t) x_0 + s'(t) eps` of the path
    `x_t = m x_0 + s eps` (flow matching, Lipman et al. 2023, eq. 20; rectified flow, Liu et
    al. 2023). Solving `x = m x_0 + s eps`, `v = m' x_0 + s' eps` for `eps` gives

    `eps_hat = (m F - m' x) / D`, `D = m s' - m' s`,

    i.e. `c_in = 1 / sqrt(m^2 sigma_data^2 + s^2)` (unit-variance input for data of standard
    deviation `sigma_data`), `c_skip = -m' / (D c_in)`, `c_out = m / D`, and the score
    `-eps_hat / s`. The network is conditioned on `c_noise = log(s / m) / 4`, EDM's (Karras et
    al. 2022, table 1), `logit(t) / 4` for rectified flow, so that networks tuned for
    `EDMPreconditioning` take it unchanged. Equivalently `v = f x - g^2 score / 2` with
    `f = m' / m`, `g^2 / 2 = s D / m`: the velocity is the probability-flow ODE's drift (Song et
    al. 2021, eq. 13), so a model trained by `FlowMatchingLoss` samples and has likelihoods
    like any score model. For `RectifiedFlow` `D = 1` and `eps_hat = (1 - t) F + x`; for a VP
    SDE `D = beta m / (2 s)`.

    **Arguments:**

    - `sigma_data`: the standard deviation of the data (in model scale) it is tuned for.
    """

    sigma_data: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        if not self.sigma_data > 0:
            raise ValueError(f"sigma_data must be positive, got {self.sigma_data}.")

    def coefficients(self, sde, t):
        m, s = sde.marginal(t)
        dm, ds = sde.marginal_derivative(t)
        big_d = m * ds - dm * s
        c_in = jnp.reciprocal(jnp.sqrt((m * self.sigma_data) ** 2 + s**2))
        return c_in, -dm / (big_d * c_in), m / big_d, 0.25 * jnp.log(s / m)


class ScoreModel(AbstractScoreModel):
    """A score `score(t, x) = -eps_hat(t, x) / s(t)` built from a network `F` through a
    preconditioning (`eps_hat = c_skip c_in x + c_out F(c_noise, c_in x)`).

    The noise prediction `eps_hat` estimates the `eps` of `x_t = m(t) x_0 + s(t) eps`; since
    `grad log p_t(x_t | x_0) = -eps / s(t)`, dividing by the marginal std gives the score
    (Song et al. 2021, appendix C; Ho et al. 2020).

    **Arguments:**

    - `net`: a module called as `net(c, x, *, y=None, key=None)` on one example.
    - `sde`: the SDE whose marginal std scales the output.
    - `preconditioning`: `EDMPreconditioning(sigma_data=1.0)` (the default) or
      `NoisePrediction()` (the network predicts `eps`, Ho et al. 2020; Song et al. 2021).
    - `dequantizer`: for integer images, how training dequantizes them (a
      `UniformDequantizer`, or a `VariationalDequantizer` trained with the model); None
      trains on the data as they are.

    Called as `model(t, x, *, y=None, key=None)` on one example; `key` enables dropout.
    """

    net: Callable[..., Array]
    sde: AbstractSDE
    preconditioning: AbstractPreconditioning = EDMPreconditioning()
    dequantizer: AbstractDequantizer | None = None

    def __check_init__(self):
        if isinstance(self.net, AbstractSDE) and not isinstance(self.sde, AbstractSDE):
            raise ValueError(
                "ScoreModel takes the network first, then the SDE: ScoreModel(net, sde), got "
                f"ScoreModel({type(self.net).__name__}, {type(self.sde).__name__})."
            )
        if not isinstance(self.sde, AbstractSDE):
            raise ValueError(
                f"sde must be an sgm SDE (VPSDE, SubVPSDE, VESDE), got {type(self.sde).__name__}."
            )
        if not callable(self.net):
            raise ValueError(
                f"net must be a network net(c, x, *, y, key), got {type(self.net).__name__}."
            )

    def noise_prediction(
        self,
        t: ScalarLike,
        x: Float[Array, "*shape"],
        *,
        y: Array | None = None,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "*shape"]:
        """The estimate `eps_hat` of the noise `eps` at `(t, x)`."""
        t = _check_time(self.sde, t)
        c_in, c_skip, c_out, c_noise = self.preconditioning.coefficients(self.sde, t)
        z = c_in * x
        return c_skip * z + c_out * self.net(c_noise, z, y=y, key=key)

    def __call__(
        self,
        t: ScalarLike,
        x: Float[Array, "*shape"],
        *,
        y: Array | None = None,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "*shape"]:
        std = self.sde.marginal(t)[1]
        return -self.noise_prediction(t, x, y=y, key=key) / std
