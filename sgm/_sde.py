"""Linear SDEs that perturb data into noise (Song et al. 2021, "Score-Based Generative
Modeling through SDEs", section 3.4 and appendix B).

Every SDE here has the form `dx = f(t) x dt + g(t) dw` with a scalar drift coefficient, so the
transition kernel is Gaussian: `x_t | x_0 ~ N(m(t) x_0, s(t)^2 I)`. The subclasses provide the
schedule; everything derived from it (the reverse-time SDE, the probability-flow ODE, the
transition between two times, the log-SNR and its inverse, Tweedie's denoiser and a network's
noise conditioning) is written once, here, and samplers, losses and likelihoods call it.
"""

import abc
import math
from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Scalar, ScalarLike

from ._traced_checks import error_if

Score = Callable[..., Array]

_COSINE_S = 0.008  # Nichol & Dhariwal (2021), eq. 17.
_SCHEDULES = ("linear", "cosine", "trigonometric")


def _check_time(sde: "AbstractSDE", t: ScalarLike) -> Scalar:
    t = jnp.asarray(t)
    if t.ndim != 0:
        raise ValueError(
            f"t must be a scalar time (the SDE acts on one example), got shape {t.shape}; "
            "use jax.vmap to evaluate several times."
        )
    bad = (t < 0) | (t > sde.t1 * (1 + 1e-6))
    return error_if(t, bad, f"t must lie in [0, t1={sde.t1}]")


