"""Datasets from a user's own files: NumPy `.npz` arrays, CSV time series, folders of images.

Each returns a `Dataset` in model scale with the scaler that maps data units there (and back):
`uint8` images go to `[-1, 1]` (bits/dim applies), series are standardised, float arrays are
used as given or standardised per feature."""

import csv as _csv
from pathlib import Path

import numpy as np

from .._checks import check_float, check_int
from .._scaler import Standardizer
from ._dataset import Dataset, image_dataset
from ._images import center_crop_resize
from ._timeseries import load_csv, series_dataset, windows

LAYOUTS = ("wide", "long", "columns")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _existing(path, what: str) -> Path:
    if path is None:
        raise ValueError(f"the {what} dataset needs path=...; give the file or folder to read.")
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; check the {what} dataset's path.")
    return path


def _test_rows(n: int, test_fraction: float, where: str) -> int:
    check_float(f"{where}: test_fraction", test_fraction, above=0.0, below=1.0)
    if n < 2:
        raise ValueError(f"{where}: {n} example(s) cannot be split into train and test; give more.")
    return min(n - 1, max(1, round(test_fraction * n)))


def _split(n: int, test_fraction: float, where: str):
    """Deterministic held-out rows: a fixed permutation (seed 0), its first rows the test."""
    k = _test_rows(n, test_fraction, where)
    perm = np.random.default_rng(0).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def _labels(y, n: int, where: str, key: str):
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or (n and y.min() < 0):
        raise ValueError(
            f"{where}: {key} must be {n} non-negative integer labels, one per example; got "
            f"shape {y.shape} and dtype {y.dtype}."
        )
    return y.astype(np.int32)


def _as_images(x, where: str, key: str):
    """`uint8` arrays `(N, H, W)` or `(N, C, H, W)` as `(N, C, H, W)`; None for other data."""
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        return None
    if x.ndim == 3:
        return x[:, None]
    if x.shape[1] not in (1, 3, 4) and x.shape[3] in (1, 3, 4):
        raise ValueError(
            f"{where}: {key} has shape {x.shape}, channels last; images must be (N, C, H, W): "
            f"save {key}.transpose(0, 3, 1, 2)."
        )
    return x


