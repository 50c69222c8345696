"""End to end: ``mgr-batch train`` through Ray Train on a real local Ray, then ``tag`` with the result."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from audio_factory import write_tones_and_noise

from mgr_batch.cli import main
from mgr_batch.models import checkpoint

pytestmark = pytest.mark.usefixtures("ray_cluster")

TINY = """
features: {n_mels: 32, hop_length: 1024}
model: {name: cnn, params: {channels: [4, 8]}}
optim: {batch_size: 8}
"""


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    root = write_tones_and_noise(tmp_path_factory.mktemp("labelled"), seconds=6.0, noise_ext="ogg")
    (root / "tiny.yaml").write_text(TINY)
    return root


def test_train_then_tag_with_the_checkpoint(labelled, tmp_path):
    ckpt = tmp_path / "ckpt"
    rc = main(
        [
            "train",
            str(labelled),
            "--output",
            str(ckpt),
            "--config",
            str(labelled / "tiny.yaml"),
            "--train-list",
            str(labelled / "train.txt"),
            "--valid-list",
            str(labelled / "valid.txt"),
            "--epochs",
            "1",
            "--storage-path",
            str(tmp_path / "runs"),
        ]
    )
    assert rc == 0
    spec = checkpoint.load_spec(str(ckpt))
    assert spec.genres == ("noise", "tones")
    assert spec.features.n_mels == 32 and spec.model.params == {"channels": [4, 8]}
    assert spec.train["n_songs"] == {"train": 6, "valid": 2}
    assert spec.train["n_clips"] == {"train": 12, "valid": 4}
    assert len(spec.train["data_manifest_hash"]) == 16
    assert {"valid_song_accuracy", "valid_clip_accuracy", "train_loss"} <= set(spec.metrics)
    assert spec.model_id.startswith("cnn-")
    assert set(torch.load(ckpt / "model.pt", weights_only=True)) == set(spec.build().state_dict())

    out = tmp_path / "tags"
    assert main(["tag", str(labelled), "--output", str(out), "--model", str(ckpt)]) == 0
    songs = pq.read_table(out / "songs").to_pandas()
    assert len(songs) == 8
    assert set(songs["genre"]) <= {"noise", "tones"}
    assert (songs["model_id"] == spec.model_id).all()
    assert json.loads((out / "run.json").read_text())["model_id"] == spec.model_id


def test_split_lists_that_overlap_are_refused(labelled, tmp_path, capsys):
    rc = main(
        [
            "train",
            str(labelled),
            "--output",
            str(tmp_path / "c"),
            "--config",
            str(labelled / "tiny.yaml"),
            "--train-list",
            str(labelled / "train.txt"),
            "--valid-list",
            str(labelled / "train.txt"),
        ]
    )
    assert rc == 2
    assert "both" in capsys.readouterr().err


def test_wiring_of_a_classic_model_on_pipeline_features_train_then_tag(labelled, tmp_path):
    """logreg on the 58-value vector that Ray Data computed; grid search by song; a skops checkpoint.

    A wiring check, not an accuracy measure: it tags the songs it trained and chose on, so every genre right
    shows the labels come back through train, checkpoint and tag in their order."""
    ckpt = tmp_path / "logreg"
    rc = main(
        [
            "train",
            str(labelled),
            "--output",
            str(ckpt),
            "--model-type",
            "logreg",
            "--train-list",
            str(labelled / "train.txt"),
            "--valid-list",
            str(labelled / "valid.txt"),
        ]
    )
    assert rc == 0
    spec = checkpoint.load_spec(str(ckpt))
    assert spec.family == "classic" and spec.model_id.startswith("logreg-")
    assert (spec.train["preset"], spec.features.kind, spec.clips.clip_seconds, spec.input_shape) == (
        "classic58_30s",
        "classic58",
        30.0,
        (58, 1),
    )
    assert (ckpt / "model.skops").is_file() and not (ckpt / "model.pt").exists()
    assert spec.train["n_clips"] == {"train": 6, "valid": 2} and "C" in spec.train["best_params"]
    assert spec.metrics["valid_song_accuracy"] == 1.0  # tones and noise differ in every one of the 58 values

    out = tmp_path / "tags"
    assert main(["tag", str(labelled), "--output", str(out), "--model", str(ckpt)]) == 0
    songs = pq.read_table(out / "songs").to_pandas()
    assert len(songs) == 8 and (songs["model_id"] == spec.model_id).all()
    assert (songs["genre"] == [Path(p).parent.name for p in songs["path"]]).all()


def test_a_model_type_brings_its_studys_settings(labelled, tmp_path):
    """mlp trains on the 4 kHz spectrogram of 5 s clips (its study's preset) unless told otherwise."""
    from mgr_batch.cli import build_parser, train_config
    from mgr_batch.evaluation import datasets
    from mgr_batch.execution.train import training_spec

    cfg = train_config(build_parser().parse_args(["train", str(labelled), "-o", str(tmp_path), "--model-type", "mlp"]))
    spec = training_spec(datasets.labelled(cfg.data, None), cfg)
    assert (cfg.preset, spec.audio.sr, spec.clips.clip_seconds, spec.input_shape) == ("stft4k", 4000, 5.0, (513, 22))
    told = ["--features", "logmel", "--hop-seconds", "2.5"]
    cfg = train_config(
        build_parser().parse_args(["train", str(labelled), "-o", str(tmp_path), "--model-type", "mlp", *told])
    )
    assert (cfg.preset, cfg.audio.sr, cfg.clips.clip_seconds, cfg.clips.hop_seconds) == ("logmel", 22050, 3.0, 2.5)


def test_crops_schedules_and_transfer(labelled, tmp_path):
    common = [
        "--train-list",
        str(labelled / "train.txt"),
        "--valid-list",
        str(labelled / "valid.txt"),
        "--epochs",
        "1",
        "--storage-path",
        str(tmp_path / "runs"),
    ]
    # Random crops for training songs only (valid songs keep their fixed clips), a one-cycle schedule.
    first = tmp_path / "crops"
    assert (
        main(
            [
                "train",
                str(labelled),
                "-o",
                str(first),
                "--config",
                str(labelled / "tiny.yaml"),
                "--run-name",
                "crops",
                "--clips",
                "random",
                "--crops",
                "3",
                "--schedule",
                "onecycle",
                *common,
            ]
        )
        == 0
    )
    spec = checkpoint.load_spec(str(first))
    assert spec.train["n_clips"] == {"train": 18, "valid": 4}
    assert (spec.clips.select, spec.clips.crops, spec.train["optim"]["schedule"]) == ("random", 3, "onecycle")

    # Transfer: start from that checkpoint; with lr 0 its convolutions come through unchanged.
    second = tmp_path / "transfer"
    assert (
        main(
            [
                "train",
                str(labelled),
                "-o",
                str(second),
                "--config",
                str(labelled / "tiny.yaml"),
                "--run-name",
                "tr",
                "--init-from",
                str(first),
                "--lr",
                "0",
                "--weight-decay",
                "0",
                *common,
            ]
        )
        == 0
    )
    before = torch.load(first / "model.pt", weights_only=True)
    after = torch.load(second / "model.pt", weights_only=True)
    convs = [k for k in before if k.endswith("weight") and before[k].ndim == 4]
    assert convs and all(torch.equal(before[k], after[k]) for k in convs)