class AbstractSDE(eqx.Module):
    """A linear SDE `dx = f(t) x dt + g(t) dw` on `[t0, t1]` with a Gaussian prior at `t1`.

    Subclasses implement `drift_coeff` (f), `diffusion` (g), `marginal` ((m, s)), the prior and
    `sampling_eps`. Everything else is derived here.
    """

    t0: eqx.AbstractVar[float]
    t1: eqx.AbstractVar[float]

    @abc.abstractmethod
    def drift_coeff(self, t: ScalarLike) -> Scalar:
        """The scalar `f(t)` of the drift `f(t) x`."""

    @abc.abstractmethod
    def diffusion(self, t: ScalarLike) -> Scalar:
        """The diffusion coefficient `g(t)`."""

    @abc.abstractmethod
    def marginal(self, t: ScalarLike) -> tuple[Scalar, Scalar]:
        """`(m(t), s(t))` with `x_t | x_0 ~ N(m(t) x_0, s(t)^2 I)`."""

    @abc.abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the zero-mean Gaussian prior at `t1`."""

    @property
    @abc.abstractmethod
    def sampling_eps(self) -> float:
        """Default end time of sampling (Song et al. 2021: 1e-3 for VP/subVP, 1e-5 for VE)."""

    def marginal_derivative(self, t: ScalarLike) -> tuple[Scalar, Scalar]:
        """`(m'(t), s'(t))`, the time derivatives of the marginal's coefficients (by forward-mode
        differentiation of `marginal`). The conditional velocity of the path
        `x_t = m x_0 + s eps` is `m' x_0 + s' eps` (Lipman et al. 2023, eq. 20)."""
        t = jnp.asarray(t, dtype=float)
        _, (dm, ds) = jax.jvp(self.marginal, (t,), (jnp.ones_like(t),))
        return dm, ds

    def drift(self, t: ScalarLike, x: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """The forward drift `f(t) x`."""
        return self.drift_coeff(t) * jnp.asarray(x)

    def transition(self, s: ScalarLike, t: ScalarLike) -> tuple[Scalar, Scalar]:
        """`(a, b)` with `x_t | x_s ~ N(a x_s, b^2 I)` for `s <= t` (used by the reverse-diffusion
        predictor and the Langevin corrector's `alpha`)."""
        ms, ss = self.marginal(s)
        mt, st = self.marginal(t)
        a = mt / ms
        return a, jnp.sqrt(jnp.maximum(st**2 - (a * ss) ** 2, 0.0))

    def reverse_drift(
        self, score: Score, t: ScalarLike, x: Float[Array, "*shape"], **score_kwargs
    ) -> Float[Array, "*shape"]:
        """Reverse-time SDE drift `f(t) x - g(t)^2 score(t, x)` (Song et al. 2021, eq. 6)."""
        return self.drift(t, x) - self.diffusion(t) ** 2 * score(t, x, **score_kwargs)

    def ode_drift(
        self, score: Score, t: ScalarLike, x: Float[Array, "*shape"], **score_kwargs
    ) -> Float[Array, "*shape"]:
        """Probability-flow ODE `f(t) x - g(t)^2 score(t, x) / 2` (Song et al. 2021, eq. 13)."""
        return self.drift(t, x) - 0.5 * self.diffusion(t) ** 2 * score(t, x, **score_kwargs)

    def log_snr(self, t: ScalarLike) -> Scalar:
        """The log signal-to-noise ratio `lambda(t) = log(m(t)^2 / s(t)^2)` (Kingma et al. 2021,
        *Variational Diffusion Models*, eq. 3), decreasing in `t`. Karras et al.'s noise level
        `sigma = s / m` is `exp(-lambda / 2)`."""
        m, s = self.marginal(t)
        return 2 * (jnp.log(m) - jnp.log(s))

    def time_at_log_snr(self, log_snr: ScalarLike) -> Scalar:
        """The time `t` with `log_snr(t) = log_snr`, clipped to `[0, t1]`. This default bisects
        (`log_snr` is monotone); the SDEs here override it with their closed form."""
        target = jnp.asarray(log_snr, dtype=float)

        def body(_, bounds):
            a, b = bounds
            mid = 0.5 * (a + b)
            above = self.log_snr(mid) > target
            return jnp.where(above, mid, a), jnp.where(above, b, mid)

        lo, hi = jnp.zeros_like(target), jnp.full_like(target, self.t1)
        a, b = lax.fori_loop(0, 60, body, (lo, hi))
        return 0.5 * (a + b)

    def denoise(
        self, score: Score, t: ScalarLike, x: Float[Array, "*shape"], **score_kwargs
    ) -> Float[Array, "*shape"]:
        """Tweedie's formula (Efron 2011): `E[x_0 | x_t = x] = (x + s(t)^2 score(t, x)) / m(t)`,
        the data prediction of DPM-Solver++ and Karras et al.'s denoiser `D`."""
        m, s = self.marginal(t)
        return (x + s**2 * score(t, x, **score_kwargs)) / m

    def noise_conditioning(self, t: ScalarLike) -> Scalar:
        """The scalar a network is conditioned on at time `t` (Song et al. 2021, appendix C):
        `t` itself here; an SDE whose noise scale spans several decades overrides it."""
        return jnp.asarray(_check_time(self, t), dtype=float)

    def prior_sample(self, key: PRNGKeyArray, shape: tuple[int, ...]) -> Float[Array, "*shape"]:
        """A draw from the prior `N(0, prior_std^2 I)` of the given shape."""
        return self.prior_std() * jr.normal(key, shape)

    def prior_log_prob(self, x: Float[ArrayLike, "*shape"]) -> Scalar:
        """Log-density of the prior at one example `x`, summed over all its entries."""
        x = jnp.asarray(x)
        var = self.prior_std() ** 2
        return -0.5 * (jnp.sum(x**2) / var + x.size * math.log(2 * math.pi * var))


def _check_interval(name: str, t0: float, t1: float) -> None:
    if not 0 < t0 < t1:
        raise ValueError(f"{name} needs 0 < t0 < t1, got t0={t0}, t1={t1}.")


class _VPSchedule(eqx.Module):
    """`beta(t)` and `B(t) = int_0^t beta` for the linear, cosine and trigonometric schedules."""

    beta_min: float = eqx.field(static=True)
    beta_max: float = eqx.field(static=True)
    schedule: str = eqx.field(static=True)

    def __check_init__(self):
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {_SCHEDULES}, got {self.schedule!r}.")
        if not 0 <= self.beta_min < self.beta_max:
            raise ValueError(
                f"need 0 <= beta_min < beta_max, got beta_min={self.beta_min}, "
                f"beta_max={self.beta_max}."
            )

    def _cosine_knee(self) -> float:
        # The cosine beta(t) = pi/(1+s) tan(pi/2 (t+s)/(1+s)) diverges at t=1; like Nichol &
        # Dhariwal's clip of beta at 0.999, it is capped at beta_max from the time it reaches it.
        s = _COSINE_S
        knee = (1 + s) * (2 / math.pi) * math.atan(self.beta_max * (1 + s) / math.pi) - s
        return min(knee, 1.0)

    def _cosine_integral(self, t):
        # B(t) = -2 log(cos(a + d) / cos(a)), a = pi/2 s/(1+s), d = pi/2 t/(1+s), written as
        # -2 log1p(-2 sin^2(d/2) - tan(a) sin(d)) so it keeps its precision as t -> 0.
        s = _COSINE_S
        a = 0.5 * math.pi * s / (1 + s)
        d = 0.5 * math.pi * t / (1 + s)
        return -2 * jnp.log1p(-2 * jnp.sin(0.5 * d) ** 2 - math.tan(a) * jnp.sin(d))

    def beta(self, t):
        if self.schedule == "trigonometric":
            return math.pi * jnp.tan(0.5 * math.pi * t)
        if self.schedule == "linear":
            return self.beta_min + t * (self.beta_max - self.beta_min)
        knee = self._cosine_knee()
        tc = jnp.minimum(t, knee)
        s = _COSINE_S
        beta = math.pi / (1 + s) * jnp.tan(0.5 * math.pi * (tc + s) / (1 + s))
        return jnp.where(t < knee, beta, self.beta_max)

    def integral(self, t):
        if self.schedule == "trigonometric":
            # B(t) = -2 log cos(pi t / 2): as -log1p(-sin^2(pi t / 2)) near t = 0 and as
            # -2 log sin(pi (1 - t) / 2) near t = 1, precise at both ends.
            below = t < 0.5
            small = -jnp.log1p(-(jnp.sin(0.5 * math.pi * jnp.where(below, t, 0.0)) ** 2))
            large = -2 * jnp.log(jnp.sin(0.5 * math.pi * (1 - jnp.where(below, 0.5, t))))
            return jnp.where(below, small, large)
        if self.schedule == "linear":
            return self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)
        knee = self._cosine_knee()
        tc = jnp.minimum(t, knee)
        return self._cosine_integral(tc) + self.beta_max * jnp.maximum(t - knee, 0.0)

    def inverse_integral(self, big_b):
        """The `t >= 0` with `integral(t) = big_b`, in closed form and without cancellation."""
        if self.schedule == "trigonometric":
            # tan(pi t / 2)^2 = 1 / cos^2 - 1 = expm1(B).
            return (2 / math.pi) * jnp.arctan(jnp.sqrt(jnp.expm1(big_b)))
        if self.schedule == "linear":
            slope = self.beta_max - self.beta_min
            if self.beta_min == 0:
                return jnp.sqrt(2 * big_b / slope)
            # the root of beta_min t + slope t^2 / 2 = B as 2B / (b + sqrt(b^2 + 2 slope B))
            return 2 * big_b / (self.beta_min + jnp.sqrt(self.beta_min**2 + 2 * slope * big_b))
        knee = self._cosine_knee()
        b_knee = self._cosine_integral(knee)
        below = self._cosine_inverse(jnp.minimum(big_b, b_knee))
        return jnp.where(big_b <= b_knee, below, knee + (big_b - b_knee) / self.beta_max)

    def _cosine_inverse(self, big_b):
        # cos(a + d) = cos(a) (1 - q) with q = 1 - exp(-B/2); tan d = tan((a + d) - a) from
        # tan(a + d) - tan(a) = q (2 - q) / (c (1 - q) (S + (1 - q) sin a)),
        # S = sin(a + d) = sqrt(sin^2 a + c^2 q (2 - q)): every term keeps its precision as B -> 0.
        s = _COSINE_S
        a = 0.5 * math.pi * s / (1 + s)
        c, sa = math.cos(a), math.sin(a)
        q = -jnp.expm1(-0.5 * big_b)
        big_s = jnp.sqrt(sa**2 + c**2 * q * (2 - q))
        diff = q * (2 - q) / (c * (1 - q) * (big_s + (1 - q) * sa))
        tan_sum = big_s / (c * (1 - q))
        d = jnp.arctan2(diff, 1 + tan_sum * math.tan(a))
        return d * (1 + s) * 2 / math.pi


