"""The sample and its log-density from one solve of the augmented probability-flow ODE,
against the closed-form density and a separate `log_likelihood` solve; gradients of both
with respect to a model's parameters."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import SDES, rotated_gaussian

import sgm


def model_log_prob(g: sgm.Gaussian, sde, x):
    """The model's exact log-density at t0 (the prior N(0, I) pushed through the exact flow
    map, which differs from the data's p_t0 by the prior's mismatch at t1): the prior at the
    affine flow map's image plus its log-determinant."""
    flow = lambda x: g.flow(sde, sde.t0, sde.t1, x)  # noqa: E731
    return jax.vmap(lambda x: sde.prior_log_prob(flow(x)))(x) + g.flow_log_det(sde, sde.t0, sde.t1)


@pytest.mark.parametrize("sde", ["vp", pytest.param("ve", marks=pytest.mark.slow)])
def test_log_prob_of_the_sample_is_exact(sde):
    """A rotated 16-D Gaussian with its exact score and the exact trace: the returned
    log-density equals the model's closed-form density of the returned sample within 2e-3
    nats, and a separate `log_likelihood` solve of the sample within 2e-3 nats (measured
    agreement of the two solves: 5e-5)."""
    sde, g = SDES[sde], rotated_gaussian(d=16, seed=3)
    x, lp, nfe = sgm.sample_with_log_prob(
        g.score(sde), sde, key=jr.key(0), shape=(8, 16), trace=sgm.Exact(), return_nfe=True
    )
    assert x.shape == (8, 16) and lp.shape == (8,) and bool(jnp.all(nfe > 0))
    exact = model_log_prob(g, sde, x)
    np.testing.assert_allclose(lp, exact, atol=2e-3, rtol=0)
    again = sgm.log_likelihood(g.score(sde), sde, x, trace=sgm.Exact())
    np.testing.assert_allclose(lp, again, atol=2e-3, rtol=0)


def test_bad_options_raise():
    g, sde = rotated_gaussian(d=2), SDES["vp"]
    with pytest.raises(ValueError, match="trace must be a trace estimator"):
        sgm.sample_with_log_prob(g.score(sde), sde, key=jr.key(0), shape=(2, 2), trace="exact")
    with pytest.raises(ValueError, match="rtol"):
        sgm.sample_with_log_prob(g.score(sde), sde, key=jr.key(0), shape=(2, 2), rtol=-1.0)


def _tiny_model_objective(fn):
    """`(params, f)`: a tiny MLP score model's parameters and `f(params)`, the mean of `fn`'s
    log-densities under the model, with a unit random direction `u` in parameter space."""
    sde = sgm.VPSDE()
    net = sgm.nets.MLP(data_shape=(2,), key=jr.key(0), width=16, depth=1, embed_dim=16)
    params, static = eqx.partition(sgm.ScoreModel(net, sde), eqx.is_inexact_array)
    leaves, treedef = jax.tree.flatten(params)
    u = [
        jr.normal(k, leaf.shape)
        for k, leaf in zip(jr.split(jr.key(2), len(leaves)), leaves, strict=True)
    ]
    norm = jnp.sqrt(sum(jnp.sum(v**2) for v in u))
    u = jax.tree.unflatten(treedef, [v / norm for v in u])
    return params, (lambda p: fn(eqx.combine(p, static), sde).mean()), u


def _directional_check(params, f, u, eps=1e-2):
    grad = jax.grad(f)(params)
    analytic = sum(
        jnp.sum(a * b) for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(u), strict=True)
    )
    shift = lambda h: jax.tree.map(lambda p, v: p + h * v, params, u)  # noqa: E731
    fd = (f(shift(eps)) - f(shift(-eps))) / (2 * eps)
    assert float(jnp.abs(analytic)) > 1e-3
    return float(jnp.abs(analytic - fd) / jnp.abs(fd))


@pytest.mark.slow
def test_log_prob_of_samples_is_differentiable():
    """`jax.grad` of the one-solve log-density with respect to a tiny model's parameters
    matches central finite differences along a random unit direction (eps = 1e-2, float32,
    rtol = atol = 1e-6): measured relative error 2.8e-4, asserted below 2e-3."""
    params, f, u = _tiny_model_objective(
        lambda model, sde: sgm.sample_with_log_prob(
            model, sde, key=jr.key(1), shape=(4, 2), trace=sgm.Exact(), rtol=1e-6, atol=1e-6
        )[1]
    )
    assert _directional_check(params, f, u) < 2e-3


@pytest.mark.slow
def test_log_likelihood_is_differentiable():
    """`jax.grad` of `log_likelihood` with respect to a tiny model's parameters matches central
    finite differences (on one device; `shard_map` over several blocks equinox's reverse mode
    through diffrax's loop)."""
    x = jr.normal(jr.key(3), (4, 2))
    params, f, u = _tiny_model_objective(
        lambda model, sde: sgm.log_likelihood(
            model, sde, x, trace=sgm.Exact(), rtol=1e-6, atol=1e-6
        )
    )
    assert _directional_check(params, f, u) < 2e-3
