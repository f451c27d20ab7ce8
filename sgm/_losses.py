"""Denoising score matching (Vincent 2011; Song et al. 2021, eq. 7) in noise-prediction form.

With `x_t = m(t) x_0 + s(t) eps`, the regression target of the score is
`grad log p(x_t | x_0) = -eps / s(t)`, so for a `ScoreModel` (score `-eps_hat / s`)
`lambda(t) ||score - target||^2 = lambda(t) / s(t)^2 ||eps_hat - eps||^2`:

- `weighting="sigma2"`, `lambda = s^2` (Song et al. 2021): `||eps_hat - eps||^2`;
- `weighting="likelihood"`, `lambda = g^2` (Song et al. 2021, *Maximum Likelihood Training*):
  `g^2 / s^2 ||eps_hat - eps||^2`, whose time integral bounds the negative log-likelihood;
- `weighting="edm"` (the default), the network's own output error unweighted (Karras et al.
  2022, eq. 8, `lambda = 1 / c_out^2`): `||eps_hat - eps||^2 / c_out^2` with the model's
  preconditioning.

Each weighting comes with its paper's time density: uniform on `[eps, t1]` for `"sigma2"` and
`"likelihood"`; for `"edm"` `log sigma`, `sigma = s / m`, normal with mean `p_mean` and
standard deviation `p_std` truncated to the training interval (Karras et al. 2022, sec. 5).
`time_density="uniform"` or `"lognormal"` overrides it; the density is part of the objective.

For any linear SDE `g^2 / s^2 = d/dt log(s^2 / m^2)` (differentiate `s^2/m^2`), so importance
sampling `t` with density proportional to `g^2 / s^2` means drawing `rho = log(s^2 / m^2)`
uniformly and inverting; the weight then becomes a constant.
"""

import abc
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jax.scipy.special import ndtr, ndtri
from jaxtyping import Array, Float, PRNGKeyArray, Scalar

from ._coupling import AbstractCoupling, IndependentCoupling
from ._dequant import VariationalDequantizer
from ._learned_schedule import AbstractLearnedSDE
from ._score import ScoreModel, VelocityPrediction
from ._sde import AbstractSDE

_WEIGHTINGS = ("sigma2", "likelihood", "edm")
_TIME_DENSITIES = ("uniform", "lognormal")
_TIME_SAMPLING = ("uniform", "stratified", "antithetic")


def log_inverse_snr(sde: AbstractSDE, t) -> Scalar:
    """`rho(t) = log(s(t)^2 / m(t)^2) = -sde.log_snr(t)`, increasing in `t`, with
    `d rho / dt = g^2 / s^2`."""
    return -sde.log_snr(t)