class _AbstractVPFamily(AbstractSDE):
    """The VP and subVP SDEs: drift `-beta(t) x / 2`, prior `N(0, I)`, one noise schedule."""

    beta_min: eqx.AbstractVar[float]
    beta_max: eqx.AbstractVar[float]
    schedule: eqx.AbstractVar[Literal["linear", "cosine", "trigonometric"]]

    def __check_init__(self):
        _VPSchedule(self.beta_min, self.beta_max, self.schedule)
        _check_interval(type(self).__name__, self.t0, self.t1)
        if self.schedule == "trigonometric" and not self.t1 < 1:
            raise ValueError(
                f"schedule='trigonometric' has beta(t) = pi tan(pi t / 2), infinite at t = 1 "
                f"(m(1) = 0); pass t1 < 1, e.g. t1=0.995, got t1={self.t1}."
            )

    @property
    def _schedule(self) -> _VPSchedule:
        return _VPSchedule(self.beta_min, self.beta_max, self.schedule)

    def _integral(self, t):
        return self._schedule.integral(_check_time(self, t))

    def drift_coeff(self, t):
        return -0.5 * self._schedule.beta(_check_time(self, t))

    def prior_std(self):
        return 1.0

    @property
    def sampling_eps(self):
        return 1e-3


class VPSDE(_AbstractVPFamily):
    """Variance-preserving SDE `dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw` (Song et al. 2021,
    eq. 11), the continuous limit of DDPM.

    With `B(t) = int_0^t beta`: `m(t) = exp(-B/2)`, `s(t)^2 = 1 - exp(-B)`, computed as
    `-expm1(-B)` so that it stays accurate near `t = 0`. Prior `N(0, I)`.

    **Arguments:**

    - `beta_min`, `beta_max`: the noise schedule. For `schedule="linear"`,
      `beta(t) = beta_min + t (beta_max - beta_min)`.
    - `schedule`: `"linear"`, `"cosine"` (Nichol & Dhariwal 2021, eq. 17, with
      `alpha_bar(t) = exp(-B(t))`; `beta_min` is unused and `beta(t)` is capped at `beta_max`, the
      continuous analogue of their clipping) or `"trigonometric"`: `beta(t) = pi tan(pi t / 2)`,
      `B(t) = -2 log cos(pi t / 2)`, so that `m = cos(pi t / 2)`, `s = sin(pi t / 2)` exactly: the
      trigonometric interpolant of stochastic interpolants (Albergo & Vanden-Eijnden 2023) and
      of the GVP path of Ma et al. (2024, SiT) is this VP SDE. It is the cosine schedule with
      offset `s = 0` and no cap; `beta_min`, `beta_max` are unused and, since `beta(1)` is
      infinite, it needs `t1 < 1`. At `t1 = 1 - delta`, `m(t1) = sin(pi delta / 2)` and the
      prior `N(0, I)` is off the marginal of data `N(mu, Sigma)` by the closed-form
      `KL(N(m mu, m^2 Sigma + s^2 I) || N(0, I))`, about `m^2 |mu|^2 / 2` nats.
    - `t0`, `t1`: the time interval of the SDE.
    """

    beta_min: float = eqx.field(static=True, default=0.1)
    beta_max: float = eqx.field(static=True, default=20.0)
    schedule: Literal["linear", "cosine", "trigonometric"] = eqx.field(
        static=True, default="linear"
    )
    t0: float = eqx.field(static=True, default=1e-5)
    t1: float = eqx.field(static=True, default=1.0)

    def diffusion(self, t):
        return jnp.sqrt(self._schedule.beta(_check_time(self, t)))

    def marginal(self, t):
        big_b = self._integral(t)
        return jnp.exp(-0.5 * big_b), jnp.sqrt(-jnp.expm1(-big_b))

    def transition(self, s, t):
        delta = self._integral(t) - self._integral(s)
        return jnp.exp(-0.5 * delta), jnp.sqrt(-jnp.expm1(-delta))

    def time_at_log_snr(self, log_snr):
        # s^2 / m^2 = exp(B) - 1 = exp(-lambda), so B = log(1 + exp(-lambda)).
        big_b = jax.nn.softplus(-jnp.asarray(log_snr, dtype=float))
        return jnp.clip(self._schedule.inverse_integral(big_b), 0.0, self.t1)


