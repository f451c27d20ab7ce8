"""MNIST from a local directory of IDX files (LeCun et al.), for machines without internet."""

import gzip
from pathlib import Path

import numpy as np

_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_MAGIC = {3: 2051, 1: 2049}


def read_idx(path: str | Path) -> np.ndarray:
    """Reads one IDX file (gzip'd or not): magic `0x0000 08 nd`, `nd` big-endian sizes, then
    uint8 data. Raises a ValueError naming the file when the header or length is wrong."""
    path = Path(path)
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] not in (1, 3):
        raise ValueError(
            f"{path} is not an IDX file of unsigned bytes (expected magic 2051 for images or "
            "2049 for labels)."
        )
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    start = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - start != expected:
        raise ValueError(
            f"{path} is truncated or corrupt: header says {dims} = {expected} bytes, file holds "
            f"{len(raw) - start}."
        )
    return np.frombuffer(raw, np.uint8, offset=start).reshape(dims)


def _find(data_dir: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (data_dir / name).exists():
            return data_dir / name
    raise FileNotFoundError(
        f"{data_dir} has no {stem}(.gz); an MNIST directory holds "
        f"{', '.join(v + '.gz' for v in _FILES.values())}."
    )


def read_mnist_idx(data_dir: str | Path) -> dict[str, np.ndarray]:
    """The four MNIST arrays from `data_dir`: images `(N, 1, 28, 28)` uint8, labels `(N,)`."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"MNIST data directory {data_dir} does not exist.")
    out = {key: read_idx(_find(data_dir, stem)) for key, stem in _FILES.items()}
    for split in ("train", "test"):
        images, labels = out[f"{split}_images"], out[f"{split}_labels"]
        if images.ndim != 3 or len(images) != len(labels):
            raise ValueError(
                f"{data_dir}: {split} images {images.shape} and labels {labels.shape} do not match."
            )
        out[f"{split}_images"] = images[:, None]
    return out
