"""Post-hoc EMA in the trainer (Karras et al. 2024, *Analyzing and Improving the Training
Dynamics of Diffusion Models*, section 3): the option of `sgm.train`, the power-function
averages it keeps in the train state, their snapshots on disk, and `sgm.reconstruct_ema`,
which rebuilds the average of any relative length from those snapshots (`_phema` holds the
mathematics).

Snapshots are written like checkpoints in their single-file layout (`save_state_file`:
atomically, checksummed), one folder per step, `directory/step_00001000/{state.eqx,
meta.json}`, the state being the tuple of the tracked averages and the metadata their
`sigma_rels` and exponents. All are kept.
"""

import dataclasses
import os
from functools import partial
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_int
from ..distributed import is_main, to_local
from ._checkpoint import _read_meta, _signature, save_state_file, slots
from ._phema import SIGMA_REL_MAX, one_minus_beta, posthoc_weights, sigma_rel_to_gamma

_KEEP_ALL = 2**62  # `save_state_file` keeps the newest `keep`: every snapshot is kept


def _as_tuple(value):
    return tuple(value) if isinstance(value, tuple | list | np.ndarray) else value


def _as_optional_path(value):
    return None if value is None else Path(value) if isinstance(value, str | os.PathLike) else value


def _check_sigma_rel(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise ValueError(f"{name} must be a number in (0, {SIGMA_REL_MAX:.4f}], got {value!r}.")
    if not 0 < value <= SIGMA_REL_MAX:
        raise ValueError(
            f"{name} must be in (0, {SIGMA_REL_MAX:.4f}] (no power-function EMA is longer), "
            f"got {value!r}."
        )
    return float(value)


class PostHocEMA(eqx.Module):
    """Post-hoc EMA (Karras et al. 2024, section 3): `sgm.train` tracks one power-function
    EMA of the weights per `sigma_rels` (relative standard deviations of their profiles,
    eq. 3; updated with `beta_t = (1 - 1/t)**(gamma + 1)` at step `t`, eq. 4) alongside its
    usual EMA, keeps them in the train state (so they resume with a checkpoint) and writes
    their values every `snapshot_every` steps and at the end. `sgm.reconstruct_ema` then
    rebuilds the EMA of any relative length from the snapshots, by least squares over the
    profiles (appendix C.3), without retraining.

    **Arguments:**

    - `sigma_rels`: the tracked relative lengths, distinct, each in `(0, 0.3003]` (EDM2
      tracks 0.05 and 0.10).
    - `snapshot_every`: steps between snapshots; the reconstruction is as fine as they are
      (EDM2 stores about 160 over a run; a few tens do for lengths of 0.02 and longer).
    - `directory`: where the snapshots go (`None`: `<checkpoints.directory>/ema`; without
      checkpoints a directory must be named). A new run refuses a directory holding
      snapshots; a resumed one continues it.
    """

    sigma_rels: tuple[float, ...] = eqx.field(default=(0.05, 0.10), converter=_as_tuple)
    snapshot_every: int = eqx.field(default=500, kw_only=True)
    directory: Path | None = eqx.field(default=None, kw_only=True, converter=_as_optional_path)

    def __check_init__(self):
        if not isinstance(self.sigma_rels, tuple) or not self.sigma_rels:
            raise ValueError(
                f"PostHocEMA.sigma_rels must be a tuple of lengths, e.g. (0.05, 0.10), got "
                f"{self.sigma_rels!r}."
            )
        values = [_check_sigma_rel("PostHocEMA.sigma_rels", v) for v in self.sigma_rels]
        if len(set(values)) < len(values):
            raise ValueError(f"PostHocEMA.sigma_rels must be distinct, got {self.sigma_rels}.")
        check_int("PostHocEMA.snapshot_every", self.snapshot_every)
        if self.directory is not None and not isinstance(self.directory, Path):
            raise ValueError(
                f"PostHocEMA.directory must be a path or None, got {type(self.directory).__name__}."
            )

    @property
    def gammas(self) -> tuple[float, ...]:
        """The exponents of the tracked profiles (eq. 3 solved for `gamma`)."""
        return tuple(sigma_rel_to_gamma(s) for s in self.sigma_rels)


def resolved(posthoc, checkpoints) -> PostHocEMA | None:
    """`sgm.train`'s `posthoc_ema` checked, with its snapshot directory decided
    (`checkpoints`: an `sgm.Checkpoints` or None)."""
    if posthoc is None:
        return None
    if not isinstance(posthoc, PostHocEMA):
        raise ValueError(f"posthoc_ema must be an sgm.PostHocEMA or None, got {posthoc!r}.")
    if posthoc.directory is not None:
        return posthoc
    if checkpoints is None:
        raise ValueError(
            "PostHocEMA needs a directory for its snapshots: give PostHocEMA(directory=...) "
            "or train with checkpoints=sgm.Checkpoints(...)."
        )
    return dataclasses.replace(posthoc, directory=checkpoints.directory / "ema")


class PowerEMAs(eqx.Module):
    """The power-function averages of the weights that a train state carries: one model per
    exponent in `gammas` (static: they decide the compiled step, not its inputs)."""

    averages: tuple
    gammas: tuple[float, ...] = eqx.field(static=True)


def init_averages(model, posthoc: PostHocEMA | None) -> PowerEMAs | None:
    """The averages at step 0 (copies of `model`; the first update replaces them by the
    first iterate), or None without post-hoc EMA."""
    if posthoc is None:
        return None
    copy = lambda a: jnp.copy(a) if eqx.is_array(a) else a  # noqa: E731
    return PowerEMAs(tuple(jax.tree.map(copy, model) for _ in posthoc.gammas), posthoc.gammas)


def _lerp(e, p, *, w, ok):
    return jnp.where(ok, e + (w * (p - e)).astype(e.dtype), e)


def update_averages(emas: PowerEMAs | None, params, t, ok) -> PowerEMAs | None:
    """Each average moved towards the new parameters `params` by `1 - beta_t` (eq. 4) at the
    step count `t` (traced); where `ok` is false (a skipped step), left as it was."""
    if emas is None:
        return None
    out = []
    for average, gamma in zip(emas.averages, emas.gammas, strict=True):
        old, static = eqx.partition(average, eqx.is_inexact_array)
        moved = jax.tree.map(partial(_lerp, w=one_minus_beta(gamma, t), ok=ok), old, params)
        out.append(eqx.combine(moved, static))
    return PowerEMAs(tuple(out), emas.gammas)


def check_fresh(posthoc: PostHocEMA | None, resuming: bool) -> None:
    """A new run must not mix its snapshots with another's."""
    if posthoc is None or resuming or posthoc.directory is None:
        return
    if slots(posthoc.directory):
        raise ValueError(
            f"{posthoc.directory} already holds post-hoc EMA snapshots; resume the run that "
            "wrote them (Checkpoints(resume=True)) or give PostHocEMA another directory."
        )


def save_snapshot(posthoc: PostHocEMA, emas: PowerEMAs | None, step: int) -> None:
    """Writes the averages of `step`: every process takes part in gathering them (they may
    be sharded), process 0 writes."""
    assert posthoc.directory is not None and emas is not None
    averages = to_local(emas.averages)
    if not is_main():
        return
    meta = {
        "step": step,
        "sigma_rels": list(posthoc.sigma_rels),
        "gammas": list(posthoc.gammas),
    }
    save_state_file(posthoc.directory, averages, meta, keep=_KEEP_ALL)


@dataclasses.dataclass(frozen=True)
class EMAReconstruction:
    """How `sgm.reconstruct_ema` built an average: the target `step`, `sigma_rel` and its
    exponent `gamma`, the `sources` used (`(step, sigma_rel)` of each stored average), their
    `weights` (summing to 1), and `error`, the relative L2 distance between the combined
    profile and the target one."""

    step: int
    sigma_rel: float
    gamma: float
    sources: tuple[tuple[int, float], ...]
    weights: tuple[float, ...]
    error: float

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "sigma_rel": self.sigma_rel,
            "gamma": self.gamma,
            "error": self.error,
            "sources": [[s, r, w] for (s, r), w in zip(self.sources, self.weights, strict=True)],
        }


