"""CIFAR-10: random horizontal flips in training, the tfds data (mock data, an offline
data_dir and its errors), and the two experiments of Song et al. (2021) through main.py."""

import json
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import sgm
import sgm.experiment
from sgm._training._batches import Batches
from sgm.distributed import global_mesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import main as cli  # noqa: E402
from experiments import EXPERIMENTS  # noqa: E402

SEED = [3, 4]  # the raw data of a training key
SDE = sgm.VPSDE()


class FlatNet(eqx.Module):
    """A two-layer network on small flattened images, for the trainer's mechanics."""

    mlp: eqx.nn.MLP
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, shape, *, key):
        dim = int(np.prod(shape))
        self.mlp = eqx.nn.MLP(dim + 1, dim, 32, 2, activation=jax.nn.silu, key=key)
        self.shape = tuple(shape)

    def __call__(self, c, x, *, y=None, key=None):
        return self.mlp(jnp.concatenate([x.ravel(), jnp.atleast_1d(c)])).reshape(self.shape)


def images(n=64, shape=(2, 3, 5), seed=0) -> np.ndarray:
    """Images with no left-right symmetry (so a flip always shows)."""
    return np.random.default_rng(seed).uniform(-1, 1, (n, *shape)).astype(np.float32)


def params(model):
    return jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))


def test_flips_are_fixed_by_the_step_and_mirror_about_half_the_images():
    x = images()
    cond = images(seed=1)  # a conditioning map: mirrored with its image
    labels = np.arange(len(x), dtype=np.int32)
    on = Batches(x, cond, 16, SEED, global_mesh(), random_flip=True)
    with_labels = Batches(x, labels, 16, SEED, global_mesh(), random_flip=True)
    flips = np.stack([on.flips(s) for s in range(200)])
    np.testing.assert_array_equal(flips, np.stack([on.flips(s) for s in range(200)]))
    # 3200 fair coins: the fraction within 5.6 standard deviations of 1/2
    assert abs(flips.mean() - 0.5) < 0.05
    assert 0 < flips[0].sum() < 16 and not np.array_equal(flips[0], flips[1])
    for s in (0, 7):
        idx, f = on.indices(s), on.flips(s)
        bx, by = (np.asarray(a) for a in on(s))
        np.testing.assert_array_equal(bx[f], x[idx][f][..., ::-1])
        np.testing.assert_array_equal(bx[~f], x[idx][~f])
        np.testing.assert_array_equal(by[f], cond[idx][f][..., ::-1])
        np.testing.assert_array_equal(by[~f], cond[idx][~f])
        _, y = with_labels(s)
        np.testing.assert_array_equal(np.asarray(y), labels[idx])  # labels are not flipped
    off = Batches(x, None, 16, SEED, global_mesh())
    for s in (0, 7):
        np.testing.assert_array_equal(np.asarray(off(s)[0]), x[off.indices(s)])


def _train(data, steps, *, random_flip, checkpoints=None):
    model = sgm.ScoreModel(FlatNet(data.shape[1:], key=jr.key(0)), SDE)
    return sgm.train(
        model,
        SDE,
        data,
        optax.adam(1e-2),
        steps=steps,
        key=jr.key(1),
        batch_size=16,
        ema_decay=0.0,
        random_flip=random_flip,
        checkpoints=checkpoints,
        monitor=sgm.Monitor(progress=False, every=2),
    )


