"""The mathematics of post-hoc EMA (Karras et al. 2024, *Analyzing and Improving the Training
Dynamics of Diffusion Models*, section 3 and appendix C): power-function EMA profiles, their
update, their inner products in closed form, and the least-squares weights that rebuild one
profile from stored snapshots of others. Pure functions on numbers, in float64 numpy (the
update, run inside the jitted step, is in jax).

A power-function EMA of exponent `gamma` at step `t` averages the iterates `theta_tau`,
`0 < tau <= t`, with the density `p(tau) = (gamma + 1) tau**gamma / t**(gamma + 1)` (eq. 2);
its standard deviation relative to `t` is `sigma_rel` (eq. 3). Tracked with
`beta_t = (1 - 1/t)**(gamma + 1)` (eq. 4), the iterate of step `k` gets exactly the mass of
`p` on `(k - 1, k]`, `(k**(gamma + 1) - (k - 1)**(gamma + 1)) / t**(gamma + 1)`: the tracked
average is the profile's average of the trajectory held constant over each step, and the
reconstruction fits the continuous profiles.
"""

import math

import jax.numpy as jnp
import numpy as np


def gamma_to_sigma_rel(gamma) -> np.ndarray:
    """The relative standard deviation of the power-function profile of exponent `gamma`,
    `sqrt((gamma + 1) / ((gamma + 2)**2 (gamma + 3)))` (eq. 3)."""
    g = np.asarray(gamma, np.float64)
    return np.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3)))


# sigma_rel(gamma) is largest at gamma = golden ratio - 2 (where its log-derivative vanishes):
# no power-function profile is longer than this.
_GAMMA_AT_MAX = (1 + math.sqrt(5)) / 2 - 2
SIGMA_REL_MAX = float(gamma_to_sigma_rel(_GAMMA_AT_MAX))
"""The longest relative standard deviation a power-function EMA has, about 0.3003."""


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent `gamma` of the power-function profile of relative standard deviation
    `sigma_rel` in `(0, SIGMA_REL_MAX]`: the largest real root of
    `gamma**3 + 7 gamma**2 + (16 - s) gamma + (12 - s) = 0`, `s = sigma_rel**-2`
    (eq. 3 solved for `gamma`; EDM2 appendix C.2, algorithm 2)."""
    sigma_rel = float(sigma_rel)
    if not 0 < sigma_rel <= SIGMA_REL_MAX:
        raise ValueError(
            f"sigma_rel must be in (0, {SIGMA_REL_MAX:.4f}] (the relative lengths of power-"
            f"function EMAs), got {sigma_rel}."
        )
    s = sigma_rel**-2
    roots = np.roots([1.0, 7.0, 16.0 - s, 12.0 - s])
    real = roots[np.abs(roots.imag) <= 1e-9 * np.maximum(1.0, np.abs(roots.real))].real
    return float(max(real.max(), _GAMMA_AT_MAX))  # a double root at the maximum


def one_minus_beta(gamma: float, t):
    """`1 - beta_t`, `beta_t = (1 - 1/t)**(gamma + 1)` (eq. 4), for the step count `t >= 1`
    (1 at `t = 1`: the average starts at the first iterate). Computed as
    `-expm1((gamma + 1) log1p(-1/t))`, which keeps its relative precision in float32 at a
    million steps, where `1 - (1 - 1/t)**(gamma + 1)` would lose a few per cent."""
    t = jnp.asarray(t, jnp.float32)
    return -jnp.expm1((gamma + 1.0) * jnp.log1p(-1.0 / t))


def step_weights(gamma: float, t: int) -> np.ndarray:
    """The weights of the iterates `1 .. t` in the power-function EMA of exponent `gamma`
    tracked for `t` steps: `(k**(gamma + 1) - (k - 1)**(gamma + 1)) / t**(gamma + 1)` (the
    product of the `beta`s of eq. 4 telescopes); they sum to 1."""
    k = np.arange(t + 1, dtype=np.float64) / t
    return np.diff(k ** (gamma + 1.0))


def profile_inner(t_a, gamma_a, t_b, gamma_b) -> np.ndarray:
    """The inner product `integral p_a(tau) p_b(tau) dtau` of the power-function profiles of
    exponents `gamma_a`, `gamma_b` at steps `t_a`, `t_b` (broadcast):
    `(gamma_a + 1)(gamma_b + 1) / ((gamma_a + gamma_b + 1) max(t_a, t_b)) *
    (min / max)**gamma_of_the_longer` (EDM2 appendix C.3, eq. 151 and algorithm 3)."""
    t_a, g_a, t_b, g_b = (np.asarray(v, np.float64) for v in (t_a, gamma_a, t_b, gamma_b))
    longer = np.where(t_a < t_b, g_b, g_a)
    ratio = np.minimum(t_a, t_b) / np.maximum(t_a, t_b)
    return (g_a + 1) * (g_b + 1) / ((g_a + g_b + 1) * np.maximum(t_a, t_b)) * ratio**longer


def posthoc_weights(t_in, gamma_in, t_out: float, gamma_out: float) -> tuple[np.ndarray, float]:
    """The weights `x` of the stored averages (of exponents `gamma_in` at steps `t_in`) whose
    combination is closest in L2 to the profile of exponent `gamma_out` at step `t_out`:
    the solution of the Gram system `A x = b`, `A_ij = <p_i, p_j>`, `b_i = <p_i, p_out>`
    (EDM2 appendix C.3, algorithm 3), in the least-squares sense where `A` is singular,
    scaled to sum to 1 so that the result is an average. Returns `(x, error)`, `error` the
    relative L2 distance `||sum_i x_i p_i - p_out|| / ||p_out||` of the fitted profile."""
    t_in = np.asarray(t_in, np.float64).ravel()
    g_in = np.asarray(gamma_in, np.float64).ravel()
    a = profile_inner(t_in[:, None], g_in[:, None], t_in[None, :], g_in[None, :])
    b = profile_inner(t_in, g_in, t_out, gamma_out)
    x = np.linalg.lstsq(a, b, rcond=None)[0]
    x = x / x.sum()
    c = float(profile_inner(t_out, gamma_out, t_out, gamma_out))
    distance = max(float(x @ a @ x - 2 * x @ b + c), 0.0)
    return x, math.sqrt(distance / c)