def _snapshots(directory: Path, verify: bool) -> list[tuple[int, Path, dict]]:
    """`(step, folder, metadata)` of every snapshot in `directory`, oldest first, each
    verified against its checksums; a ValueError names the first that does not verify."""
    found = []
    for step, slot in sorted(s for s in slots(directory) if s[1] != directory):
        try:
            meta = _read_meta(slot, verify)
        except ValueError as e:
            raise ValueError(f"post-hoc EMA snapshot {e}; delete it or restore it.") from None
        if not isinstance(meta.get("sigma_rels"), list):
            raise ValueError(f"{slot} is not a post-hoc EMA snapshot (no sigma_rels).")
        found.append((step, slot, meta))
    return found


def _represented(t_in, g_in, step: int, max_error: float) -> str:
    """The range of lengths the stored profiles rebuild within `max_error`, in words."""
    grid = np.geomspace(1e-3, SIGMA_REL_MAX, 120)
    ok = [
        s for s in grid if posthoc_weights(t_in, g_in, step, sigma_rel_to_gamma(s))[1] <= max_error
    ]
    return f"from {min(ok):.3f} to {max(ok):.3f}" if ok else "no length at all"


def reconstruct_ema(
    directory: str | os.PathLike,
    sigma_rel: float,
    *,
    like,
    step: int | None = None,
    sigma_rels: tuple[float, ...] | None = None,
    max_error: float = 0.05,
    verify: bool = True,
    return_info: bool = False,
):
    """The power-function EMA of relative length `sigma_rel` of a run trained with
    `posthoc_ema=sgm.PostHocEMA(...)`, rebuilt from its snapshots in `directory` (Karras et
    al. 2024, section 3.2 and appendix C.3): the combination of the stored averages whose
    profile is closest in L2 to the target's, with weights from the profiles' Gram system,
    accumulated in float64.

    **Arguments:**

    - `directory`: the snapshots (`PostHocEMA.directory`; by default
      `<checkpoints.directory>/ema`, in a run of `main.py` `RUN/checkpoint/ema`).
    - `sigma_rel`: the relative length to rebuild, in `(0, 0.3003]`.
    - `like`: a model of the trained structure (the untrained model will do).
    - `step`: the step of the average, one of the snapshots' (`None`: the newest).
    - `sigma_rels`: use only the stored averages of these lengths (`None`: all).
    - `max_error`: the largest relative L2 error of the combined profile accepted; a length
      the snapshots cannot represent (much shorter or longer than those tracked, or shorter
      than their spacing resolves) is a ValueError saying which lengths they can.
    - `verify`: check every snapshot against its checksums.
    - `return_info`: also return an `sgm.EMAReconstruction` (weights, sources, error).

    **Returns:** the model, or `(model, EMAReconstruction)` with `return_info=True`.
    """
    sigma_rel = _check_sigma_rel("sigma_rel", sigma_rel)
    gamma = sigma_rel_to_gamma(sigma_rel)
    directory = Path(directory)
    found = _snapshots(directory, verify)
    if not found:
        raise ValueError(
            f"{directory} holds no post-hoc EMA snapshots; train with "
            "posthoc_ema=sgm.PostHocEMA(...) (main.py: --train.posthoc_ema PostHocEMA)."
        )
    steps = [s for s, _, _ in found]
    step = steps[-1] if step is None else check_int("step", step)
    if step not in steps:
        raise ValueError(
            f"step must be one of the snapshots' steps {steps[0]} ... {steps[-1]}, got {step}."
        )
    stored = sorted({r for _, _, m in found for r in m["sigma_rels"]})
    chosen = set(stored) if sigma_rels is None else {float(r) for r in _as_tuple(sigma_rels)}
    if not chosen <= set(stored):
        raise ValueError(
            f"sigma_rels {sorted(chosen - set(stored))} are not stored; the snapshots hold "
            f"{stored}."
        )
    # (folder, index in its tuple, step, gamma) of each stored average used
    sources = [
        (slot, j, s, r, g)
        for s, slot, meta in found
        if s <= step
        for j, (r, g) in enumerate(zip(meta["sigma_rels"], meta["gammas"], strict=True))
        if r in chosen
    ]
    t_in = [src[2] for src in sources]
    g_in = [src[4] for src in sources]
    weights, error = posthoc_weights(t_in, g_in, step, gamma)
    if not error <= max_error:
        raise ValueError(
            f"sigma_rel={sigma_rel} cannot be rebuilt from the snapshots in {directory} (profile "
            f"error {error:.1%} > max_error {max_error:.0%}); they represent sigma_rel "
            f"{_represented(t_in, g_in, step, max_error)}."
        )
    params, static = eqx.partition(like, eqx.is_inexact_array)
    leaves, treedef = jax.tree.flatten(params)
    total = [np.zeros(np.shape(a), np.float64) for a in leaves]
    for slot in dict.fromkeys(src[0] for src in sources):
        meta = next(m for _, p, m in found if p == slot)
        structure = tuple(like for _ in meta["sigma_rels"])
        expected = _signature(structure)
        if meta.get("signature") != expected:
            pairs = zip(meta.get("signature") or [], expected, strict=False)
            diff = next((f"saved {a}, like has {b}" for a, b in pairs if a != b), "leaf count")
            raise ValueError(
                f"the snapshots in {directory} were written by another model ({diff}); pass "
                "like= a model of the structure the run trained."
            )
        try:
            averages = eqx.tree_deserialise_leaves(slot / "state.eqx", structure)
        except Exception as e:  # numpy raises several kinds on truncated files
            raise ValueError(f"{slot / 'state.eqx'} is corrupt or truncated: {e}") from e
        for (src_slot, j, *_), w in zip(sources, weights, strict=True):
            if src_slot == slot:
                parts = jax.tree.leaves(eqx.filter(averages[j], eqx.is_inexact_array))
                for acc, a in zip(total, parts, strict=True):
                    acc += w * np.asarray(a, np.float64)
    arrays = [jnp.asarray(acc, jnp.asarray(a).dtype) for acc, a in zip(total, leaves, strict=True)]
    model = eqx.combine(jax.tree.unflatten(treedef, arrays), static)
    if not return_info:
        return model
    info = EMAReconstruction(
        step=step,
        sigma_rel=sigma_rel,
        gamma=gamma,
        sources=tuple((src[2], float(src[3])) for src in sources),
        weights=tuple(float(w) for w in weights),
        error=error,
    )
    return model, info