def npz(
    path=None, *, standardize: bool = False, test_fraction: float = 0.1, name: str = "npz"
) -> Dataset:
    """A NumPy archive (`np.savez(path, x=..., y=...)`) as a Dataset.

    **Arguments:**

    - `path`: the `.npz` file. It holds `x` `(N, *example_shape)` and optionally `y` (`N`
      integer labels, classes `0 .. max(y)`), `x_test` and `y_test`. Without `x_test`, a
      fixed `test_fraction` of the examples (chosen by a seed-0 permutation) is held out.
    - `standardize`: float data are model scale as given (no scaler) unless this is True:
      then each feature is standardised with the training split's mean and standard
      deviation (the scaler is a `Standardizer`).

    `uint8` arrays `(N, H, W)` or `(N, C, H, W)` are images: model scale `[-1, 1]`,
    `num_bits=8` for bits/dim, and the scaler maps intensities `[0, 1]` there."""
    path = _existing(path, "npz")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} cannot be read as a .npz archive: {e}") from None
    where = str(path)
    if "x" not in arrays:
        raise ValueError(
            f"{where} has no array 'x' (it holds {sorted(arrays)}); save it with "
            "np.savez(path, x=examples, y=labels)."
        )
    unknown = sorted(set(arrays) - {"x", "y", "x_test", "y_test"})
    if unknown:
        raise ValueError(f"{where}: unexpected arrays {unknown}; use x, y, x_test, y_test.")
    x, y = arrays["x"], arrays.get("y")
    if x.ndim < 2:
        raise ValueError(
            f"{where}: x has shape {x.shape}; it must be (N, *example_shape), e.g. x[:, None] "
            "for N scalars."
        )
    if y is not None:
        y = _labels(y, len(x), where, "y")
    if "x_test" in arrays:
        xt, yt = arrays["x_test"], arrays.get("y_test")
        if xt.shape[1:] != x.shape[1:] or xt.dtype != x.dtype:
            raise ValueError(
                f"{where}: x_test {xt.shape} {xt.dtype} must match x {x.shape} {x.dtype} "
                "apart from the number of examples."
            )
        if (y is None) != (yt is None):
            raise ValueError(
                f"{where}: give labels for both x and x_test (y and y_test), or neither."
            )
        yt = None if yt is None else _labels(yt, len(xt), where, "y_test")
    else:
        if "y_test" in arrays:
            raise ValueError(f"{where}: y_test without x_test; add x_test or drop y_test.")
        train, test = _split(len(x), test_fraction, where)
        x, xt = x[train], x[test]
        y, yt = (None, None) if y is None else (y[train], y[test])
    num_classes = None if y is None or yt is None else int(max(y.max(), yt.max())) + 1
    images, images_test = _as_images(x, where, "x"), _as_images(xt, where, "x_test")
    if images is not None and images_test is not None:
        if standardize:
            raise ValueError(
                f"{where}: standardize applies to float data; uint8 images are scaled to "
                "[-1, 1]. Drop standardize, or save the images as floats."
            )
        return image_dataset(name, images, images_test, y, yt, num_classes)
    x, xt = x.astype(np.float32), xt.astype(np.float32)
    for key, a in (("x", x), ("x_test", xt)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{where}: {key} contains NaN or infinite values; remove them first.")
    scaler = Standardizer.fit(x, per_feature=True) if standardize else None
    scale = (lambda a: a) if scaler is None else (lambda a: np.asarray(scaler(a), np.float32))
    return Dataset(
        name=name,
        data_shape=tuple(x.shape[1:]),
        train=scale(x),
        test=scale(xt),
        train_labels=y,
        test_labels=yt,
        num_classes=num_classes,
        scaler=scaler,
    )


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        rows = [r for r in _csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{path} is empty; it needs rows of values.")
    return rows


def _number(cell: str, path: Path, row: int, col: int) -> float:
    try:
        return float(cell)
    except ValueError:
        raise ValueError(f"{path}: row {row}, column {col} is not a number: {cell!r}.") from None


def read_series(path, *, layout: str = "wide") -> list[np.ndarray]:
    """The series of a CSV file, in data units, as a list of 1-D float32 arrays.

    - `layout="wide"`: one series per row (an optional header row of names is skipped).
    - `layout="long"`: a header with columns `series_id, time, value` (any order, other
      columns ignored), one observation per row; each series is sorted by time, the series
      in order of first appearance.
    - `layout="columns"`: one series per column under a header (`load_csv`)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown csv layout {layout!r}; one of {', '.join(LAYOUTS)}.")
    path = _existing(path, "csv")
    if layout == "columns":
        return list(load_csv(path))
    rows = _rows(path)
    if layout == "wide":
        try:
            [float(c) for c in rows[0]]
            start = 1
        except ValueError:
            rows, start = rows[1:], 2  # a header of names
        return [
            np.array([_number(c, path, i + start, j + 1) for j, c in enumerate(r)], np.float32)
            for i, r in enumerate(rows)
        ]
    header = [h.strip() for h in rows[0]]
    missing = [c for c in ("series_id", "time", "value") if c not in header]
    if missing:
        raise ValueError(
            f"{path}: the long layout needs columns series_id, time, value; missing {missing} "
            f"(header: {header}). For one series per row use layout='wide'."
        )
    sid, tc, vc = (header.index(c) for c in ("series_id", "time", "value"))
    series: dict[str, list[tuple[float, float]]] = {}
    for i, r in enumerate(rows[1:], start=2):
        if len(r) < len(header):
            raise ValueError(f"{path}: row {i} has {len(r)} cells, the header {len(header)}.")
        t, v = _number(r[tc], path, i, tc + 1), _number(r[vc], path, i, vc + 1)
        series.setdefault(r[sid], []).append((t, v))
    return [np.array([v for _, v in sorted(obs)], np.float32) for obs in series.values()]


def csv(
    path=None,
    *,
    layout: str = "wide",
    window: int | None = None,
    stride: int | None = None,
    test_fraction: float = 0.1,
    embed_width: int | None = None,
    name: str = "csv",
) -> Dataset:
    """Time series from a CSV file (`read_series` for the layouts) as a standardised Dataset
    `(1, L)` (or delay-embedded with `embed_width`, as `timeseries`).

    **Arguments:**

    - `window`, `stride`: cut each series into windows of `window` values, `stride` apart
      (default `window`); without a window every series must have the same length.
    - `test_fraction`: the last series (or windows: the end of the last series) held out.

    Model scale: the values minus the training split's mean over its standard deviation
    (one pair for all values; the scaler is a `Standardizer`)."""
    series = read_series(path, layout=layout)
    where = f"{path}"
    if window is not None:
        window = check_int("csv: window", window, minimum=2)
        stride = check_int("csv: stride", stride, none=True)
        short = [len(s) for s in series if len(s) < window]
        if short:
            raise ValueError(
                f"{where}: window={window} exceeds a series of length {min(short)}; pass a "
                "smaller window."
            )
        values = np.concatenate([windows(s[None], window, stride) for s in series])
    else:
        lengths = sorted({len(s) for s in series})
        if len(lengths) > 1:
            raise ValueError(
                f"{where}: the series have lengths {lengths[0]} to {lengths[-1]}; cut them to "
                f"one length with window= (e.g. window={lengths[0]})."
            )
        values = np.stack(series)
    if len(values) < 2:
        raise ValueError(
            f"{where}: {len(values)} series cannot be split into train and test; cut a long "
            f"series into windows with window= (e.g. window={max(2, values.shape[1] // 10)})."
        )
    k = _test_rows(len(values), test_fraction, where)
    return series_dataset(name, values[:-k], values[-k:], embed_width=embed_width)


def _image_files(folder: Path) -> tuple[list[Path], list[int] | None, int | None]:
    is_image = lambda p: p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES  # noqa: E731
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and any(map(is_image, d.iterdir())))
    if classes:
        files = [(p, c) for c, d in enumerate(classes) for p in sorted(d.iterdir()) if is_image(p)]
        return [p for p, _ in files], [c for _, c in files], len(classes)
    return sorted(p for p in folder.iterdir() if is_image(p)), None, None


def image_folder(
    path=None,
    *,
    resolution: int | None = None,
    grayscale: bool | None = None,
    test_fraction: float = 0.1,
    name: str = "image_folder",
) -> Dataset:
    """A folder of images (PNG, JPEG, BMP, GIF, WebP; read with Pillow) as 8-bit images in
    `[-1, 1]`; subfolders of images are classes (labels in their sorted order).

    **Arguments:**

    - `resolution`: centre-crop to a square and resize to `resolution x resolution`; without
      it every image must have the same size.
    - `grayscale`: one channel (True) or RGB (False); default: one channel when every image
      is grayscale.
    - `test_fraction`: a fixed fraction held out (a seed-0 permutation)."""
    from PIL import Image, UnidentifiedImageError

    folder = _existing(path, "image_folder")
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; image_folder reads a folder of images.")
    resolution = check_int("image_folder: resolution", resolution, none=True)
    files, labels, num_classes = _image_files(folder)
    if not files:
        raise ValueError(
            f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}), directly or in class "
            "subfolders."
        )
    opened = []
    for p in files:
        try:
            with Image.open(p) as im:
                im.load()
                opened.append(im.copy())
        except (OSError, UnidentifiedImageError) as e:
            raise ValueError(f"{p} cannot be read as an image: {e}") from None
    gray = (
        all(im.mode in ("1", "L", "LA", "I", "I;16") for im in opened)
        if grayscale is None
        else grayscale
    )
    arrays = [np.asarray(im.convert("L" if gray else "RGB")) for im in opened]
    arrays = [a[..., None] if a.ndim == 2 else a for a in arrays]
    if resolution is not None:
        arrays = [center_crop_resize(a, resolution) for a in arrays]
    sizes = sorted({a.shape[:2] for a in arrays})
    if len(sizes) > 1:
        raise ValueError(
            f"{folder}: the images have sizes {sizes[0]} to {sizes[-1]}; pass resolution= "
            f"(e.g. resolution={min(min(s) for s in sizes)}) to resize them to one."
        )
    x = np.stack(arrays).transpose(0, 3, 1, 2).astype(np.uint8)
    train, test = _split(len(x), test_fraction, str(folder))
    y = None if labels is None else np.asarray(labels, np.int32)
    take = lambda a, rows: None if a is None else a[rows]  # noqa: E731
    return image_dataset(name, x[train], x[test], take(y, train), take(y, test), num_classes)
