"""The Adam schedule: warm-up and cosine decay; `sgm.Adam` without decay as it was."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sgm


def test_schedule_warms_up_then_decays():
    sched = sgm.lr_schedule(1e-3, steps=1100, warmup=100, final_fraction=0.1)
    np.testing.assert_allclose(float(sched(50)), 5e-4, rtol=1e-6)
    np.testing.assert_allclose(float(sched(100)), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(float(sched(600)), 1e-3 * (0.1 + 0.9 * 0.5), rtol=1e-5)
    np.testing.assert_allclose(float(sched(1100)), 1e-4, rtol=1e-5)
    short = sgm.lr_schedule(1e-3, steps=50, warmup=100)  # a quick try only warms up
    assert float(short(50)) == pytest.approx(5e-4) and float(short(200)) == pytest.approx(1e-3)
    constant = sgm.lr_schedule(1e-3, warmup=100)
    assert float(constant(100)) == float(constant(10**6)) == pytest.approx(1e-3)


def test_adam_without_decay_is_unchanged():
    """`sgm.Adam(...).transform()` (warm-up and clipping, no decay) gives the updates of
    optax's clip by global norm, then Adam on the linear warm-up."""
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    grads = {"w": jnp.array([3.0, 4.0, 12.0])}
    old = optax.chain(
        optax.clip_by_global_norm(1.0), optax.adam(optax.linear_schedule(0.0, 2e-4, 50))
    )
    new = sgm.Adam(2e-4, warmup=50).transform()
    s_old, s_new = old.init(params), new.init(params)
    for _ in range(3):
        u_old, s_old = old.update(grads, s_old, params)
        u_new, s_new = new.update(grads, s_new, params)
        np.testing.assert_allclose(u_new["w"], u_old["w"], rtol=1e-6)


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="steps"):
        sgm.lr_schedule(1e-3, steps=0, warmup=100)
    with pytest.raises(ValueError, match="learning rate"):
        sgm.Adam(0.0)
    with pytest.raises(ValueError, match="final_fraction"):
        sgm.Adam(1e-3, decay=True, final_fraction=2.0)
    with pytest.raises(ValueError, match="transform"):
        sgm.Adam(1e-3, decay=True).transform()
