"""Datasets: the real MNIST subset, tfds offline with mock data, digits, toys, series."""

import gzip
import math
from pathlib import Path

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import MNIST_DIR

import sgm
import sgm.experiment
from sgm.data import delay_embed, delay_unembed, load_csv, ornstein_uhlenbeck, read_idx

needs_mnist = pytest.mark.skipif(
    not MNIST_DIR.is_dir(), reason=f"MNIST subset not found at {MNIST_DIR} (needs ../shared)"
)


@needs_mnist
def test_mnist_from_idx_files():
    ds = sgm.data.load("mnist", data_dir=MNIST_DIR)
    assert ds.train.shape == (8000, 1, 28, 28) and ds.test.shape == (1000, 1, 28, 28)
    assert ds.train_int.dtype == np.uint8 and ds.num_bits == 8 and ds.num_classes == 10
    counts = np.bincount(ds.train_labels, minlength=10)
    assert counts.min() > 600 and counts.max() < 1000  # roughly balanced
    assert ds.train.min() == -1.0 and ds.train.max() == 1.0
    back = np.asarray(ds.scaler.inverse(ds.train[:5])) * 255
    np.testing.assert_allclose(back, ds.train_int[:5], atol=1e-3)


def _write_idx(path, magic_dims, payload):
    ndim = len(magic_dims)
    header = bytes([0, 0, 8, ndim]) + b"".join(d.to_bytes(4, "big") for d in magic_dims)
    with gzip.open(path, "wb") as f:
        f.write(header + payload)


def test_idx_errors_are_clear(tmp_path):
    good = tmp_path / "good.gz"
    _write_idx(good, (2, 2, 2), bytes(range(8)))
    assert read_idx(good).shape == (2, 2, 2)
    truncated = tmp_path / "short.gz"
    _write_idx(truncated, (2, 2, 2), bytes(5))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(truncated)
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x01\x02\x03\x04" + bytes(16))
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad_magic)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sgm.data.mnist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        sgm.data.mnist(tmp_path)


@pytest.mark.parametrize("name,shape", [("mnist", (1, 28, 28)), ("cifar10", (3, 32, 32))])
def test_tfds_path_offline_with_mock_data(name, shape):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        ds = sgm.data.load(name)
    assert ds.train.shape == (6, *shape) and ds.test.shape == (6, *shape)
    assert ds.train_int.dtype == np.uint8 and ds.num_classes == 10
    assert np.all(np.abs(ds.train) <= 1)


def test_flowers_are_cropped_and_resized_offline():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=3):
        ds = sgm.data.flowers(resolution=16)
    assert ds.train.shape == (6, 3, 16, 16)  # train + validation splits
    assert ds.num_classes == 102


def test_unprepared_tfds_dataset_explains_how_to_prepare(tmp_path):
    with pytest.raises(RuntimeError, match=r"not prepared.*sgm\[prepare\].*--data-dir"):
        sgm.data.load_tfds("mnist", "train", data_dir=tmp_path)


def test_digits_and_deterministic_split():
    a, b = sgm.data.digits(key=jr.key(1)), sgm.data.digits(key=jr.key(1))
    assert a.data_shape == (1, 8, 8) and a.num_classes == 10 and a.train_int.max() == 255
    assert len(a.train) + len(a.test) == 1797
    np.testing.assert_array_equal(a.train_labels, b.train_labels)
    c = sgm.data.digits(key=jr.key(2))
    assert not np.array_equal(a.train_labels, c.train_labels)


@pytest.mark.parametrize("name", ["two_moons", "eight_gaussians", "checkerboard", "swiss_roll"])
def test_toys(name):
    ds = sgm.data.load(name, key=jr.key(0), n_train=1000, n_test=100)
    again = sgm.data.load(name, key=jr.key(0), n_train=1000, n_test=100)
    assert ds.train.shape == (1000, 2) and np.all(np.isfinite(ds.train))
    np.testing.assert_array_equal(ds.train, again.train)
    assert 0.3 < np.abs(ds.train).max() < 2.5


