"""The likelihood phase in chunks: finished chunks are kept, an interrupted evaluation
continues with them and gives the numbers of an uninterrupted one, a changed protocol starts
afresh, and a damaged chunk file is computed again."""

import json

import numpy as np
import pytest

import sgm.experiment
from sgm.experiment import phases
from sgm.experiment._chunks import ChunkStore
from sgm.experiment._run import Run

TINY = {
    "digits_vp": {"model.channels": "8", "model.channel_mults": "1,2", "model.num_groups": "4"},
    "moons_vp": {"model.width": "16", "model.depth": "1", "data.n_test": "16"},
}
_CACHE = {}


def tiny_run(name, path, **eval_settings):
    """An untrained model of a tiny `name` (its values are as good as a trained one's for
    comparing two evaluations), its data, and a `Run` at `path`."""
    from experiments import EXPERIMENTS

    settings = {**TINY[name], **{f"eval.{k}": str(v) for k, v in eval_settings.items()}}
    cfg = sgm.experiment.override(EXPERIMENTS[name], settings)
    if name not in _CACHE:
        ds = cfg.load_data()
        model = cfg.build_model(ds.data_shape, num_classes=ds.num_classes)
        _CACHE[name] = ds, model
    ds, model = _CACHE[name]
    return cfg, ds, Run(path, cfg, model.sde, model, tuple(ds.data_shape), ds.num_classes)


def evaluate(name, path, **eval_settings):
    cfg, ds, run = tiny_run(name, path, **eval_settings)
    metrics = {}
    phases.likelihood(cfg, ds, run, metrics)
    (out,) = metrics.values()
    out.pop("seconds")
    return out


def interrupt_after(monkeypatch, k):
    """Stops the chunk loop with a KeyboardInterrupt once `k` chunks are stored."""
    save, saved = ChunkStore.save, []

    def stop_after_k(self, *args, **kwargs):
        save(self, *args, **kwargs)
        saved.append(args[0])
        if len(saved) == k:
            raise KeyboardInterrupt

    monkeypatch.setattr(ChunkStore, "save", stop_after_k)


@pytest.mark.parametrize("name", ["digits_vp", "moons_vp"])
def test_an_interrupted_evaluation_continues_to_the_uninterrupted_numbers(
    name, tmp_path, monkeypatch, capsys
):
    """Bits/dim of 8x8 digits (class-conditional, by the null label) and nats/dim of 2-D
    moons: 6 examples in chunks of 2, stopped after 2 chunks, then continued: 2 reused, 1
    computed, and the metrics (mean, stderr, protocol) equal those of one uninterrupted run."""
    settings = dict(n_images=6, chunk_size=2, batch_size=2)
    whole = evaluate(name, tmp_path / "whole", **settings)
    with monkeypatch.context() as m:
        interrupt_after(m, 2)
        with pytest.raises(KeyboardInterrupt):
            evaluate(name, tmp_path / "run", **settings)
    (folder,) = (tmp_path / "run" / "likelihood").iterdir()
    assert sorted(p.name for p in folder.glob("chunk_*")) == ["chunk_00000.npz", "chunk_00001.npz"]
    capsys.readouterr()
    again = evaluate(name, tmp_path / "run", **settings)
    assert "reusing 2 of 3 chunks" in capsys.readouterr().out
    assert again.pop("chunks") == {"size": 2, "count": 3, "reused": 2}
    whole.pop("chunks")
    assert again == whole
    assert whole["n"] == 6 and np.isfinite(whole["mean"])
    if name == "digits_vp":
        assert whole["protocol"]["n_images"] == 6 and whole["protocol"]["nfe_max"] > 0
    # fewer examples: the first chunks are the same ones, nothing is computed
    fewer = evaluate(name, tmp_path / "run", **{**settings, "n_images": 4})
    assert fewer["chunks"]["reused"] == 2


def test_a_changed_protocol_or_a_damaged_chunk_is_computed_again(tmp_path, capsys):
    settings = dict(n_images=4, chunk_size=2, batch_size=2)
    first = evaluate("moons_vp", tmp_path, **settings)
    (folder,) = (tmp_path / "likelihood").iterdir()
    # another batch size: another protocol, another folder, nothing reused
    other = evaluate("moons_vp", tmp_path, **{**settings, "batch_size": 4})
    assert other["chunks"]["reused"] == 0
    assert len(list((tmp_path / "likelihood").iterdir())) == 2
    # a chunk cut short (a copy interrupted part way) is ignored with a warning
    chunk = folder / "chunk_00001.npz"
    chunk.write_bytes(chunk.read_bytes()[:100])
    capsys.readouterr()
    again = evaluate("moons_vp", tmp_path, **settings)
    err = capsys.readouterr().err
    assert "chunk_00001.npz cannot be read" in err and "computing it again" in err
    assert again.pop("chunks")["reused"] == 1
    first.pop("chunks")
    assert again == first
    # a chunk of other examples (as after the data changed) is not taken for this one
    chunk = folder / "chunk_00000.npz"
    with np.load(chunk) as f:
        arrays = dict(f)
    meta = json.loads(str(arrays.pop("meta")))
    np.savez(chunk, meta=np.asarray(json.dumps({**meta, "inputs": "other"})), **arrays)
    capsys.readouterr()
    assert evaluate("moons_vp", tmp_path, **settings)["chunks"]["reused"] == 1
    assert "chunk_00000.npz does not match this evaluation (inputs)" in capsys.readouterr().err
