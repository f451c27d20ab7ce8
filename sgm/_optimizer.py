"""The optimizer of a configuration: settings as fields, the optax transformation on demand."""

import equinox as eqx
import optax

from ._checks import check_int, check_positive, check_probability


def lr_schedule(
    lr: float, *, steps: int | None = None, warmup: int = 100, final_fraction: float = 0.0
) -> optax.Schedule:
    """A linear warm-up from 0 to `lr` over `warmup` steps, then `lr` (when `steps` is None)
    or a cosine decay to `final_fraction * lr` at `steps` (Loshchilov & Hutter 2017). A run
    of `steps <= warmup` (a quick try of a long configuration) only warms up."""
    check_positive("lr", lr)
    check_int("steps", steps, none=True)
    check_probability("final_fraction", final_fraction, closed=True)
    warm = optax.linear_schedule(0.0, lr, max(warmup, 1))
    if steps is None or steps <= warmup:
        return warm
    decay = optax.cosine_decay_schedule(lr, steps - warmup, alpha=final_fraction)
    return optax.join_schedules([warm, decay], [warmup])


class Adam(eqx.Module):
    """Adam (Kingma & Ba 2015) with a linear learning-rate warm-up, an optional cosine decay
    over the run and global-norm gradient clipping. The defaults are Song et al. (2021),
    appendix H: lr 2e-4, 5000 warm-up steps, clip 1, no decay.

    **Arguments:**

    - `lr`: the peak learning rate, reached after warm-up.
    - `warmup`: steps of linear warm-up from 0 (0: none).
    - `grad_clip`: the largest global gradient norm (`None`: no clipping).
    - `decay`: decay the rate by a cosine to `final_fraction * lr` at the last training step
      (Loshchilov and Hutter 2017; compared in `benchmarks/train_quality.py`).
    - `final_fraction`: the rate at the end of the decay, as a fraction of `lr`.
    - `b2`: Adam's second-moment decay.

    `transform(steps)` gives the `optax.GradientTransformation` for a run of `steps` steps
    (needed with `decay`); `sgm.train` accepts either.
    """

    lr: float = eqx.field(static=True, default=2e-4)
    warmup: int = eqx.field(static=True, default=5000)
    grad_clip: float | None = eqx.field(static=True, default=1.0)
    decay: bool = eqx.field(static=True, default=False)
    final_fraction: float = eqx.field(static=True, default=0.0)
    b2: float = eqx.field(static=True, default=0.999)

    def __check_init__(self):
        if not (isinstance(self.lr, int | float) and self.lr > 0):
            raise ValueError(f"the learning rate must be positive, got lr={self.lr!r}.")
        if not (isinstance(self.warmup, int) and self.warmup >= 0):
            raise ValueError(f"warmup must be a non-negative int of steps, got {self.warmup!r}.")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip!r}.")
        if not 0 <= self.final_fraction <= 1:
            raise ValueError(f"final_fraction must lie in [0, 1], got {self.final_fraction!r}.")
        if not 0 < self.b2 < 1:
            raise ValueError(f"b2 must lie in (0, 1), got {self.b2!r}.")

    def transform(self, steps: int | None = None) -> optax.GradientTransformation:
        """The optax transformation for a run of `steps` steps (with `decay`, the rate reaches
        `final_fraction * lr` there; without, `steps` is not needed)."""
        if self.decay and steps is None:
            raise ValueError(
                "Adam(decay=True) decays over the run: pass its length, transform(steps)."
            )
        schedule = lr_schedule(
            self.lr,
            steps=steps if self.decay else None,
            warmup=self.warmup,
            final_fraction=self.final_fraction,
        )
        adam = optax.adam(schedule, b2=self.b2)
        if self.grad_clip is None:
            return adam
        return optax.chain(optax.clip_by_global_norm(self.grad_clip), adam)