def test_ornstein_uhlenbeck_statistics():
    """Stationary variance sigma^2 / (2 theta) and lag-1 autocorrelation exp(-theta dt)."""
    theta, sigma, dt = 1.0, 0.5, 0.05
    s = np.asarray(ornstein_uhlenbeck(4000, 64, key=jr.key(0), theta=theta, sigma=sigma, dt=dt))
    var = sigma**2 / (2 * theta)
    assert s.var() == pytest.approx(var, rel=0.03)
    lag1 = np.mean(s[:, 1:] * s[:, :-1]) / np.mean(s**2)
    assert lag1 == pytest.approx(math.exp(-theta * dt), abs=0.01)


def test_delay_embedding_round_trip():
    series = jnp.sin(jnp.linspace(0, 6, 40))
    image = delay_embed(series, 8)
    assert image.shape == (1, 33, 8)
    np.testing.assert_allclose(delay_unembed(image), series, rtol=1e-6)


def test_csv_loader(tmp_path):
    good = tmp_path / "s.csv"
    good.write_text("a,b\n1,2\n3,4\n5,6\n")
    np.testing.assert_array_equal(load_csv(good), [[1, 3, 5], [2, 4, 6]])
    np.testing.assert_array_equal(load_csv(good, column="b"), [[2, 4, 6]])
    bad = tmp_path / "bad.csv"
    bad.write_text("a\n1\nx\n")
    with pytest.raises(ValueError, match=r"row 3, column 'a' is not a number"):
        load_csv(bad)


def test_shuffle_is_deterministic_and_consistent():
    ds = sgm.data.digits()
    a, b = ds.shuffled(jr.key(3)), ds.shuffled(jr.key(3))
    np.testing.assert_array_equal(a.train, b.train)
    idx = [
        int(np.argmin(np.abs(ds.train - a.train[i]).reshape(len(ds.train), -1).sum(1)))
        for i in range(5)
    ]
    np.testing.assert_array_equal(ds.train_labels[idx], a.train_labels[:5])


def test_bad_dataset_input():
    with pytest.raises(ValueError, match="unknown dataset"):
        sgm.data.load("imagenet")
    with pytest.raises(ValueError, match="NaN"):
        sgm.data.Dataset("x", (2,), np.full((3, 2), np.nan, np.float32), np.zeros((1, 2)))


def test_ou_family_against_its_exact_law():
    """Each series of the OU family is N(0, Sigma_theta): the closed-form check scores exact
    series as exact (log-density gap ~0, lag-1 error like the estimator's own) and flags series
    with the wrong scale or the wrong rate."""
    ds = sgm.data.load("ou_theta")
    assert ds.condition == "vector" and ds.cond_shape == (1,) and ds.data_shape == (1, 64)
    theta = np.exp(ds.train_cond[:, 0])
    assert 0.5 <= theta.min() and theta.max() <= 4.0
    exact = ds.check_conditional(ds.train, ds.train_cond)
    assert abs(exact["delta_log_density_per_dim"]) < 0.01
    assert exact["variance"] == pytest.approx(1.0, abs=0.03)
    assert abs(exact["lag1_mean_error"] - exact["lag1_mean_error_exact"]) < 0.005
    assert exact["lag1_rms_error"] == pytest.approx(exact["lag1_rms_error_exact"], rel=0.1)
    scaled = ds.check_conditional(1.2 * ds.train, ds.train_cond)
    assert scaled["delta_log_density_per_dim"] < -0.15
    for wrong in (ds.train_cond - np.log(2), ds.train_cond + np.log(2)):  # theta halved, doubled
        off = ds.check_conditional(ds.train, wrong)
        assert abs(off["delta_log_density_per_dim"]) > 0.15
        assert abs(off["lag1_mean_error"] - off["lag1_mean_error_exact"]) > 0.02
    with pytest.raises(ValueError, match="theta_range"):
        sgm.data.ou_family(key=jr.key(0), theta_range=(2.0, 1.0))


