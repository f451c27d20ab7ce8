"""A minimal score-model trainer in plain JAX, written independently of `sgm`: the baseline of
`train_quality.py`. A 3 x 128 SiLU MLP on `[x, sinusoidal features of t]` predicts the noise of
`x_t = m(t) x_0 + s(t) eps` (unweighted noise-prediction loss, `t ~ U[1e-5, 1]`), Adam, and an
exponential moving average of the weights. The score is `-net(t, x) / s(t)`."""

import jax
import jax.numpy as jnp
import jax.random as jr
import optax


def _features(t, n=16):
    freqs = jnp.exp(jnp.linspace(0.0, jnp.log(1000.0), n // 2))
    return jnp.concatenate([jnp.sin(freqs * t), jnp.cos(freqs * t)])


def init(key, d, width=128, depth=3):
    sizes = [d + 16] + [width] * depth + [d]
    keys = jr.split(key, len(sizes) - 1)
    return [
        (jr.normal(k, (a, b)) / jnp.sqrt(a), jnp.zeros(b))
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def apply(params, t, x):
    h = jnp.concatenate([x, _features(t)])
    for w, b in params[:-1]:
        h = jax.nn.silu(h @ w + b)
    w, b = params[-1]
    return h @ w + b


def make_step(sde, lr=1e-3, ema=0.999):
    opt = optax.adam(lr)

    def loss(params, x0, key):
        tkey, nkey = jr.split(key)
        t = jr.uniform(tkey, (x0.shape[0],), minval=1e-5, maxval=1.0)
        m, s = jax.vmap(sde.marginal)(t)
        noise = jr.normal(nkey, x0.shape)
        xt = m[:, None] * x0 + s[:, None] * noise
        return jnp.mean((jax.vmap(apply, (None, 0, 0))(params, t, xt) - noise) ** 2)

    @jax.jit
    def step(state, x0, key):
        params, avg, opt_state = state
        value, grads = jax.value_and_grad(loss)(params, x0, key)
        updates, opt_state = opt.update(grads, opt_state)
        params = optax.apply_updates(params, updates)
        avg = jax.tree.map(lambda a, p: ema * a + (1 - ema) * p, avg, params)
        return (params, avg, opt_state), value

    return opt, step


def score(params, sde):
    """The score `-net(t, x) / s(t)` of the given (EMA) weights, on one example."""
    return lambda t, x: -apply(params, t, x) / sde.marginal(t)[1]
