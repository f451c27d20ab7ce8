"""Sample-quality metrics against closed forms: FID, KID, Inception Score, precision/recall;
the FID Inception-v3, its weights read without torch, clean-fid's resize."""

import json
import pickle
import sys
import zipfile
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from torch_format import random_inception_state, write_state_dict

import sgm.metrics as metrics
from sgm.metrics._inception import _pool


def gaussian_stats(mean, cov):
    return metrics.FeatureStats(np.asarray(mean, float), np.asarray(cov, float), 1000)


def test_fid_of_a_set_against_itself_is_zero():
    f = np.random.default_rng(0).normal(size=(500, 16)) @ np.random.default_rng(1).normal(
        size=(16, 16)
    )
    s = metrics.FeatureStats.of(f)
    assert abs(metrics.fid(s, s)) < 1e-8 * np.trace(s.cov)


def test_fid_of_diagonal_gaussians_is_the_closed_form():
    rng = np.random.default_rng(2)
    m1, m2 = rng.normal(size=8), rng.normal(size=8)
    v1, v2 = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    got = metrics.fid(gaussian_stats(m1, np.diag(v1)), gaussian_stats(m2, np.diag(v2)))
    assert got == pytest.approx(expected, rel=1e-10)


def test_fid_of_rotated_gaussians_and_a_shift():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + np.eye(6), b @ b.T + np.eye(6)
    # (S1 S2)^{1/2} has the trace of (S1^{1/2} S2 S1^{1/2})^{1/2}, a symmetric root by eigh
    w, v = np.linalg.eigh(s1)
    r1 = v @ np.diag(np.sqrt(w)) @ v.T
    trace_root = np.sum(np.sqrt(np.linalg.eigvalsh(r1 @ s2 @ r1)))
    shift = rng.normal(size=6)
    expected = shift @ shift + np.trace(s1 + s2) - 2 * trace_root
    got = metrics.fid(gaussian_stats(np.zeros(6), s1), gaussian_stats(shift, s2))
    assert got == pytest.approx(expected, rel=1e-8)
    # the same covariance, shifted: the squared shift alone
    got = metrics.fid(gaussian_stats(np.zeros(6), s1), gaussian_stats(shift, s1))
    assert got == pytest.approx(shift @ shift, rel=1e-6, abs=1e-8)


def test_feature_stats_and_fid_refuse_bad_shapes():
    with pytest.raises(ValueError, match="n >= 2"):
        metrics.FeatureStats.of(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="same extractor"):
        metrics.fid(gaussian_stats(np.zeros(2), np.eye(2)), gaussian_stats(np.zeros(3), np.eye(3)))


def test_kid_is_unbiased_and_can_be_negative():
    rng = np.random.default_rng(4)
    draws = []
    for i in range(200):
        a, b = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
        draws.append(metrics.kid(a, b, subsets=1, subset_size=40, seed=i)[0])
    draws = np.array(draws)
    sem = draws.std(ddof=1) / np.sqrt(len(draws))
    assert abs(draws.mean()) < 3 * sem
    assert (draws < 0).any()
    shifted = metrics.kid(rng.normal(size=(40, 8)), rng.normal(1.0, 1.0, (40, 8)), subset_size=40)
    assert shifted[0] > 10 * draws.std()


def test_kid_of_one_point_masses_is_the_kernel_closed_form():
    # every x equal to u and every y to v: MMD^2 = k(u,u) + k(v,v) - 2 k(u,v), exactly
    u, v = np.array([1.0, 0.0]), np.array([0.0, 2.0])
    k = lambda p, q: (p @ q / 2 + 1) ** 3  # noqa: E731
    mean, std = metrics.kid(np.tile(u, (5, 1)), np.tile(v, (5, 1)), subsets=3, subset_size=4)
    assert mean == pytest.approx(k(u, u) + k(v, v) - 2 * k(u, v)) and std == pytest.approx(0)


def test_kid_refuses_a_subset_larger_than_a_set():
    with pytest.raises(ValueError, match="subset_size"):
        metrics.kid(np.zeros((5, 2)), np.zeros((9, 2)), subset_size=6)


def test_inception_score_of_uniform_and_of_confident_distinct_classes():
    assert metrics.inception_score(np.zeros((100, 1008)))[0] == pytest.approx(1.0)
    logits = 50.0 * np.eye(10)[np.arange(100) % 10]
    mean, std = metrics.inception_score(logits, splits=10)
    assert mean == pytest.approx(10.0, rel=1e-6) and std == pytest.approx(0, abs=1e-6)
    # one class everywhere: p(y|x) = p(y), a score of 1
    assert metrics.inception_score(50.0 * np.eye(10)[np.zeros(20, int)], splits=2)[0] == (
        pytest.approx(1.0)
    )