def test_lowres_maps_condition_images():
    ds = sgm.data.with_lowres_condition(sgm.data.load("digits"), 2)
    assert ds.condition == "map" and ds.cond_shape == (1, 8, 8)
    blocks = ds.train[:, :, :2, :2].mean(axis=(2, 3))
    np.testing.assert_allclose(ds.train_cond[:, :, 0, 0], blocks, atol=1e-6)
    np.testing.assert_array_equal(ds.train_cond[:, :, 1, 1], ds.train_cond[:, :, 0, 0])
    check = ds.check_conditional(ds.test, ds.test_cond)
    assert check["lowres_rmse"] < 1e-6 < 0.2 < check["lowres_rmse_unmatched"]
    sub = ds.shuffled(jr.key(0)).subset(n_train=10, n_test=5)
    np.testing.assert_allclose(sgm.data.with_lowres_condition(sub, 2).train_cond, sub.train_cond)
    with pytest.raises(ValueError, match="divisible"):
        sgm.data.with_lowres_condition(ds, 3)
    with pytest.raises(ValueError, match="needs images"):
        sgm.data.with_lowres_condition(sgm.data.load("ou"), 2)


def test_bad_conditioning_inputs():
    x = np.zeros((4, 1, 8), np.float32)
    with pytest.raises(ValueError, match="both train_cond and test_cond"):
        sgm.data.Dataset("s", (1, 8), x, x, train_cond=np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match=r"expected \(4, p\)"):
        sgm.data.Dataset(
            "s",
            (1, 8),
            x,
            x,
            train_cond=np.zeros((4, 1, 7), np.float32),
            test_cond=np.zeros((4, 1, 7), np.float32),
        )
    with pytest.raises(ValueError, match="finite float32"):
        sgm.data.Dataset(
            "s",
            (1, 8),
            x,
            x,
            train_cond=np.full((4, 2), np.nan, np.float32),
            test_cond=np.zeros((4, 2), np.float32),
        )


def test_a_process_reads_only_its_share_of_a_tfds_dataset(monkeypatch):
    """`Data.load(shard=(rank, count))`: the training rows `rank::count` of the first
    `n_train` (across Flowers' train + validation splits), read by random access and nothing
    else; the test split whole."""
    import tensorflow_datasets as tfds

    from sgm.data import _images

    read = []
    source_of = _images._tfds_source

    class Counting:
        def __init__(self, source, split):
            self.source, self.split = source, split

        def __len__(self):
            return len(self.source)

        def __getitem__(self, i):
            read.append((self.split, i))
            return self.source[i]

    def counting(name, split, data_dir):
        return Counting(source_of(name, split, data_dir), split)

    monkeypatch.setattr(_images, "_tfds_source", counting)
    with tfds.testing.mock_data(num_examples=7):
        full = sgm.experiment.Data("flowers", resolution=16).load(key=jr.key(0))
        read.clear()
        part = sgm.experiment.Data("flowers", n_train=11, resolution=16).load(
            key=jr.key(0), shard=(1, 3)
        )
    assert part.shard == (1, 3) and len(full.train) == 14
    np.testing.assert_array_equal(part.train_int, full.train_int[:11][1::3])
    np.testing.assert_array_equal(part.train_labels, full.train_labels[:11][1::3])
    np.testing.assert_array_equal(part.test_int, full.test_int)
    train_reads = sorted(r for r in read if r[0] != "test")
    assert train_reads == [("train", 1), ("train", 4), ("validation", 0), ("validation", 3)]