def test_training_with_flips_resumes_exactly_and_leaves_symmetric_images_alone(tmp_path):
    x = images(48)
    full = _train(x, 6, random_flip=True)
    _train(x, 3, random_flip=True, checkpoints=sgm.Checkpoints(tmp_path, every=3))
    resumed = _train(
        x, 6, random_flip=True, checkpoints=sgm.Checkpoints(tmp_path, every=3, resume=True)
    )
    for a, b in zip(params(full), params(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    unflipped = _train(x, 6, random_flip=False)
    assert any(
        not np.array_equal(a, b) for a, b in zip(params(full), params(unflipped), strict=True)
    )
    # images equal to their mirror: flipping them changes nothing, not even a random stream
    symmetric = np.concatenate([x[..., :2], x[..., 2:3], x[..., :2][..., ::-1]], axis=-1)
    a, b = _train(symmetric, 4, random_flip=True), _train(symmetric, 4, random_flip=False)
    for u, v in zip(params(a), params(b), strict=True):
        np.testing.assert_array_equal(u, v)


def test_flips_need_images():
    toy = np.asarray(jr.normal(jr.key(0), (32, 2)), np.float32)
    model = sgm.ScoreModel(FlatNet((2,), key=jr.key(0)), SDE)
    with pytest.raises(ValueError, match=r"random_flip mirrors images \(C, H, W\).*\(2,\)"):
        sgm.train(model, SDE, toy, steps=1, key=jr.key(0), batch_size=16, random_flip=True)
    with pytest.raises(ValueError, match="random_flip must be True or False"):
        sgm.train(model, SDE, toy, steps=1, key=jr.key(0), batch_size=16, random_flip="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="train.random_flip must be true or false"):
        sgm.experiment.Train(steps=1, random_flip=1)  # type: ignore[arg-type]


def test_flips_on_non_image_experiments_are_refused_before_a_run_exists(tmp_path, capsys):
    args = ["--experiment", "moons_vp", "--out", str(tmp_path), "--train.random_flip", "true"]
    with pytest.raises(SystemExit):
        cli.main(args)
    assert "train.random_flip mirrors images" in capsys.readouterr().err
    assert not (tmp_path / "moons_vp").exists()


def test_cifar10_loads_through_the_registry_from_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        ds = sgm.experiment.Data("cifar10").load(key=jr.key(0))
        part = sgm.data.load("cifar10", train_rows=(1, 2, None))
    assert ds.train_int is not None and part.train_int is not None
    assert ds.data_shape == (3, 32, 32) and ds.num_classes == 10 and ds.num_bits == 8
    assert ds.train.shape == (12, 3, 32, 32) and ds.test.shape == (12, 3, 32, 32)
    assert ds.train_int.dtype == np.uint8
    np.testing.assert_allclose(ds.train, ds.train_int / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(part.train_int, ds.train_int[1::2])


def _prepared(root: Path, files=("train", "test"), kind="array_record") -> Path:
    folder = root / "cifar10" / "3.0.2"
    folder.mkdir(parents=True)
    (folder / "dataset_info.json").write_text("{}")
    for split in files:
        (folder / f"cifar10-{split}.{kind}-00000-of-00001").write_bytes(b"")
    return folder


def test_a_tfds_data_dir_is_read_offline_or_named_in_a_one_line_error(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as e:
        sgm.data.load("cifar10", data_dir=missing)
    message = str(e.value)
    assert "\n" not in message and str(missing) in message and "does not exist" in message
    assert f"{missing}/cifar10/3.0.2/ with dataset_info.json" in message
    assert "cifar10-train.array_record-* and cifar10-test.array_record-* files" in message
    assert "sgm[prepare]" in message and "download_and_prepare" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="'cifar10' 3.0.2 is not prepared in .*empty"):
        sgm.data.load("cifar10", data_dir=tmp_path / "empty")
    _prepared(tmp_path / "tfrecord", kind="tfrecord")
    with pytest.raises(
        RuntimeError, match=r"no cifar10-train.array_record-\* files \(it holds tfr"
    ):
        sgm.data.load("cifar10", data_dir=tmp_path / "tfrecord")
    _prepared(tmp_path / "half", files=("train",))
    with pytest.raises(RuntimeError, match="no cifar10-test.array_record"):
        sgm.data.load("cifar10", data_dir=tmp_path / "half")
    with pytest.raises(ValueError, match="--data-dir applies to mnist .*, not 'digits'"):
        sgm.data.load("digits", data_dir=tmp_path)
    # a prepared data_dir goes to tfds as it is, never with a download
    _prepared(tmp_path / "good")
    calls = []
    example = {"image": np.zeros((32, 32, 3), np.uint8), "label": 3}

    def data_source(name, *, split, data_dir, download):
        calls.append((name, split, data_dir, download))
        return [example] * 4

    monkeypatch.setattr(tfds, "data_source", data_source)
    ds = sgm.data.load("cifar10", data_dir=tmp_path / "good")
    assert ds.train.shape == (4, 3, 32, 32) and ds.test_labels is not None
    assert ds.test_labels.tolist() == [3] * 4
    good = tmp_path / "good"
    assert calls == [("cifar10", "train", good, False), ("cifar10", "test", good, False)]


def test_the_experiments_carry_song_et_al_s_settings():
    """DDPM++ cont. (VP) and NCSN++ cont. (VE) on CIFAR-10 (Song et al. 2021, appendix H;
    configs/vp/cifar10_ddpmpp_continuous.py, configs/ve/cifar10_ncsnpp_continuous.py)."""
    vp, ve = EXPERIMENTS["cifar10_vp"], EXPERIMENTS["cifar10_ve"]
    for exp, ema in ((vp, 0.9999), (ve, 0.999)):
        arch = exp.net.resolved()
        assert (arch["channels"], arch["channel_mults"], arch["num_res_blocks"]) == (
            128,
            (1, 2, 2, 2),
            4,
        )
        # attention at 16x16: the level after one halving of 32
        assert [32 // 2**lvl for lvl in arch["attention_levels"]] == [16]
        assert arch["dropout"] == 0.1 and arch["num_groups"] == 32
        assert isinstance(exp.net.preconditioning, sgm.NoisePrediction)
        assert exp.train.ema_decay == ema and exp.train.random_flip
        assert (exp.train.batch_size, exp.train.steps) == (128, 1_300_000)
        assert (exp.optimizer.lr, exp.optimizer.warmup, exp.optimizer.grad_clip) == (2e-4, 5000, 1)
        assert not exp.optimizer.decay
        assert (exp.loss.weighting, exp.loss.time_density, exp.loss.eps) == (
            "sigma2",
            "uniform",
            1e-5,
        )
        assert exp.data.name == "cifar10" and exp.data.n_train is None and exp.data.n_test is None
        assert exp.eval.n_images == 10_000 and exp.eval.n_dequant == 1
        assert -(-exp.eval.n_images // exp.eval.chunk_size) == 40  # chunks, each kept
        assert "not run here" in exp.budget and "1.3M steps" in exp.budget
    assert (vp.sde.beta_min, vp.sde.beta_max) == (0.1, 20.0) and vp.loss.reduce == "mean"
    # their sigma 0.01 .. 50 for data in [0, 1] is 0.02 .. 100 for sgm's [-1, 1]
    assert (ve.sde.sigma_min, ve.sde.sigma_max) == (0.02, 100.0) and ve.loss.reduce == "sum"
    vp_pc, ve_pc = vp.sample.samplers["pc"], ve.sample.samplers["pc"]
    assert (vp_pc.steps, vp_pc.predictor, vp_pc.corrector_steps) == (1000, "euler_maruyama", 0)
    assert (ve_pc.steps, ve_pc.predictor, ve_pc.corrector_steps) == (1000, "reverse_diffusion", 1)
    assert ve_pc.snr == 0.16 and ve_pc.denoise and vp_pc.denoise


TINY = [
    "--model.channels",
    "8",
    "--model.channel_mults",
    "1,2",
    "--model.num_res_blocks",
    "1",
    "--model.attention_levels",
    "1",
    "--model.num_groups",
    "4",
    "--train.steps",
    "2",
    "--train.batch_size",
    "8",
    "--train.log_every",
    "1",
    "--train.eval_bound",
    "false",
    "--sample.samplers",
    "em",
    "--sample.steps",
    "3",
    "--sample.n_samples",
    "2",
    "--eval.n_images",
    "2",
    "--eval.batch_size",
    "2",
]


@pytest.mark.slow  # 53 s on 2 shared cores with a cold compilation cache, 27 s warm
def test_cifar10_vp_end_to_end_on_mock_data(tmp_path):
    """main.py --experiment cifar10_vp, tiny, on tfds mock data: trains with flips, samples,
    and evaluates test bits/dim through the chunked likelihood phase."""
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=8):
        assert cli.main(["--experiment", "cifar10_vp", "--out", str(tmp_path), *TINY]) == 0
    (run,) = sorted((tmp_path / "cifar10_vp").iterdir())
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["random_flip"] is True
    metrics = json.loads((run / "metrics.json").read_text())
    bpd = metrics["test_bits_per_dim"]
    assert bpd["n"] == 2 and bpd["chunks"]["count"] == 1 and np.isfinite(bpd["mean"])
    assert metrics["samplers"]["em"]["finite"]
    assert sgm.experiment.load_run(run).data_shape == (3, 32, 32)


def test_a_missing_cifar10_data_dir_is_a_clear_error_and_leaves_no_run(tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["--experiment", "cifar10_ve", "--data-dir", str(tmp_path / "no"), "--out", str(out)]
    with pytest.raises(SystemExit):
        cli.main(args)
    err = capsys.readouterr().err
    assert "cannot load the data of cifar10_ve" in err and "cifar10/3.0.2/" in err
    assert "dataset_info.json" in err and not out.exists()
