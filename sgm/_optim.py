"""Optimizers for training score models: Adam with warm-up, decay and gradient clipping."""

import optax


def lr_schedule(lr: float, *, steps: int | None = None, warmup: int = 100,
                final_fraction: float = 0.0) -> optax.Schedule:  # fmt: skip
    """A linear warm-up from 0 to `lr` over `warmup` steps, then `lr` (when `steps` is None)
    or a cosine decay to `final_fraction * lr` at `steps` (Loshchilov & Hutter 2017)."""
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}.")
    if steps is not None and steps <= warmup:
        raise ValueError(f"steps={steps} must exceed warmup={warmup}.")
    if not 0 <= final_fraction <= 1:
        raise ValueError(f"final_fraction must lie in [0, 1], got {final_fraction}.")
    warm = optax.linear_schedule(0.0, lr, max(warmup, 1))
    if steps is None:
        return warm
    decay = optax.cosine_decay_schedule(lr, steps - warmup, alpha=final_fraction)
    return optax.join_schedules([warm, decay], [warmup])


def adam(lr: float = 1e-3, *, steps: int | None = None, warmup: int = 100,
         final_fraction: float = 0.0, grad_clip: float | None = 1.0,
         b2: float = 0.999) -> optax.GradientTransformation:  # fmt: skip
    """Adam (Kingma & Ba 2015) on `lr_schedule(lr, steps=, warmup=, final_fraction=)`, after
    clipping the gradient's global norm to `grad_clip` (None: no clipping).

    **Arguments:**

    - `lr`: the peak learning rate.
    - `steps`: the length of the run; with it the rate decays (cosine) to
      `final_fraction * lr` at the last step, without it the rate stays at `lr`.
    - `warmup`: steps of linear warm-up from 0.
    - `grad_clip`: the largest global gradient norm, or None.
    - `b2`: Adam's second-moment decay.
    """
    chain = [optax.clip_by_global_norm(grad_clip)] if grad_clip is not None else []
    schedule = lr_schedule(lr, steps=steps, warmup=warmup, final_fraction=final_fraction)
    return optax.chain(*chain, optax.adam(schedule, b2=b2))