def test_precision_recall_of_identical_and_of_far_sets():
    f = np.random.default_rng(5).normal(size=(60, 5))
    assert metrics.precision_recall(f, f, k=3) == (1.0, 1.0)
    assert metrics.precision_recall(f, f + 100.0, k=3) == (0.0, 0.0)
    # fakes all at one real point: all inside the real manifold; recall by the fakes' zero radii
    p, r = metrics.precision_recall(f, np.tile(f[:1], (10, 1)), k=3)
    assert p == 1.0 and r == pytest.approx(1 / 60)


def test_average_pool_leaves_padding_out_of_the_count():
    x = jnp.ones((2, 5, 5))
    assert np.allclose(_pool(x, "avg", 1, 1), 1.0)
    assert _pool(x, "max", 2, 0).shape == (2, 2, 2)


def test_inception_shapes_at_299():
    model = eqx.filter_eval_shape(lambda: metrics.InceptionV3(key=jr.key(0)))
    pool, logits = eqx.filter_eval_shape(model, jnp.zeros((3, 299, 299)))
    assert pool.shape == (2048,) and logits.shape == (1008,)
    with pytest.raises(ValueError, match="75"):
        eqx.filter_eval_shape(model, jnp.zeros((3, 64, 64)))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / metrics.WEIGHTS_FILE
    state = random_inception_state(0)
    write_state_dict(path, state)
    return path, state


def test_state_dict_round_trip_with_offsets_strides_and_both_formats(tmp_path):
    rng = np.random.default_rng(6)
    flat = rng.normal(size=40)
    state = {
        "plain": rng.normal(size=(2, 3)).astype(np.float32),
        "view": (flat, 3, (3, 4), (1, 3)),  # a transposed view at an offset
        "count": np.arange(4, dtype=np.int64),
    }
    expected = np.lib.stride_tricks.as_strided(flat[3:], (3, 4), (8, 24))
    for legacy in (False, True):
        write_state_dict(tmp_path / "s.pth", state, legacy=legacy)
        got = metrics.read_state_dict(tmp_path / "s.pth")
        assert list(got) == ["plain", "view", "count"]
        assert got["plain"].dtype == np.float32 and np.array_equal(got["plain"], state["plain"])
        assert got["view"].dtype == np.float64 and np.array_equal(got["view"], expected)
        assert np.array_equal(got["count"], state["count"])


def test_state_dict_reader_refuses_other_objects(tmp_path):
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(print, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="not part of a state dict"):
        metrics.read_state_dict(path)


def test_load_inception_maps_every_name_and_folds_batch_norm(weights):
    path, state = weights
    model = metrics.load_inception(path)
    conv = model.blocks["Mixed_6b"].convs["branch7x7_2"]
    p = "Mixed_6b.branch7x7_2"
    assert np.array_equal(conv.conv.weight, state[f"{p}.conv.weight"])
    scale = state[f"{p}.bn.weight"] / np.sqrt(state[f"{p}.bn.running_var"].astype(float) + 1e-3)
    shift = state[f"{p}.bn.bias"] - state[f"{p}.bn.running_mean"] * scale
    assert np.allclose(conv.scale, scale, rtol=1e-6) and np.allclose(conv.shift, shift, atol=1e-6)
    assert np.array_equal(model.fc.weight, state["fc.weight"])
    # the first convolution and its batch norm against a direct computation
    x = np.random.default_rng(7).uniform(size=(3, 9, 9))
    s = "Conv2d_1a_3x3"
    w = state[f"{s}.conv.weight"].astype(float)
    patches = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2]
    y = np.einsum("chwij,ocij->ohw", patches, w)
    sc = state[f"{s}.bn.weight"] / np.sqrt(state[f"{s}.bn.running_var"] + 1e-3)
    y = np.maximum(
        y * sc[:, None, None]
        + (state[f"{s}.bn.bias"] - state[f"{s}.bn.running_mean"] * sc)[:, None, None],
        0,
    )
    assert np.allclose(model.stem[s](jnp.asarray(x, jnp.float32)), y, atol=1e-5)


def test_load_inception_refuses_missing_extra_misshaped_and_absent(tmp_path, weights):
    _, state = weights
    cases = {
        "missing": {k: v for k, v in state.items() if k != "Mixed_5b.branch1x1.bn.bias"},
        "unexpected": {**state, "AuxLogits.fc.weight": np.zeros((2, 2), np.float32)},
        "has shape": {**state, "fc.bias": np.zeros(1000, np.float32)},
    }
    for message, bad in cases.items():
        write_state_dict(tmp_path / "bad.pth", bad)
        with pytest.raises(ValueError, match=message):
            metrics.load_inception(tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="nothing is downloaded") as e:
        metrics.load_inception(tmp_path / "absent.pth")
    assert metrics.WEIGHTS_URL in str(e.value)


