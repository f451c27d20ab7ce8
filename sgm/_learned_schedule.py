"""A learned noise schedule (Kingma et al. 2021, *Variational Diffusion Models*, sec. 3.2,
appendix H): a variance-preserving SDE whose log-SNR is a monotone network of time, trained
with the score model by the continuous-time bound.

With `gamma(t) = -lambda(t)` (the negative log-SNR), VDM's variance-preserving marginal is
`m(t)^2 = sigmoid(-gamma)`, `s(t)^2 = sigmoid(gamma)` (their eq. 4). As an Ito SDE
`dx = f x dt + g dw` it has (differentiate `log m` and `s^2 - 2 f s^2 = g^2 ...`)

`f(t) = d log m / dt = -gamma'(t) s(t)^2 / 2`,   `g(t)^2 = d s^2/dt - 2 f s^2 = gamma'(t) s(t)^2`,

so likelihood weighting gives VDM's diffusion loss: `g^2 / s^2 ||eps_hat - eps||^2 =
gamma'(t) ||eps_hat - eps||^2` (their eq. 17). Its expectation over uniform `t` depends on the
schedule only through its end points when the network sees the noise level rather than `t`
(their sec. 5.1; `EDMPreconditioning` conditions on `log sigma`), so the schedule's shape is
trained to minimise the estimator's variance (their appendix I.2; `DSMLoss` does this for an
`AbstractLearnedSDE`), and its end points stay where they are set.
"""

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Scalar, ScalarLike

from ._checks import check_int
from ._sde import AbstractSDE, _check_interval, _check_time


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class AbstractLearnedSDE(AbstractSDE):
    """An SDE with trainable arrays (its schedule). It lives inside the `ScoreModel` that is
    trained, so training updates it; `DSMLoss` trains it by the variance of the likelihood
    bound's estimate. Its configuration (`sgm.register`) holds only its static fields: the
    arrays are initialised from them and restored from the model's checkpoint."""