def sample_uniforms(key: PRNGKeyArray, n: int, method: str) -> Float[Array, " n"]:
    """`n` numbers in `[0, 1)` for a batch: independent, stratified (one per stratum
    `[i/n, (i+1)/n)`), or antithetic (`u` and `1 - u` in pairs)."""
    if method == "uniform":
        return jr.uniform(key, (n,))
    if method == "stratified":
        return (jnp.arange(n) + jr.uniform(key, (n,))) / n
    half = jr.uniform(key, ((n + 1) // 2,))
    return jnp.concatenate([half, 1 - half])[:n]


class AbstractLoss(eqx.Module):
    """A training objective: `batch_loss(model, x0, *, key, y=None)` is what `sgm.train`
    minimises; `label_dropout` and `null_label` set classifier-free guidance's label dropout."""

    label_dropout: eqx.AbstractVar[float]
    null_label: eqx.AbstractVar[int | None]

    @abc.abstractmethod
    def batch_loss(
        self,
        model: ScoreModel,
        x0: Float[Array, "n *shape"],
        *,
        key: PRNGKeyArray,
        y: Array | None = None,
    ) -> Scalar:
        """The mean loss over a batch."""


class DSMLoss(AbstractLoss):
    """Denoising score-matching loss; `__call__` acts on one example, `batch_loss` on a batch.

    **Arguments:**

    - `weighting`: `"edm"` (Karras et al.), `"sigma2"` (unweighted noise prediction) or
      `"likelihood"`.
    - `importance_sampling`: with `"likelihood"`, draw `t` with density proportional to
      `g^2 / s^2` (variance reduction); the estimate stays unbiased.
    - `time_density`: `"uniform"` in `t`, or `"lognormal"` in `sigma = s / m` with
      `log sigma ~ N(p_mean, p_std^2)` truncated to `[eps, t1]`; None (the default) takes
      lognormal for `"edm"` and uniform otherwise.
    - `time_sampling`: `"uniform"`, `"stratified"` or `"antithetic"` over the batch.
    - `eps`: the smallest training time (the training epsilon, separate from the sampling end
      time `sampler.t_end`).
    - `reduce`: `"mean"` or `"sum"` over the entries of one example.
    - `label_dropout`: probability of replacing a label by `null_label` (classifier-free
      guidance; Ho & Salimans 2022).
    - `null_label`: the label meaning "unconditional" (the network's `num_classes`).

    The per-example value estimates `E_{t ~ q}[lambda(t) / s(t)^2 ||eps_hat - eps||^2]`, `q` the
    time density (uniform on `[eps, t1]`, or lognormal in `sigma`).
    """

    weighting: Literal["edm", "sigma2", "likelihood"] = eqx.field(static=True, default="edm")
    importance_sampling: bool = eqx.field(static=True, default=False)
    time_sampling: Literal["uniform", "stratified", "antithetic"] = eqx.field(
        static=True, default="uniform"
    )
    time_density: Literal["uniform", "lognormal"] | None = eqx.field(static=True, default=None)
    p_mean: float = eqx.field(static=True, default=-1.2)
    p_std: float = eqx.field(static=True, default=1.2)
    eps: float = eqx.field(static=True, default=1e-5)
    reduce: Literal["mean", "sum"] = eqx.field(static=True, default="mean")
    label_dropout: float = eqx.field(static=True, default=0.0)
    null_label: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.weighting not in _WEIGHTINGS:
            raise ValueError(f"weighting must be one of {_WEIGHTINGS}, got {self.weighting!r}.")
        if self.time_sampling not in _TIME_SAMPLING:
            raise ValueError(
                f"time_sampling must be one of {_TIME_SAMPLING}, got {self.time_sampling!r}."
            )
        if self.importance_sampling and self.weighting != "likelihood":
            raise ValueError("importance_sampling applies to weighting='likelihood' only.")
        if self.time_density is not None and self.time_density not in _TIME_DENSITIES:
            raise ValueError(
                f"time_density must be None or one of {_TIME_DENSITIES}, got {self.time_density!r}."
            )
        if self.density != "uniform" and self.importance_sampling:
            raise ValueError("importance_sampling draws its own times; use time_density='uniform'.")
        if not self.p_std > 0:
            raise ValueError(f"p_std must be positive, got {self.p_std}.")
        if self.reduce not in ("mean", "sum"):
            raise ValueError(f"reduce must be 'mean' or 'sum', got {self.reduce!r}.")
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}.")
        if self.label_dropout > 0 and self.null_label is None:
            raise ValueError("label_dropout needs null_label (the network's num_classes).")
        if not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps}.")

    @property
    def density(self) -> str:
        """The time density in use: `time_density`, or the weighting's own."""
        if self.time_density is not None:
            return self.time_density
        return "lognormal" if self.weighting == "edm" else "uniform"

    def times(self, sde: AbstractSDE, u: Float[Array, " n"]) -> tuple[Array, Array]:
        """Maps uniforms to times and the weight `lambda(t) / s(t)^2` each carries."""
        lo, hi = max(self.eps, sde.t0), sde.t1
        if self.importance_sampling:
            rho_lo, rho_hi = log_inverse_snr(sde, lo), log_inverse_snr(sde, hi)
            rho = rho_lo + u * (rho_hi - rho_lo)
            t = jnp.clip(jax.vmap(lambda r: sde.time_at_log_snr(-r))(rho), lo, hi)
            # E_U[g^2/s^2 f] = Z / (hi - lo) E_q[f], with Z = rho_hi - rho_lo.
            return t, jnp.full_like(t, (rho_hi - rho_lo) / (hi - lo))
        if self.density == "lognormal":
            # rho = log sigma^2 = 2 log sigma; a truncated normal by its inverse CDF.
            a, b = (
                ndtr((0.5 * log_inverse_snr(sde, e) - self.p_mean) / self.p_std) for e in (lo, hi)
            )
            rho = 2 * (self.p_mean + self.p_std * ndtri(a + u * (b - a)))
            t = jnp.clip(jax.vmap(lambda r: sde.time_at_log_snr(-r))(rho), lo, hi)
        else:
            t = lo + u * (hi - lo)
        if self.weighting in ("sigma2", "edm"):
            return t, jnp.ones_like(t)
        g2 = jax.vmap(sde.diffusion)(t) ** 2
        s2 = jax.vmap(lambda t: sde.marginal(t)[1])(t) ** 2
        return t, g2 / s2

    def __call__(
        self,
        model: ScoreModel,
        t: Scalar,
        weight: Scalar,
        x0: Float[Array, "*shape"],
        *,
        key: PRNGKeyArray,
        y: Array | None = None,
    ) -> Scalar:
        """The loss of one example at time `t` with weight `lambda(t) / s(t)^2`."""
        nkey, dkey, lkey = jr.split(key, 3)
        entropy_term = 0.0
        if model.dequantizer is not None:
            x0, log_q = model.dequantizer(x0, key=jr.fold_in(key, 3))
            entropy_term = self._entropy_term(model, x0, log_q)
        m, s = model.sde.marginal(t)
        noise = jr.normal(nkey, x0.shape)
        if y is not None and self.label_dropout > 0:
            assert self.null_label is not None  # __check_init__ requires it with label_dropout
            y = jnp.where(jr.bernoulli(lkey, self.label_dropout), self.null_label, y)
        eps_hat = model.noise_prediction(t, m * x0 + s * noise, y=y, key=dkey)
        sq = (eps_hat - noise) ** 2
        if self.weighting == "edm":
            weight = weight / model.preconditioning.coefficients(model.sde, t)[2] ** 2
        return weight * (jnp.mean(sq) if self.reduce == "mean" else jnp.sum(sq)) + entropy_term

    def _entropy_term(self, model: ScoreModel, x0: Array, log_q: Scalar) -> Scalar:
        """`log q(u | k)` of a variational dequantizer in the loss's units: with likelihood
        weighting the loss estimates `2 / (t1 - eps)` times the negative log-likelihood bound
        (per entry with `reduce="mean"`), up to terms that do not depend on the data."""
        if not isinstance(model.dequantizer, VariationalDequantizer):
            return jnp.zeros(())
        if self.weighting != "likelihood" or self.density != "uniform":
            raise ValueError(
                "a VariationalDequantizer is trained by the likelihood bound: use "
                "DSMLoss(weighting='likelihood') with time_density='uniform'."
            )
        span = model.sde.t1 - max(self.eps, model.sde.t0)
        size = x0.size if self.reduce == "mean" else 1
        return 2 * log_q / (span * size)

    def batch_loss(
        self,
        model: ScoreModel,
        x0: Float[Array, "n *shape"],
        *,
        key: PRNGKeyArray,
        y: Array | None = None,
    ) -> Scalar:
        """Mean loss over a batch, times drawn jointly (stratified or antithetic). With a
        learned schedule (`model.sde` an `AbstractLearnedSDE`) the value is the same, and its
        gradient trains the schedule by the variance of the estimate (`variance_objective`)."""
        tkey, ekey = jr.split(key)
        n = x0.shape[0]
        learned = isinstance(model.sde, AbstractLearnedSDE)
        if learned:
            self._check_learned_schedule()
        keys = jr.split(ekey, n)

        def per_example(model):
            t, weight = self.times(model.sde, sample_uniforms(tkey, n, self.time_sampling))
            if y is None:
                return jax.vmap(lambda t, w, x, k: self(model, t, w, x, key=k))(t, weight, x0, keys)
            return jax.vmap(lambda t, w, x, k, y: self(model, t, w, x, key=k, y=y))(
                t, weight, x0, keys, y
            )

        if learned:
            return variance_objective(per_example, model)
        return jnp.mean(per_example(model))

    def _check_learned_schedule(self):
        if self.weighting != "likelihood" or self.density != "uniform" or self.importance_sampling:
            raise ValueError(
                "a learned noise schedule is trained by the likelihood bound with times uniform "
                "in t: use DSMLoss(weighting='likelihood') without importance_sampling or "
                f"time_density='lognormal' (got weighting={self.weighting!r}, time density "
                f"{self.density!r}, importance_sampling={self.importance_sampling}). Sampling "
                "uniform in the log-SNR would make the loss independent of the schedule."
            )