class SubVPSDE(_AbstractVPFamily):
    """Sub-variance-preserving SDE (Song et al. 2021, eq. 29):
    `dx = -beta(t) x / 2 dt + sqrt(beta(t) (1 - exp(-2 B(t)))) dw`.

    Its marginal has `m(t) = exp(-B/2)` and standard deviation `s(t) = 1 - exp(-B)` (the
    variance is `(1 - exp(-B))^2`, always below the VP SDE's). Prior `N(0, I)`.

    **Arguments:** as `VPSDE`.
    """

    beta_min: float = eqx.field(static=True, default=0.1)
    beta_max: float = eqx.field(static=True, default=20.0)
    schedule: Literal["linear", "cosine", "trigonometric"] = eqx.field(
        static=True, default="linear"
    )
    t0: float = eqx.field(static=True, default=1e-5)
    t1: float = eqx.field(static=True, default=1.0)

    def diffusion(self, t):
        t = _check_time(self, t)
        return jnp.sqrt(self._schedule.beta(t) * -jnp.expm1(-2 * self._schedule.integral(t)))

    def marginal(self, t):
        big_b = self._integral(t)
        return jnp.exp(-0.5 * big_b), -jnp.expm1(-big_b)

    def transition(self, s, t):
        # b^2 = int_s^t (m_t/m_u)^2 g(u)^2 du = (1 - e^{-(B_t - B_s)}) (1 - e^{-(B_t + B_s)}).
        bs, bt = self._integral(s), self._integral(t)
        var = -jnp.expm1(-(bt - bs)) * -jnp.expm1(-(bt + bs))
        return jnp.exp(-0.5 * (bt - bs)), jnp.sqrt(var)

    def time_at_log_snr(self, log_snr):
        # s / m = (1 - exp(-B)) exp(B/2) = 2 sinh(B/2) = exp(-lambda/2).
        big_b = 2 * jnp.arcsinh(0.5 * jnp.exp(-0.5 * jnp.asarray(log_snr, dtype=float)))
        return jnp.clip(self._schedule.inverse_integral(big_b), 0.0, self.t1)