def test_sharded_datasets_hold_their_share():
    ds = sgm.data.digits(key=jr.key(0))
    part = sgm.experiment.Data("digits", n_train=100).load(key=jr.key(0), shard=(2, 4))
    np.testing.assert_array_equal(part.train, ds.train[:100][2::4])
    np.testing.assert_array_equal(part.train_labels, ds.train_labels[:100][2::4])
    assert part.shard == (2, 4) and len(part.test) == len(ds.test)
    with pytest.raises(ValueError, match="rank"):
        ds.sharded(4, 4)
    with pytest.raises(ValueError, match="process 2 of 4"):
        model = sgm.ScoreModel(
            sgm.nets.MLP((1, 8, 8), key=jr.key(0), width=8, depth=1), sgm.VPSDE()
        )
        sgm.train(model, sgm.VPSDE(), part, None, steps=1, batch_size=4, key=jr.key(0))


# The user's own files: npz, csv, image folders.


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_float_data_as_given_or_standardised(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal([3.0, -1.0], [2.0, 0.5], (200, 2)).astype(np.float32)
    path = _npz(tmp_path / "d.npz", x=x, y=np.arange(200) % 3)
    ds = sgm.data.load("npz", path=path)
    assert ds.train.shape == (180, 2) and ds.test.shape == (20, 2) and ds.scaler is None
    assert ds.num_classes == 3 and ds.train_labels is not None
    again = sgm.data.npz(path)
    np.testing.assert_array_equal(ds.test, again.test)  # a deterministic split
    std = sgm.data.load("npz", path=path, standardize=True)
    assert isinstance(std.scaler, sgm.Standardizer)
    np.testing.assert_allclose(std.train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(std.train.std(0), 1, atol=1e-4)
    np.testing.assert_allclose(std.scaler.inverse(std.test), ds.test, rtol=1e-5, atol=1e-5)


def test_npz_with_a_test_split_and_uint8_images(tmp_path):
    rng = np.random.default_rng(1)
    ims = rng.integers(0, 256, (12, 6, 6), dtype=np.uint8)
    path = _npz(tmp_path / "i.npz", x=ims[:10], x_test=ims[10:])
    ds = sgm.data.load("npz", path=path)
    assert ds.data_shape == (1, 6, 6) and ds.num_bits == 8 and len(ds.test) == 2
    assert ds.train.min() >= -1 and ds.train.max() <= 1
    np.testing.assert_allclose(np.asarray(ds.scaler.inverse(ds.test)) * 255, ds.test_int, atol=1e-3)


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"y": np.zeros(3)}, "has no array 'x'"),
        ({"x": np.zeros(5)}, r"must be \(N, \*example_shape\)"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(3, int)}, "y must be 4 non-negative integer"),
        ({"x": np.zeros((4, 2)), "x_test": np.zeros((2, 3))}, "x_test .* must match x"),
        ({"x": np.zeros((4, 8, 8, 3), np.uint8)}, "channels last"),
        ({"x": np.zeros((4, 2)), "z": np.zeros(2)}, "unexpected arrays"),
    ],
)
def test_bad_npz_files_are_one_line_errors(tmp_path, arrays, message):
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message) as e:
        sgm.data.npz(path)
    assert "\n" not in str(e.value)


def test_missing_files_and_paths_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sgm.data.load("npz", path=tmp_path / "nowhere.npz")
    with pytest.raises(ValueError, match="needs path="):
        sgm.data.load("csv")
    with pytest.raises(ValueError, match="needs path="):
        sgm.experiment.Data("image_folder", resolution=8)
    data = sgm.experiment.Data("npz", path="rel/d.npz")
    assert Path(data.options["path"]).is_absolute()  # config.json says where the data are


