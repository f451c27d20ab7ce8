"""Score networks: shapes, conditioning, dropout, vmap, clear errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

from sgm.nets import MLP, Classifier, DiT, UNet, param_count

SMALL = dict(channels=8, num_groups=4, channel_mults=(1, 2), attention_levels=(1,))


def perturb(net, key=jr.key(42), scale=0.1):
    """Adds noise to every float leaf. Zero-initialised heads (UNet, DiT) output exactly zero
    at initialisation, which would make every 'the output changes' check pass vacuously."""
    params, static = eqx.partition(net, eqx.is_inexact_array)
    leaves, tree = jax.tree.flatten(params)
    keys = jr.split(key, len(leaves))
    leaves = [p + scale * jr.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    return eqx.combine(jax.tree.unflatten(tree, leaves), static)


NETS = {
    "mlp": (lambda **kw: MLP((2,), key=jr.key(0), width=16, depth=2, **kw), (2,)),
    "unet28": (lambda **kw: UNet((1, 28, 28), key=jr.key(0), **SMALL, **kw), (1, 28, 28)),
    "unet_odd": (lambda **kw: UNet((3, 7, 9), key=jr.key(0), **SMALL, **kw), (3, 7, 9)),
    "unet1d": (lambda **kw: UNet((2, 50), key=jr.key(0), **SMALL, **kw), (2, 50)),
    "dit": (
        lambda **kw: DiT((1, 28, 28), key=jr.key(0), patch_size=4, hidden=32, depth=2, **kw),
        (1, 28, 28),
    ),
    "dit_rgb": (lambda **kw: DiT((3, 8, 8), key=jr.key(0), hidden=32, depth=1, **kw), (3, 8, 8)),
}


@pytest.mark.parametrize("name", list(NETS))
def test_shapes_vmap_and_time(name):
    make, shape = NETS[name]
    net = perturb(make())
    x = jr.normal(jr.key(1), (3, *shape))

    forward = eqx.filter_jit(lambda net, t, x: jax.vmap(lambda x: net(t, x))(x))
    out = forward(net, 0.3, x)
    assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))
    assert not jnp.allclose(out, forward(net, 0.8, x))


@pytest.mark.parametrize("name", ["mlp", "unet_odd", "unet1d", "dit_rgb"])
def test_gradients_are_finite(name):
    make, shape = NETS[name]
    net, x = perturb(make()), jr.normal(jr.key(1), shape)
    grads = eqx.filter_jit(eqx.filter_grad(lambda n: jnp.sum(n(0.3, x) ** 2)))(net)
    leaves = jax.tree.leaves(eqx.filter(grads, eqx.is_inexact_array))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert param_count(net) > 0


@pytest.mark.parametrize("name", list(NETS))
def test_class_conditioning(name):
    make, shape = NETS[name]
    net = perturb(make(num_classes=10))
    x = jr.normal(jr.key(1), shape)
    a, b, null = net(0.3, x, y=1), net(0.3, x, y=7), net(0.3, x)
    assert not jnp.allclose(a, b) and not jnp.allclose(a, null)
    assert jnp.allclose(null, net(0.3, x, y=10))  # y=None is the null label 10
    with pytest.raises(eqx.EquinoxRuntimeError, match="label out of range"):
        eqx.filter_jit(lambda n, x: n(0.3, x, y=11))(net, x)


@pytest.mark.parametrize("name", ["mlp", "unet28", "dit"])
def test_vector_conditioning(name):
    make, shape = NETS[name]
    net = perturb(make(cond_dim=3))
    x = jr.normal(jr.key(1), shape)
    assert not jnp.allclose(net(0.3, x, y=jnp.zeros(3)), net(0.3, x, y=jnp.ones(3)))
    with pytest.raises(ValueError, match="conditioned on a vector"):
        net(0.3, x)
    with pytest.raises(ValueError, match=r"y must have shape \(3,\)"):
        net(0.3, x, y=jnp.ones(4))


def test_map_conditioning_by_extra_channels():
    net = perturb(UNet((1, 12, 12), key=jr.key(0), cond_channels=2, **SMALL))
    x = jr.normal(jr.key(1), (1, 12, 12))
    a = net(0.3, x, y=jnp.zeros((2, 12, 12)))
    assert not jnp.allclose(a, net(0.3, x, y=jnp.ones((2, 12, 12))))
    with pytest.raises(ValueError, match="conditioned on a map"):
        net(0.3, x, y=jnp.zeros((2, 10, 10)))


def test_dropout_is_active_only_with_a_key():
    net = perturb(UNet((1, 8, 8), key=jr.key(0), dropout=0.5, **SMALL))
    x = jr.normal(jr.key(1), (1, 8, 8))
    assert jnp.allclose(net(0.3, x), net(0.3, x))
    assert not jnp.allclose(net(0.3, x), net(0.3, x, key=jr.key(2)))


def test_zero_initialised_heads_start_at_zero():
    x = jr.normal(jr.key(1), (1, 28, 28))
    assert jnp.all(NETS["unet28"][0]()(0.3, x) == 0)
    assert jnp.all(NETS["dit"][0]()(0.3, x) == 0)


def test_bad_shapes_and_arguments():
    net = NETS["unet28"][0]()
    with pytest.raises(ValueError, match=r"one example of shape \(1, 28, 28\).*jax.vmap"):
        net(0.3, jnp.ones((4, 1, 28, 28)))
    with pytest.raises(ValueError, match="unconditional but got y"):
        net(0.3, jnp.ones((1, 28, 28)), y=3)
    with pytest.raises(ValueError, match="divisible by num_groups"):
        UNet((1, 8, 8), key=jr.key(0), channels=10, num_groups=4)
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(C, L\)"):
        UNet((8,), key=jr.key(0))
    with pytest.raises(ValueError, match="images"):
        DiT((2,), key=jr.key(0))


@pytest.mark.parametrize(
    "ndim, kernel, stride, size", [(2, 3, 1, 9), (2, 3, 2, 9), (2, 1, 1, 8), (1, 3, 2, 11)]
)
def test_channel_last_conv_equals_equinox_conv(ndim, kernel, stride, size):
    # The UNet computes every convolution channel-last (fast inside loops on XLA:CPU); it must
    # give exactly what the equinox layer it holds gives.
    from sgm.nets._unet import conv

    layer = eqx.nn.Conv(ndim, 5, 7, kernel, stride=stride, padding=kernel // 2, key=jr.key(0))
    x = jr.normal(jr.key(1), (5,) + (size,) * ndim)
    expected = layer(x)
    got = conv(layer, x)
    assert got.shape == expected.shape
    assert jnp.allclose(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 16), (3,)])
def test_classifier_shapes_and_errors(shape):
    net = Classifier(shape, 5, key=jr.key(0), width=16, depth=2)
    x = jr.normal(jr.key(1), (4, *shape))
    logits = jax.vmap(lambda x: net(0.3, x))(x)
    assert logits.shape == (4, 5) and bool(jnp.all(jnp.isfinite(logits)))
    with pytest.raises(ValueError, match="expects one example"):
        net(0.3, x)
    with pytest.raises(ValueError, match="num_classes >= 2"):
        Classifier(shape, 1, key=jr.key(0))
