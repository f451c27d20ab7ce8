"""Image datasets: MNIST (tfds or local IDX), CIFAR-10, Oxford Flowers 102, sklearn digits."""

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from ._dataset import Dataset, image_dataset
from ._idx import read_mnist_idx


def load_tfds(name: str, split: str, *, data_dir=None, rows=None) -> list[dict]:
    """Examples of a prepared tfds dataset, read with `tfds.data_source` (no TensorFlow
    needed to read), all of them or those at `rows(n)` (a function of the split's size giving
    the indices: random access reads nothing else). Preparing it the first time needs
    TensorFlow: see the error."""
    source = _tfds_source(name, split, data_dir)
    return [source[i] for i in (range(len(source)) if rows is None else rows(len(source)))]


def _tfds_source(name: str, split: str, data_dir) -> Sequence[Any]:
    import tensorflow_datasets as tfds

    if data_dir is not None:
        check_tfds_dir(name, (split,), data_dir)  # before tfds, which would only say "not found"
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except (NotImplementedError, FileNotFoundError, AssertionError, ValueError, KeyError) as e:
        default = os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
        where = data_dir or f"{default} (tfds's default data_dir; TFDS_DATA_DIR moves it)"
        raise RuntimeError(
            f"tfds dataset {name!r} is not prepared in {where}: it needs "
            f"{_expected(name, (split,), data_dir or default)}. Prepare it once (needs TensorFlow "
            f"and internet): pip install 'sgm[prepare]' then {_prepare(name, data_dir)}, or pass "
            "--data-dir with a tfds data_dir that holds it (for MNIST, a folder of IDX files). "
            f"(tfds said: {str(e).splitlines()[0]})"
        ) from e
    return cast(Sequence[Any], source)  # one split given: one source, not a tree of them


def _version(name: str) -> str:
    """The version of `name` that this tfds reads (the folder it looks in)."""
    import tensorflow_datasets as tfds

    try:
        return str(tfds.builder_cls(name).VERSION)
    except Exception:  # a name this tfds does not know: tfds's own error follows
        return "<version>"


def _expected(name: str, splits, root) -> str:
    files = " and ".join(f"{name}-{split}.array_record-*" for split in splits)
    return f"{root}/{name}/{_version(name)}/ with dataset_info.json and {files} files"


def _prepare(name: str, data_dir) -> str:
    at = f", data_dir='{data_dir}'" if data_dir else ""
    return (
        f'python -c "import tensorflow_datasets as tfds; '
        f"tfds.builder('{name}'{at}).download_and_prepare(file_format='array_record')\""
    )


def check_tfds_dir(name: str, splits: Sequence[str], data_dir) -> None:
    """That the tfds data_dir `data_dir` holds the prepared `splits` of `name` in the
    array_record format that random access reads (`tfds.data_source`), with a one-line error
    naming the folder and files expected there and how to make them otherwise: a
    `FileNotFoundError` when `data_dir` does not exist, a `RuntimeError` when it does not hold
    them. Nothing is downloaded."""
    root = Path(data_dir).expanduser()
    folder = root / name / _version(name)
    expected = _expected(name, splits, root)
    how = (
        "prepare it once (needs TensorFlow and internet): pip install 'sgm[prepare]' then "
        + _prepare(name, root)
    )
    if not root.is_dir():
        raise FileNotFoundError(
            f"the tfds data_dir {root} (--data-dir) does not exist; it should hold {expected} "
            f"({how})."
        )
    if not (folder / "dataset_info.json").is_file():
        found = sorted(p.parent.name for p in (root / name).glob("*/dataset_info.json"))
        other = f" (it has version {', '.join(found)})" if found else ""
        raise RuntimeError(
            f"tfds dataset {name!r} {_version(name)} is not prepared in {root}{other}: expected "
            f"{expected} ({how}), or give --data-dir a tfds data_dir that holds it."
        )
    for split in splits:
        if not any(folder.glob(f"{name}-{split}.array_record*")):
            kinds = sorted({p.name.split(".")[1] for p in folder.glob(f"{name}-{split}.*")})
            held = f" (it holds {', '.join(kinds)} files)" if kinds else ""
            raise RuntimeError(
                f"tfds dataset {name!r} is not prepared for random access in {folder}: no "
                f"{name}-{split}.array_record-* files{held}; {how}."
            )


def _stack(examples, key="image") -> np.ndarray:
    return np.stack([np.asarray(ex[key]) for ex in examples])