class LearnedVPSDE(AbstractLearnedSDE):
    """Variance-preserving SDE with a learned monotone log-SNR (VDM, appendix H):

    `lambda(t) = lambda_max + (lambda_min - lambda_max) (h(t) - h(t0)) / (h(t1) - h(t0))`,
    `h(t) = u + sum_k a_k sigmoid(w_k u + b_k) / K`, `u = t / t1`, `a_k, w_k > 0`,

    increasing `h`, so `lambda` decreases from `log_snr_max` at `t0` to `log_snr_min` at `t1`
    whatever the parameters. The initial `h` is close to `u` (knees spread evenly over
    `[0, 1]`): the schedule starts near VDM's fixed linear one, `lambda` linear in `t`.
    `m(t)^2 = sigmoid(lambda)`, `s(t)^2 = sigmoid(-lambda)`, prior `N(0, I)`.

    **Arguments:**

    - `log_snr_max`, `log_snr_min`: the log-SNR at `t0` and at `t1` (fixed). The defaults are
      those of `VPSDE(0.1, 20)` at `t0 = 1e-5` and `t1 = 1`, so that likelihoods truncated at
      `t0` are comparable.
    - `hidden`: `K`, the number of sigmoid units.
    - `t0`, `t1`: the time interval.
    - `raw_a`, `raw_w`, `b`: the parameters (softplus of `raw_*`); None initialises them. A
      configuration never holds them.
    """

    log_snr_max: float = eqx.field(static=True)
    log_snr_min: float = eqx.field(static=True)
    hidden: int = eqx.field(static=True)
    t0: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    # NumPy arrays as constructed (see __init__), JAX arrays once trained or loaded
    raw_a: Float[Array | np.ndarray, " hidden"] = eqx.field(metadata={"learned": True})
    raw_w: Float[Array | np.ndarray, " hidden"] = eqx.field(metadata={"learned": True})
    b: Float[Array | np.ndarray, " hidden"] = eqx.field(metadata={"learned": True})

    def __init__(
        self,
        log_snr_max: float = 13.8155,
        log_snr_min: float = -10.0500,
        hidden: int = 64,
        t0: float = 1e-5,
        t1: float = 1.0,
        raw_a: Array | np.ndarray | None = None,
        raw_w: Array | np.ndarray | None = None,
        b: Array | np.ndarray | None = None,
    ):
        if not log_snr_min < log_snr_max:
            raise ValueError(
                f"LearnedVPSDE needs log_snr_min < log_snr_max, got {log_snr_min} and "
                f"{log_snr_max}."
            )
        hidden = check_int("LearnedVPSDE.hidden", hidden)
        _check_interval("LearnedVPSDE", t0, t1)
        self.log_snr_max, self.log_snr_min = float(log_snr_max), float(log_snr_min)
        self.hidden, self.t0, self.t1 = hidden, float(t0), float(t1)
        # NumPy for the initial values: building one (an experiment at import) must not start
        # JAX's backend, which `jax.distributed.initialize` has to precede
        centres = (np.arange(hidden, dtype=np.float32) + 0.5) / hidden
        w = 10.0
        full = lambda v: np.full(hidden, v, np.float32)  # noqa: E731
        self.raw_a = full(_softplus_inverse(1.0)) if raw_a is None else raw_a
        self.raw_w = full(_softplus_inverse(w)) if raw_w is None else raw_w
        self.b = (-w * centres).astype(np.float32) if b is None else b
        for name in ("raw_a", "raw_w", "b"):
            if np.shape(getattr(self, name)) != (hidden,):
                raise ValueError(
                    f"{name} must have shape ({hidden},), got {np.shape(getattr(self, name))}."
                )

    def _h(self, t) -> Scalar:
        u = t / self.t1
        a, w = jax.nn.softplus(self.raw_a), jax.nn.softplus(self.raw_w)
        return u + jnp.mean(a * jax.nn.sigmoid(w * u + self.b))

    def log_snr(self, t: ScalarLike) -> Scalar:
        """`lambda(t)`, monotone decreasing, `log_snr_max` at `t0` and `log_snr_min` at `t1`."""
        t = _check_time(self, t)
        h0, h1 = self._h(self.t0), self._h(self.t1)
        frac = (self._h(t) - h0) / (h1 - h0)
        return self.log_snr_max + (self.log_snr_min - self.log_snr_max) * frac

    def _log_snr_and_gamma_prime(self, t) -> tuple[Scalar, Scalar]:
        """`(lambda(t), gamma'(t) = -lambda'(t) > 0)` from one forward-mode pass."""
        t = jnp.asarray(t, dtype=float)
        lam, dlam = jax.jvp(self.log_snr, (t,), (jnp.ones_like(t),))
        return lam, -dlam

    def gamma_prime(self, t: ScalarLike) -> Scalar:
        """`gamma'(t) = -lambda'(t) > 0`, by forward-mode differentiation."""
        return self._log_snr_and_gamma_prime(t)[1]

    def marginal(self, t):
        lam = self.log_snr(t)
        return jnp.sqrt(jax.nn.sigmoid(lam)), jnp.sqrt(jax.nn.sigmoid(-lam))

    def drift_coeff(self, t):
        lam, gamma_prime = self._log_snr_and_gamma_prime(t)
        return -0.5 * gamma_prime * jax.nn.sigmoid(-lam)

    def diffusion(self, t):
        lam, gamma_prime = self._log_snr_and_gamma_prime(t)
        return jnp.sqrt(gamma_prime * jax.nn.sigmoid(-lam))

    def transition(self, s, t):
        # m_t / m_s and s_t^2 - (m_t/m_s)^2 s_s^2 = sigmoid(-l_t) - sigmoid(l_t) / sigmoid(l_s)
        # sigmoid(-l_s) = sigmoid(-l_t) (1 - exp(l_t - l_s)) (VDM eq. 33), without cancellation.
        ls, lt = self.log_snr(s), self.log_snr(t)
        a = jnp.exp(0.5 * (jax.nn.log_sigmoid(lt) - jax.nn.log_sigmoid(ls)))
        var = jax.nn.sigmoid(-lt) * -jnp.expm1(lt - ls)
        return a, jnp.sqrt(jnp.maximum(var, 0.0))

    def noise_conditioning(self, t):
        """`log(sigma) / 4 = -lambda / 8`: the noise level, not `t`, so that a network trained
        under one schedule means the same under another (VDM sec. 5.1)."""
        return -0.125 * self.log_snr(t)

    def prior_std(self):
        return 1.0

    @property
    def sampling_eps(self):
        return 1e-3


def _settings(sde: AbstractSDE) -> dict:
    """The fields of `sde` that are settings, not learned arrays."""
    fields = dataclasses.fields(sde)  # pyright: ignore[reportArgumentType]
    return {f.name: getattr(sde, f.name) for f in fields if not f.metadata.get("learned")}


def same_sde(a: AbstractSDE, b: AbstractSDE) -> bool:
    """Whether `a` and `b` are the same SDE; a learned one is the same SDE whatever its
    parameters have learned (its class and configuration agree)."""
    if isinstance(a, AbstractLearnedSDE) or isinstance(b, AbstractLearnedSDE):
        return type(a) is type(b) and _settings(a) == _settings(b)
    return a == b
