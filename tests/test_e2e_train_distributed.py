"""End to end: ``mgr-batch train`` with two Ray Train workers (DDP over gloo on CPU), then ``tag`` with the result;
and the clip rows the workers read, fixed-shape Arrow tensors."""

from __future__ import annotations

import functools
import operator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import torch
from audio_factory import write_noise, write_tone, write_tones_and_noise
from ray.data.expressions import col
from ray.data.extensions import ArrowPythonObjectType, ArrowTensorType, ArrowTensorTypeV2, ArrowVariableShapedTensorType

from mgr_batch.cli import build_parser, main, train_config
from mgr_batch.evaluation import datasets
from mgr_batch.execution.train import clip_datasets, featurized_songs, training_spec
from mgr_batch.models import checkpoint
from mgr_batch.stages.training import clip_key, weights_digest

pytestmark = pytest.mark.usefixtures("ray_cluster")

TINY = """
features: {n_mels: 32, hop_length: 1024}
model: {name: cnn, params: {channels: [4, 8]}}
optim: {batch_size: 4}
"""


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """4 tones and 4 noises of 6 s (two 3 s clips each); 3 of each to train on, 1 of each to score."""
    root = write_tones_and_noise(tmp_path_factory.mktemp("labelled"), seconds=6.0, noise_ext="ogg")
    (root / "tiny.yaml").write_text(TINY)
    return root


def test_two_workers_train_on_disjoint_shards_end_with_the_same_weights_and_the_checkpoint_tags(labelled, tmp_path):
    ckpt = tmp_path / "ckpt"
    args = ["train", str(labelled), "--output", str(ckpt), "--config", str(labelled / "tiny.yaml")]
    args += ["--train-list", str(labelled / "train.txt"), "--valid-list", str(labelled / "valid.txt")]
    args += ["--epochs", "2", "--num-workers", "2", "--storage-path", str(tmp_path / "runs")]
    assert main(args) == 0
    spec = checkpoint.load_spec(str(ckpt))
    assert spec.train["num_workers"] == 2
    assert spec.train["n_clips"] == {"train": 12, "valid": 4}

    out = tmp_path / "tags"
    assert main(["tag", str(labelled), "--output", str(out), "--model", str(ckpt)]) == 0
    songs = pq.read_table(out / "songs").to_pandas()
    assert len(songs) == 8
    assert (songs["model_id"] == spec.model_id).all() and set(songs["genre"]) <= {"noise", "tones"}

    # Every training clip's key, from the songs' ids and clip counts that `tag` wrote (same fixed 3 s clips).
    train_stems = {Path(line).stem for line in (labelled / "train.txt").read_text().split()}
    train_songs = songs[[Path(p).stem in train_stems for p in songs["path"]]]
    keys = [
        clip_key(s, i) for s, n in zip(train_songs["song_id"], train_songs["n_clips"], strict=True) for i in range(n)
    ]
    assert len(keys) == 12
    everything = f"{functools.reduce(operator.xor, keys):016x}"

    history = spec.train["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    for h in history:
        workers = h["workers"]
        assert [w["rank"] for w in workers] == [0, 1]
        # Each worker had a part of the clips, the parts disjoint and together the whole training set:
        # their counts add up to it and their XOR digests XOR to the set's.
        assert all(w["clips"] > 0 and w["songs"] > 0 for w in workers)
        assert sum(w["clips"] for w in workers) == 12
        assert workers[0]["clips_digest"] != workers[1]["clips_digest"]
        assert f"{int(workers[0]['clips_digest'], 16) ^ int(workers[1]['clips_digest'], 16):016x}" == everything
        # DDP kept the two replicas' parameters bit-identical.
        assert workers[0]["weights"] == workers[1]["weights"]
    assert history[0]["workers"][0]["weights"] != history[1]["workers"][0]["weights"]  # and they did train

    # The checkpoint holds the weights both workers ended its epoch with.
    model = spec.build()
    model.load_state_dict(torch.load(ckpt / "model.pt", weights_only=True))
    assert weights_digest(model) == history[spec.train["best_epoch"] - 1]["workers"][0]["weights"]


def _column_types(ds: ray.data.Dataset, column: str) -> list:
    """The Arrow type of ``column`` in every block of ``ds`` (the dataset's schema shows only one of them)."""
    return [ray.get(ref).schema.field(column).type for ref in ds.to_arrow_refs()]


def test_training_rows_are_fixed_shape_tensors(labelled, tmp_path):
    """Songs of three lengths and a broken file: the per-song ``features`` are ragged, yet Arrow tensors (not
    pickled Python objects), and the clip rows the workers read are fixed-shape tensors in every block."""
    data = tmp_path / "data"
    for g in ("tones", "noise"):
        for p in (labelled / g).iterdir():
            (data / g).mkdir(parents=True, exist_ok=True)
            (data / g / p.name).symlink_to(p)
    write_tone(data / "tones" / "tones.00009.wav", seconds=9.5, freq=250.0)
    write_noise(data / "noise" / "noise.00009.ogg", seconds=3.5, seed=9)
    (data / "noise" / "noise.00010.wav").write_bytes(b"RIFF, but no audio")
    argv = ["train", str(data), "-o", str(tmp_path / "c"), "--config", str(labelled / "tiny.yaml")]
    cfg = train_config(build_parser().parse_args(argv))
    files = datasets.labelled(cfg.data, None)
    files["split"] = ["valid" if "00003" in p else "train" for p in files["path"]]
    spec = training_spec(files, cfg)
    songs = featurized_songs(files, spec, cfg)
    assert songs.count() == 11 and len(songs.filter(expr=col("status") != "ok").take_all()) == 1
    per_song = _column_types(songs, "features")
    assert per_song and not any(isinstance(t, ArrowPythonObjectType) for t in per_song)
    assert all(isinstance(t, (ArrowTensorType, ArrowTensorTypeV2, ArrowVariableShapedTensorType)) for t in per_song)

    parts = clip_datasets(songs, spec, splits=["train", "valid"], seed=0)
    for ds in parts.values():
        types = _column_types(ds, "features")
        assert types and all(isinstance(t, (ArrowTensorType, ArrowTensorTypeV2)) for t in types), types
        assert {tuple(t.shape) for t in types} == {spec.input_shape}
    assert sum(ds.count() for ds in parts.values()) == 8 * 2 + 3 + 1  # 6 s songs: 2 clips; 9.5 s: 3; 3.5 s: 1
    assert {c: str(parts["train"].schema().base_schema.field(c).type) for c in ("label", "clip_key", "song_key")} == {
        "label": "int64",
        "clip_key": "int64",
        "song_key": "int64",
    }