def _read_split(tfds_name, parts: str, data_dir, train_rows) -> list[dict]:
    """The examples of `parts` ("train+validation" reads as one split); with `train_rows =
    (rank, count, limit)` only the rows `rank::count` of the first `limit` (None: all)."""
    if train_rows is None:
        return [
            ex for part in parts.split("+") for ex in load_tfds(tfds_name, part, data_dir=data_dir)
        ]
    rank, count, limit = train_rows
    sources = [_tfds_source(tfds_name, part, data_dir) for part in parts.split("+")]
    offsets = np.cumsum([0] + [len(s) for s in sources])
    end = offsets[-1] if limit is None else min(limit, offsets[-1])
    out = []
    for i in range(rank, end, count):
        p = int(np.searchsorted(offsets, i, side="right")) - 1
        out.append(sources[p][int(i - offsets[p])])
    return out


def _from_tfds(
    name, tfds_name, splits=("train", "test"), data_dir=None, transform=None, train_rows=None
):
    """A tfds image dataset; with `train_rows = (rank, count, limit)` the training split is
    that process's share (`Dataset.shard`) and only its rows are read."""
    if data_dir is not None:  # every split checked before any is read
        check_tfds_dir(tfds_name, [p for parts in splits for p in parts.split("+")], data_dir)
    out = {}
    for split, parts in zip(("train", "test"), splits, strict=True):
        examples = _read_split(tfds_name, parts, data_dir, train_rows if split == "train" else None)
        images = [np.asarray(ex["image"]) for ex in examples]
        images = np.stack([transform(im) for im in images] if transform else images)
        out[split] = (images.transpose(0, 3, 1, 2), _stack(examples, "label").astype(np.int32))
    n_classes = int(max(out["train"][1].max(), out["test"][1].max())) + 1
    n_classes = {"mnist": 10, "cifar10": 10, "flowers": 102}.get(name, n_classes)
    ds = image_dataset(
        name, out["train"][0], out["test"][0], out["train"][1], out["test"][1], n_classes
    )
    return ds if train_rows is None else dataclasses.replace(ds, shard=tuple(train_rows[:2]))


def mnist(data_dir=None, *, tfds_dir=None, train_rows=None) -> Dataset:
    """MNIST `(1, 28, 28)`: from a directory of IDX files when `data_dir` is given, else tfds
    (`train_rows`: see `_from_tfds`; the IDX files are read whole)."""
    if data_dir is not None:
        a = read_mnist_idx(data_dir)
        return image_dataset(
            "mnist", a["train_images"], a["test_images"], a["train_labels"], a["test_labels"], 10
        )
    return _from_tfds("mnist", "mnist", data_dir=tfds_dir, train_rows=train_rows)


def cifar10(*, tfds_dir=None, train_rows=None) -> Dataset:
    """CIFAR-10 `(3, 32, 32)` through tfds: the 50,000 training and 10,000 test images, from
    tfds's default data_dir or the tfds data_dir `tfds_dir` (an offline copy; see
    `check_tfds_dir` for what it must hold)."""
    return _from_tfds("cifar10", "cifar10", data_dir=tfds_dir, train_rows=train_rows)


def center_crop_resize(image: np.ndarray, resolution: int) -> np.ndarray:
    """Centre-crops an `(H, W, C)` uint8 image to a square and resizes it (PIL, bicubic)."""
    from PIL import Image

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[top : top + side, left : left + side]
    pil = Image.fromarray(crop.squeeze(-1) if crop.shape[-1] == 1 else crop)
    out = np.asarray(pil.resize((resolution, resolution), Image.Resampling.BICUBIC))
    return out[..., None] if out.ndim == 2 else out


def flowers(resolution: int = 64, *, tfds_dir=None, train_rows=None) -> Dataset:
    """Oxford Flowers 102 `(3, r, r)`: train = train + validation splits, test = test."""
    return _from_tfds(
        "flowers",
        "oxford_flowers102",
        splits=("train+validation", "test"),
        data_dir=tfds_dir,
        transform=lambda im: center_crop_resize(im, resolution),
        train_rows=train_rows,
    )


def digits(*, key=None, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, offline): values 0..16 mapped to 8-bit
    by `round(v * 255 / 16)`, a deterministic train/test split (by `key` when given)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.utils import Bunch
    except ImportError as e:
        raise ImportError(
            "the digits data set needs scikit-learn: pip install 'sgm[digits]'"
        ) from e
    import jax.random as jr

    d = load_digits()
    assert isinstance(d, Bunch)  # not return_X_y
    images = np.round(d.images * 255 / 16).astype(np.uint8)[:, None]
    labels = d.target.astype(np.int32)
    order = np.asarray(jr.permutation(key if key is not None else jr.key(0), len(images)))
    n_test = int(round(test_fraction * len(images)))
    test, train = order[:n_test], order[n_test:]
    return image_dataset("digits", images[train], images[test], labels[train], labels[test], 10)
