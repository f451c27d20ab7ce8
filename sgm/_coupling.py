"""Couplings of data and noise within a minibatch for flow matching.

Conditional flow matching regresses on pairs `(x_0, eps)`; drawing them independently gives
the marginal paths of the independent coupling. The minibatch optimal-transport coupling
(Tong et al. 2024, "Improving and generalizing flow-based generative models with minibatch
optimal transport", section 3.2; Pooladian et al. 2023) pairs the batch's data with its noise
draws by the optimal transport plan for the squared distance, which straightens the learned
paths. The pairing permutes the noise only, so each example keeps its label.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray


def _sq_cost(x0: Array, noise: Array) -> Array:
    a, b = x0.reshape(x0.shape[0], -1), noise.reshape(noise.shape[0], -1)
    return jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None, :] - 2 * a @ b.T


class AbstractCoupling(eqx.Module):
    """Which noise draw each data point of a batch is paired with."""

    @abc.abstractmethod
    def pair(
        self, x0: Float[Array, "n *shape"], noise: Float[Array, "n *shape"], *, key: PRNGKeyArray
    ) -> Int[Array, " n"]:
        """Indices `j` such that `x0[i]` is paired with `noise[j[i]]`."""


class IndependentCoupling(AbstractCoupling):
    """Independent pairs (the noise in the order drawn): plain conditional flow matching."""

    def pair(self, x0, noise, *, key):
        return jnp.arange(x0.shape[0])


def _assignment(cost: np.ndarray) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment

    _, cols = linear_sum_assignment(np.asarray(cost, dtype=np.float64))
    return cols.astype(np.int32)


class ExactOTCoupling(AbstractCoupling):
    """The exact minibatch OT plan: with equal uniform weights it is a permutation, the
    solution of the assignment problem for the cost `||x0_i - eps_j||^2` (Tong et al. 2024,
    eq. 15), found by SciPy's `linear_sum_assignment` (Crouse 2016) on the host through
    `jax.pure_callback`. Cubic in the batch size; for batches of a few hundred."""

    def pair(self, x0, noise, *, key):
        cost = _sq_cost(x0, noise)
        out = jax.ShapeDtypeStruct((x0.shape[0],), jnp.int32)
        return jax.pure_callback(_assignment, out, cost)


class SinkhornCoupling(AbstractCoupling):
    """Entropic minibatch OT (Cuturi 2013): log-domain Sinkhorn iterations on the cost
    `||x0_i - eps_j||^2 / mean(cost)` with regularisation `epsilon`, then for each data point a
    noise index drawn from its row of the plan (Tong et al. 2024, algorithm 1 samples pairs from
    the plan). In JAX, on the device, quadratic per iteration.

    **Arguments:**

    - `epsilon`: the entropic regularisation relative to the mean cost; smaller is closer to
      the exact plan and needs more iterations. With the defaults (0.005, 300 iterations) the
      drawn pairs' mean squared distance is 1.16 and 1.39 times the exact plan's on batches
      of 256 and 1024 standard normal 2-D points, and the plan's data marginal is within 1.4%
      (`benchmarks/coupling_cost.py --sweep`); at `epsilon = 0.05` the plan is 2.5 and 7.2
      times the exact cost, and 100 iterations at `0.002` leave the marginal 26-50% off.
    - `iterations`: the number of Sinkhorn iterations.
    """

    epsilon: float = eqx.field(static=True, default=0.005)
    iterations: int = eqx.field(static=True, default=300)

    def __check_init__(self):
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {self.epsilon}.")
        if not (isinstance(self.iterations, int) and self.iterations >= 1):
            raise ValueError(f"iterations must be a positive integer, got {self.iterations!r}.")

    def log_plan(self, x0: Array, noise: Array) -> Array:
        """The log of the entropic plan, rows and columns summing to `1 / n`."""
        cost = _sq_cost(x0, noise)
        cost = jax.lax.stop_gradient(cost / jnp.maximum(jnp.mean(cost), 1e-12))
        n = cost.shape[0]
        log_w = -jnp.log(n)
        k = -cost / self.epsilon

        def body(_, fg):
            f, g = fg
            f = log_w - jax.nn.logsumexp(k + g[None, :], axis=1)
            g = log_w - jax.nn.logsumexp(k + f[:, None], axis=0)
            return f, g

        zeros = jnp.zeros(n, cost.dtype)
        f, g = jax.lax.fori_loop(0, self.iterations, body, (zeros, zeros))
        return k + f[:, None] + g[None, :]

    def pair(self, x0, noise, *, key):
        return jr.categorical(key, self.log_plan(x0, noise), axis=1).astype(jnp.int32)
