"""Deterministic batches: the batch of any step is known from the step alone."""

import jax
import numpy as np
from jax.sharding import Mesh

from .._sharding import batch_sharding

# The flips' random stream, apart from the epochs' permutations `default_rng([*seed, epoch])`.
_FLIP_STREAM = 0x666C6970


def flipped(x: np.ndarray, cond, flips: np.ndarray):
    """Images `x` `(n, C, H, W)` with those where `flips` is true mirrored left-right, and a
    conditioning map `cond` shaped like them with them (class labels and vectors as given)."""
    mirror = lambda a: np.where(flips[:, None, None, None], a[..., ::-1], a)  # noqa: E731
    same = cond is not None and np.ndim(cond) == x.ndim and np.shape(cond)[2:] == x.shape[2:]
    return mirror(x), mirror(cond) if same else cond


class Batches:
    """Deterministic batches: epoch `e` is the permutation `default_rng([seed, e])` of this
    process's examples, so the batch at any step is known from the step alone (exact resume).
    Each batch becomes one global array sharded over the `'data'` mesh axis.

    **Arguments:**

    - `x`, `labels`: the training examples and their labels (or None).
    - `batch_size`: the global batch; each of the `n_proc` processes draws `batch_size // n_proc`.
    - `seed`: a list of ints (the raw data of the training key).
    - `mesh`: the `('data',)` mesh the batch is sharded over.
    - `rank`, `n_proc`: this process and the process count (default: JAX's).
    - `sharded`: whether `x` is this process's share already; otherwise it takes the rows
      `rank::n_proc`.
    - `random_flip`: mirror each image of a batch left-right with probability 1/2 (images
      `(N, C, H, W)` only; a conditioning map with it), drawn from the step and the process
      alone, so that a resumed run repeats the flips.
    """

    def __init__(
        self,
        x,
        labels,
        batch_size,
        seed,
        mesh: Mesh,
        *,
        rank=None,
        n_proc=None,
        sharded=False,
        random_flip=False,
    ):
        rank = jax.process_index() if rank is None else rank
        n_proc = jax.process_count() if n_proc is None else n_proc
        mine = slice(None) if sharded else slice(rank, None, n_proc)  # rows rank::n_proc
        self.x = np.asarray(x)[mine]
        self.labels = None if labels is None else np.asarray(labels)[mine]
        self.local = batch_size // n_proc
        self.seed = seed
        self.sharding = batch_sharding(mesh)
        self.rank, self.random_flip = rank, random_flip

    def indices(self, step: int) -> np.ndarray:
        """The rows of this process's examples in its part of the batch of `step`."""
        n = len(self.x)
        start = step * self.local
        epoch, offset = divmod(start, n)
        idx = np.random.default_rng([*self.seed, epoch]).permutation(n)
        if offset + self.local > n:  # wrap into the next epoch's permutation
            nxt = np.random.default_rng([*self.seed, epoch + 1]).permutation(n)
            idx = np.concatenate([idx[offset:], nxt[: offset + self.local - n]])
        else:
            idx = idx[offset : offset + self.local]
        return idx

    def flips(self, step: int) -> np.ndarray:
        """Which examples of this process's part of the batch of `step` are mirrored: each
        with probability 1/2, from `default_rng([*seed, _FLIP_STREAM, step, rank])`."""
        rng = np.random.default_rng([*self.seed, _FLIP_STREAM, step, self.rank])
        return rng.random(self.local) < 0.5

    def __call__(self, step: int):
        """The global `(x, labels)` arrays of the batch of `step` (labels None without)."""
        idx = self.indices(step)
        x, labels = self.x[idx], None if self.labels is None else self.labels[idx]
        if self.random_flip:
            x, labels = flipped(x, labels, self.flips(step))
        put = lambda a: jax.make_array_from_process_local_data(self.sharding, a)  # noqa: E731
        return put(x), None if labels is None else put(labels)