def test_inception_features_of_loaded_random_weights(weights):
    model = metrics.load_inception(weights[0])
    images = np.random.default_rng(8).uniform(size=(3, 1, 28, 28))
    feats, logits = metrics.inception_features(model, images, batch_size=2)
    assert feats.shape == (3, 2048) and logits.shape == (3, 1008)
    assert np.isfinite(feats).all() and (feats >= 0).all()  # a mean of ReLUs
    # a batch of one gives the same numbers (padding does not leak between examples)
    one, _ = metrics.inception_features(model, images[1:2], batch_size=2)
    assert np.allclose(one[0], feats[1], rtol=1e-4, atol=1e-6)


def test_quantize_rounds_and_clips():
    x = np.array([-0.2, 0.0, 0.5 / 255, 0.502, 1.0, 1.3]).reshape(1, 1, 2, 3)
    assert metrics.quantize(x).ravel().tolist() == [0, 0, 0, 128, 255, 255]


def test_clean_resize_keeps_constants_and_repeats_gray():
    x = np.full((2, 1, 28, 28), 77, np.uint8)
    out = metrics.clean_resize(x)
    assert out.shape == (2, 3, 299, 299) and out.dtype == np.float32
    assert np.allclose(out, 77.0, atol=1e-3)
    ramp = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))[None, None]
    big = metrics.clean_resize(np.concatenate([ramp] * 3, axis=1))
    assert np.allclose(big[0, 0], big[0, 2]) and 0 <= big.min() and big.max() <= 255
    with pytest.raises(ValueError, match="uint8"):
        metrics.clean_resize(np.zeros((1, 1, 8, 8)))


def _cli():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import main  # noqa: PLC0415

    return main


TINY = [
    *("--model.channels", "8", "--model.channel_mults", "1,2", "--model.attention_levels", "1"),
    *("--model.num_groups", "4", "--train.steps", "2", "--train.batch_size", "16"),
    *("--train.log_every", "1", "--train.eval_bound", "false"),
]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    args = ["--experiment", "digits_vp", "--out", str(out), "--mode", "train", *TINY]
    assert _cli().main(args) == 0
    (run,) = sorted((out / "digits_vp").iterdir())
    return run


def test_quality_mode_without_the_weights_file_refuses_before_any_work(tmp_path, capsys):
    absent = tmp_path / "absent.pth"
    args = ["--experiment", "digits_vp", "--out", str(tmp_path), "--mode", "quality"]
    with pytest.raises(SystemExit) as e:
        _cli().main([*args, "--quality.inception", str(absent)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert str(absent) in err and metrics.WEIGHTS_URL in err and "nothing is downloaded" in err
    assert list(tmp_path.iterdir()) == []
    # no path at all: the same message, from the run's configuration
    import sgm.experiment  # noqa: PLC0415
    from experiments import EXPERIMENTS  # noqa: PLC0415

    with pytest.raises(ValueError, match="needs --quality.inception PATH"):
        sgm.experiment.phases.check_quality(EXPERIMENTS["digits_vp"])


@pytest.mark.slow  # 22 s on 2 cores: a 299x299 Inception compiled and run on 16 images
def test_quality_mode_end_to_end_with_random_weights(digits_run, weights):
    args = ["--run-dir", str(digits_run), "--mode", "quality"]
    args += ["--quality.inception", str(weights[0]), "--quality.n_samples", "8"]
    args += ["--quality.batch_size", "8", "--quality.sampler", "em", "--quality.steps", "4"]
    args += ["--quality.kid_subsets", "5", "--quality.is_splits", "2"]
    assert _cli().main(args) == 0
    q = json.loads((digits_run / "metrics.json").read_text())["quality"]
    assert np.isfinite(q["fid"]) and q["fid"] >= -1e-6
    assert q["inception_score"]["mean"] >= 1.0 - 1e-9 and 0 <= q["precision"] <= 1
    p = q["protocol"]
    assert p["n_samples"] == 8 and p["n_reference"] == 8 and p["sampler"] == "em"
    assert p["sampler_settings"]["steps"] == 4 and p["nfe"] > 4  # and the denoising step
    assert p["weights"] == metrics.WEIGHTS_FILE
    assert p["weights_sha256"] == metrics.sha256_of(weights[0]) and not p["reference_cached"]
    (cached,) = (digits_run / "quality").iterdir()
    assert cached.name == "reference_digits_train_8.npz"


@pytest.mark.slow
def test_quality_mode_reuses_the_cached_reference(digits_run, weights):
    args = ["--run-dir", str(digits_run), "--mode", "quality"]
    args += ["--quality.inception", str(weights[0]), "--quality.n_samples", "8"]
    args += ["--quality.batch_size", "8", "--quality.sampler", "em", "--quality.steps", "4"]
    args += ["--quality.kid_subsets", "5", "--quality.is_splits", "2"]
    assert _cli().main(args) == 0
    q = json.loads((digits_run / "metrics.json").read_text())["quality"]
    assert _cli().main(args) == 0
    again = json.loads((digits_run / "metrics.json").read_text())["quality"]
    assert again["protocol"]["reference_cached"] and again["fid"] == pytest.approx(q["fid"])