class VESDE(AbstractSDE):
    """Variance-exploding SDE (Song et al. 2021, eq. 9, 30), the continuous limit of SMLD/NCSN:
    `dx = sigma(t) sqrt(2 log(sigma_max / sigma_min)) dw` with
    `sigma(t) = sigma_min (sigma_max / sigma_min)^t`.

    The marginal is exact for data at `t = 0`: `m = 1`,
    `s(t)^2 = sigma(t)^2 - sigma_min^2 = sigma_min^2 expm1(2 t log(sigma_max / sigma_min))`.
    Prior `N(0, s(t1)^2 I)`.

    **Arguments:**

    - `sigma_min`, `sigma_max`: the geometric noise schedule; `sigma_max` should be comparable
      to the largest distance between data points (Song & Ermon 2020, technique 1).
    - `t0`, `t1`: the time interval of the SDE.
    """

    sigma_min: float = eqx.field(static=True, default=0.01)
    sigma_max: float = eqx.field(static=True, default=50.0)
    t0: float = eqx.field(static=True, default=1e-5)
    t1: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"VESDE needs 0 < sigma_min < sigma_max, got sigma_min={self.sigma_min}, "
                f"sigma_max={self.sigma_max}."
            )
        _check_interval("VESDE", self.t0, self.t1)

    @property
    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t: ScalarLike) -> Scalar:
        """The noise scale `sigma(t) = sigma_min (sigma_max / sigma_min)^t`."""
        return self.sigma_min * jnp.exp(_check_time(self, t) * self._log_ratio)

    def drift_coeff(self, t):
        _check_time(self, t)
        return jnp.zeros(())

    def diffusion(self, t):
        return self.sigma(t) * math.sqrt(2 * self._log_ratio)

    def marginal(self, t):
        t = _check_time(self, t)
        std = self.sigma_min * jnp.sqrt(jnp.expm1(2 * t * self._log_ratio))
        return jnp.ones_like(std), std

    def transition(self, s, t):
        # s_t^2 - s_s^2 = sigma(t)^2 (1 - exp(-2 (t - s) log r)).
        # (ScalarLike admits np.bool_, which has no `-`; times are real numbers or arrays)
        delta = t - s  # pyright: ignore[reportOperatorIssue]
        var = self.sigma(t) ** 2 * -jnp.expm1(-2 * delta * self._log_ratio)
        return jnp.ones_like(var), jnp.sqrt(var)

    def prior_std(self):
        return self.sigma_min * math.sqrt(math.expm1(2 * self.t1 * self._log_ratio))

    def time_at_log_snr(self, log_snr):
        # s^2 = sigma_min^2 expm1(2 t log r) = exp(-lambda).
        ratio = jnp.exp(-jnp.asarray(log_snr, dtype=float)) / self.sigma_min**2
        return jnp.clip(jnp.log1p(ratio) / (2 * self._log_ratio), 0.0, self.t1)

    def noise_conditioning(self, t):
        """`log s(t)`: the VE noise scale spans several decades (Song et al. 2021, app. C)."""
        return jnp.log(self.marginal(t)[1])

    @property
    def sampling_eps(self):
        return 1e-5