def test_csv_wide_and_long_layouts_with_windows(tmp_path):
    wide = tmp_path / "wide.csv"
    rows = np.arange(60, dtype=np.float32).reshape(10, 6)
    wide.write_text("t0,t1,t2,t3,t4,t5\n" + "\n".join(",".join(map(str, r)) for r in rows))
    ds = sgm.data.load("csv", path=wide)
    assert ds.data_shape == (1, 6) and len(ds.train) == 9 and len(ds.test) == 1
    np.testing.assert_allclose(ds.scaler.inverse(ds.test[0, 0]), rows[-1], atol=1e-4)
    long = tmp_path / "long.csv"
    lines = ["time,value,series_id"]  # any column order; rows in any time order
    lines += [f"{t},{10 * i + t},s{i}" for i in range(2) for t in reversed(range(20))]
    long.write_text("\n".join(lines))
    ds = sgm.data.load("csv", path=long, layout="long", window=5, stride=5)
    assert ds.train.shape == (7, 1, 5) and ds.test.shape == (1, 1, 5)
    np.testing.assert_allclose(ds.scaler.inverse(ds.test[0, 0]), [25, 26, 27, 28, 29], atol=1e-4)
    one = tmp_path / "one.csv"
    one.write_text(",".join(str(float(v)) for v in np.sin(np.arange(100) / 5)))
    ds = sgm.data.load("csv", path=one, window=20, stride=10)  # one long series in windows
    assert len(ds.train) + len(ds.test) == 9
    assert sgm.data.read_series(long, layout="long")[1].tolist() == list(range(10, 30))


@pytest.mark.parametrize(
    "text,kwargs,message",
    [
        ("a,b\n1,2\n", {"layout": "tall"}, "unknown csv layout 'tall'; one of wide, long"),
        ("1,2,3\n4,5\n", {}, "lengths 2 to 3; cut them to one length with window="),
        ("1,2,3\n", {}, "cannot be split into train and test; cut a long series"),
        ("series_id,value\ns,1\n", {"layout": "long"}, r"missing \['time'\]"),
        ("1,2,3\n4,x,6\n", {}, "row 2, column 2 is not a number: 'x'"),
        ("1,2,3\n4,5,6\n", {"window": 5}, "window=5 exceeds a series of length 3"),
    ],
)
def test_bad_csv_files_are_one_line_errors(tmp_path, text, kwargs, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as e:
        sgm.data.csv(path, **kwargs)
    assert "\n" not in str(e.value)


def test_image_folder_with_class_subfolders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    for c, mode in (("cat", "RGB"), ("dog", "RGB")):
        (tmp_path / c).mkdir()
        for i in range(5):
            im = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8), mode)
            im.save(tmp_path / c / f"{i}.png")
    ds = sgm.data.load("image_folder", path=tmp_path, resolution=8)
    assert ds.data_shape == (3, 8, 8) and ds.num_bits == 8 and ds.num_classes == 2
    assert len(ds.train) == 9 and len(ds.test) == 1 and ds.train_int.dtype == np.uint8
    gray = tmp_path / "gray"
    gray.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(gray / f"{i}.png")
    assert sgm.data.image_folder(gray).data_shape == (1, 4, 4)
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(gray / "odd.png")
    with pytest.raises(ValueError, match="pass resolution="):
        sgm.data.image_folder(gray)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        sgm.data.image_folder(tmp_path / "empty")


def test_timeseries_scaler_round_trip_and_too_few_series():
    series = np.random.default_rng(3).normal(5.0, 3.0, (40, 16)).astype(np.float32)
    ds = sgm.data.timeseries(series, n_test=10)
    assert isinstance(ds.scaler, sgm.Standardizer)
    np.testing.assert_allclose(ds.scaler.inverse(ds.test[:, 0]), series[:10], rtol=1e-5, atol=1e-4)
    assert abs(float(ds.train.mean())) < 1e-5 and abs(float(ds.train.std()) - 1) < 1e-4
    with pytest.raises(ValueError, match="n_test=500 must be at least 1 and below the 40"):
        sgm.data.timeseries(series)
    small = sgm.data.load("ou", key=jr.key(0), n_series=300, length=8)
    assert len(small.test) == 60 and small.scaler is not None


def test_progress_is_plain_lines_off_a_terminal(capsys):
    from sgm._progress import progress

    for _ in progress(range(3), desc="work"):
        pass
    err = capsys.readouterr().err
    assert "\r" not in err and "work" in err and err.endswith("\n")
