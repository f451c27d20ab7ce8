"""Bits/dim of a data set evaluated in parts (`first_index`): each image's dequantization
noise and probes depend on the key, its index in the data set and the draw alone."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sgm

SDE = sgm.VPSDE()
IMAGES = np.random.default_rng(0).integers(0, 256, (6, 4)).astype(np.uint8)
# a 2-component mixture: a nonlinear score, whose batched products round with the companions
MIX = sgm.GaussianMixture(
    jnp.array([0.4, 0.6]),
    jnp.array([[0.3, -0.2, 0.1, 0.0], [-0.3, 0.2, 0.0, 0.2]]),
    jnp.array([[0.05, 0.04, 0.09, 0.06], [0.04, 0.08, 0.03, 0.05]]),
)


def in_parts(score, cut, **kw):
    """`images[:cut]` and `images[cut:]` (with `first_index=cut`), concatenated."""
    head = sgm.bits_per_dim(score, SDE, IMAGES[:cut], **kw)
    tail = sgm.bits_per_dim(score, SDE, IMAGES[cut:], first_index=cut, **kw)
    return np.concatenate([head, tail])


@pytest.mark.parametrize(
    "one_at_a_time",
    [True, pytest.param(False, marks=pytest.mark.slow)],  # 20 s more
)
def test_parts_give_the_values_of_one_call(one_at_a_time):
    """Two draws per image, Hutchinson probes: [0, 6) in one call equals [0, 2) and [2, 6)
    with `first_index=2`: bit for bit one at a time; batched, to float rounding (the same
    bits measured on this mixture; asserted within 1e-5 bits/dim, far below the 1e-3 spread
    the solver's tolerance allows)."""
    kw = dict(
        key=jr.key(3),
        n_dequant=2,
        trace=sgm.Hutchinson(),
        batch_size=4,  # every call the same compiled batch
        one_at_a_time=one_at_a_time,
    )
    score = MIX.score(SDE)
    full = np.asarray(sgm.bits_per_dim(score, SDE, IMAGES, **kw))
    parts = in_parts(score, 2, **kw)
    if one_at_a_time:
        np.testing.assert_array_equal(parts, full)
    else:
        np.testing.assert_allclose(parts, full, atol=1e-5, rtol=0)
    # the index, not the position in the call, picks the noise: shifted, every value changes
    shifted = sgm.bits_per_dim(score, SDE, IMAGES[2:], **kw)
    assert np.all(np.asarray(shifted) != full[2:])


def test_the_bound_in_parts_and_a_bad_index():
    kw = dict(key=jr.key(3), n_dequant=2, estimator="mean", method="bound", n_times=8)
    score = MIX.score(SDE)
    full = np.asarray(sgm.bits_per_dim(score, SDE, IMAGES, batch_size=4, **kw))
    np.testing.assert_allclose(in_parts(score, 2, batch_size=4, **kw), full, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="first_index"):
        sgm.bits_per_dim(score, SDE, IMAGES, first_index=-1, **kw)
