"""The optimizer of a configuration: settings as fields, the optax transformation on demand."""

import equinox as eqx
import optax


class Adam(eqx.Module):
    """Adam with a linear learning-rate warm-up and global-norm gradient clipping (Song et al.
    2021, appendix H: lr 2e-4, 5000 warm-up steps, clip 1).

    **Arguments:**

    - `lr`: the learning rate after warm-up.
    - `warmup`: steps of linear warm-up from 0 (0: none).
    - `grad_clip`: the largest global gradient norm (`None`: no clipping).

    `transform()` gives the `optax.GradientTransformation`; `sgm.train` accepts either.
    """

    lr: float = eqx.field(static=True, default=2e-4)
    warmup: int = eqx.field(static=True, default=5000)
    grad_clip: float | None = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        if not (isinstance(self.lr, int | float) and self.lr > 0):
            raise ValueError(f"the learning rate must be positive, got lr={self.lr!r}.")
        if not (isinstance(self.warmup, int) and self.warmup >= 0):
            raise ValueError(f"warmup must be a non-negative int of steps, got {self.warmup!r}.")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip!r}.")

    def transform(self) -> optax.GradientTransformation:
        schedule = optax.linear_schedule(0.0, self.lr, max(self.warmup, 1))
        adam = optax.adam(schedule)
        if self.grad_clip is None:
            return adam
        return optax.chain(optax.clip_by_global_norm(self.grad_clip), adam)