def variance_objective(per_example, model) -> Scalar:
    """`mean_i L_i` with `L = per_example(model)`, differentiated as VDM trains a learned
    schedule (Kingma et al. 2021, appendix I.2): the network's parameters get the gradient of
    `mean_i L_i`, the schedule's (`model.sde`) that of `mean_i L_i^2`. The bound's expectation
    depends on the schedule only through its fixed end points, so minimising the second
    moment minimises the variance of the estimate. One forward pass, two backward passes."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def losses(params):
        return per_example(eqx.combine(params, static))

    @jax.custom_vjp
    def objective(params):
        return jnp.mean(losses(params))

    def forward(params):
        per, pullback = jax.vjp(losses, params)
        return jnp.mean(per), (per, pullback)

    def backward(residuals, cotangent):
        per, pullback = residuals
        n = per.shape[0]
        (of_mean,) = pullback(jnp.full_like(per, cotangent / n))
        (of_square,) = pullback(cotangent * 2 * per / n)
        return (eqx.tree_at(lambda p: p.sde, of_mean, of_square.sde),)

    objective.defvjp(forward, backward)
    return objective(params)


_FM_DENSITIES = ("uniform", "logit_normal")


def model_velocity(
    model: ScoreModel,
    t: Scalar,
    x: Float[Array, "*shape"],
    *,
    y: Array | None = None,
    key: PRNGKeyArray | None = None,
) -> Float[Array, "*shape"]:
    """The model's velocity `v_hat(t, x)`, the probability-flow drift `f x - g^2 score / 2`
    (Song et al. 2021, eq. 13). With `VelocityPrediction` it is the network's output itself;
    otherwise it is `f x + (D / m) eps_hat`, `D = m s' - m' s`, from the noise prediction
    (`v = m' x_0 + s' eps` with `x_0 = (x - s eps) / m`)."""
    if isinstance(model.preconditioning, VelocityPrediction):
        c_in, _, _, c_noise = model.preconditioning.coefficients(model.sde, t)
        return model.net(c_noise, c_in * x, y=y, key=key)
    m, s = model.sde.marginal(t)
    dm, ds = model.sde.marginal_derivative(t)
    eps_hat = model.noise_prediction(t, x, y=y, key=key)
    return (dm / m) * x + ((m * ds - dm * s) / m) * eps_hat


def dsm_weight(sde: AbstractSDE, t) -> Scalar:
    """`w(t) = ((m s' - m' s) / m)^2`, with which, on a Gaussian path, the flow-matching loss
    is `w(t)` times the unweighted noise-prediction loss at every `t` and for every model:
    `v_hat - v = (D / m) (eps_hat - eps)` (write both with `x_0 = (x - s eps) / m`). In
    terms of the score `w(t) ||eps_hat - eps||^2 = (g^2 / 2)^2 ||score - target||^2`:
    flow matching is denoising score matching with `lambda(t) = g(t)^4 / 4` (Lipman et al.
    2023, section 4.1; Kingma & Gao 2023, "Understanding diffusion objectives", section 3).
    For `RectifiedFlow`, `w(t) = 1 / (1 - t)^2`."""
    m, s = sde.marginal(t)
    dm, ds = sde.marginal_derivative(t)
    return ((m * ds - dm * s) / m) ** 2


class FlowMatchingLoss(AbstractLoss):
    """Conditional flow matching (Lipman et al. 2023, eq. 23; Liu et al. 2023, eq. 1; Albergo &
    Vanden-Eijnden 2023) on the Gaussian path `x_t = m(t) x_0 + s(t) eps` of `model.sde`:

    `E_{t, (x_0, eps)} ||v_hat(t, x_t) - (m'(t) x_0 + s'(t) eps)||^2`,

    with `v_hat` the model's velocity (`model_velocity`; the network's output with
    `VelocityPrediction`). It is `dsm_weight(sde, t)` times `DSMLoss(weighting="sigma2")`'s
    integrand at every `t`, i.e. a weighting of the noise levels.

    **Arguments:**

    - `time_density`: `"uniform"` on `[eps, t1]`, or `"logit_normal"`: `t = sigmoid(u)`,
      `u ~ N(logit_mean, logit_std^2)`, restricted to `[eps, t1]` (Esser et al. 2024, SD3,
      section 3.1, eq. 19; their default `(0, 1)`). It samples few times near the data end:
      at equal steps it cost 0.73 bits/dim on the 8x8 digits and 1.05 on MNIST against uniform
      times (benchmarks/README.md, "Flow matching").
    - `logit_mean`, `logit_std`: the logit-normal's parameters.
    - `coupling`: how the batch's data and noise are paired: `IndependentCoupling()` (the
      default), `ExactOTCoupling()` or `SinkhornCoupling()` (minibatch OT, Tong et al. 2024).
    - `time_sampling`: `"uniform"`, `"stratified"` or `"antithetic"` over the batch.
    - `eps`: the smallest training time.
    - `reduce`: `"mean"` or `"sum"` over the entries of one example.
    - `label_dropout`, `null_label`: classifier-free guidance's label dropout, as in `DSMLoss`.
    """

    time_density: Literal["uniform", "logit_normal"] = eqx.field(static=True, default="uniform")
    logit_mean: float = eqx.field(static=True, default=0.0)
    logit_std: float = eqx.field(static=True, default=1.0)
    coupling: AbstractCoupling = IndependentCoupling()
    time_sampling: Literal["uniform", "stratified", "antithetic"] = eqx.field(
        static=True, default="uniform"
    )
    eps: float = eqx.field(static=True, default=1e-5)
    reduce: Literal["mean", "sum"] = eqx.field(static=True, default="mean")
    label_dropout: float = eqx.field(static=True, default=0.0)
    null_label: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.time_density not in _FM_DENSITIES:
            raise ValueError(
                f"time_density must be one of {_FM_DENSITIES}, got {self.time_density!r}."
            )
        if not self.logit_std > 0:
            raise ValueError(f"logit_std must be positive, got {self.logit_std}.")
        if not isinstance(self.coupling, AbstractCoupling):
            raise ValueError(
                "coupling must be an IndependentCoupling, ExactOTCoupling or SinkhornCoupling, "
                f"got {type(self.coupling).__name__}."
            )
        if self.time_sampling not in _TIME_SAMPLING:
            raise ValueError(
                f"time_sampling must be one of {_TIME_SAMPLING}, got {self.time_sampling!r}."
            )
        if not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps}.")
        if self.reduce not in ("mean", "sum"):
            raise ValueError(f"reduce must be 'mean' or 'sum', got {self.reduce!r}.")
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}.")
        if self.label_dropout > 0 and self.null_label is None:
            raise ValueError("label_dropout needs null_label (the network's num_classes).")

    def times(self, sde: AbstractSDE, u: Float[Array, " n"]) -> Float[Array, " n"]:
        """Maps uniforms to training times in `[eps, t1]`."""
        lo, hi = max(self.eps, sde.t0), sde.t1
        if self.time_density == "uniform":
            return lo + u * (hi - lo)
        # the logit-normal truncated to [lo, hi] by its inverse CDF
        logit = lambda t: jnp.log(t) - jnp.log1p(-t)  # noqa: E731
        a, b = (ndtr((logit(e) - self.logit_mean) / self.logit_std) for e in (lo, hi))
        z = self.logit_mean + self.logit_std * ndtri(a + u * (b - a))
        return jnp.clip(jax.nn.sigmoid(z), lo, hi)

    def __call__(
        self,
        model: ScoreModel,
        t: Scalar,
        x0: Float[Array, "*shape"],
        noise: Float[Array, "*shape"],
        *,
        key: PRNGKeyArray,
        y: Array | None = None,
    ) -> Scalar:
        """The loss of one pair `(x0, noise)` at time `t`."""
        dkey, lkey = jr.split(key)
        m, s = model.sde.marginal(t)
        dm, ds = model.sde.marginal_derivative(t)
        if y is not None and self.label_dropout > 0:
            assert self.null_label is not None  # __check_init__ requires it with label_dropout
            y = jnp.where(jr.bernoulli(lkey, self.label_dropout), self.null_label, y)
        v_hat = model_velocity(model, t, m * x0 + s * noise, y=y, key=dkey)
        sq = (v_hat - (dm * x0 + ds * noise)) ** 2
        return jnp.mean(sq) if self.reduce == "mean" else jnp.sum(sq)

    def batch_loss(
        self,
        model: ScoreModel,
        x0: Float[Array, "n *shape"],
        *,
        key: PRNGKeyArray,
        y: Array | None = None,
    ) -> Scalar:
        """Mean loss over a batch: noise drawn for the batch, paired with the data by the
        coupling, times drawn jointly (stratified or antithetic)."""
        if isinstance(model.sde, AbstractLearnedSDE):
            raise ValueError(
                "FlowMatchingLoss trains on a fixed path; a learned schedule is trained by "
                "DSMLoss(weighting='likelihood')."
            )
        tkey, nkey, ckey, dkey, ekey = jr.split(key, 5)
        n = x0.shape[0]
        if model.dequantizer is not None:
            if isinstance(model.dequantizer, VariationalDequantizer):
                raise ValueError(
                    "a VariationalDequantizer is trained by the likelihood bound: use "
                    "DSMLoss(weighting='likelihood') with time_density='uniform'."
                )
            deq = model.dequantizer
            x0 = jax.vmap(lambda x, k: deq(x, key=k)[0])(x0, jr.split(dkey, n))
        noise = jr.normal(nkey, x0.shape)
        noise = noise[jax.lax.stop_gradient(self.coupling.pair(x0, noise, key=ckey))]
        t = self.times(model.sde, sample_uniforms(tkey, n, self.time_sampling))
        keys = jr.split(ekey, n)
        if y is None:
            per = jax.vmap(lambda t, x, e, k: self(model, t, x, e, key=k))(t, x0, noise, keys)
        else:
            per = jax.vmap(lambda t, x, e, k, y: self(model, t, x, e, key=k, y=y))(
                t, x0, noise, keys, y
            )
        return jnp.mean(per)
