"""The same end-to-end runs on local disk and on a real S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from audio_factory import write_broken_corpus, write_catalog
from conftest import S3_SECRET

from mgr_batch.cli import main
from mgr_batch.io import storage

pytestmark = pytest.mark.usefixtures("ray_cluster")


def test_listing_a_prefix_with_thousands_of_keys(s3_server, s3_bucket):
    # more keys than one S3 listing page (1000) holds, in a few folders
    keys = {f"{s3_bucket}/many/{i // 500:02d}/song-{i:05d}.wav": b"x" for i in range(1100)}
    keys.update({f"{s3_bucket}/many/cover-{i}.jpg": b"j" for i in range(7)})
    s3_server.fs.pipe(keys)
    listing = storage.list_inputs(f"{s3_bucket}/many", s3_server.options)
    assert len(listing.files) == 1100 and len(listing.ignored) == 7
    assert listing.files["path"].str.startswith(f"{s3_bucket}/many/").all()
    assert (listing.files["size"] == 1).all() and listing.files["song_id"].is_unique


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, int, int]:
    root = tmp_path_factory.mktemp("storage_corpus")
    good = write_catalog(root / "good")
    broken = write_broken_corpus(root / "broken")
    return root, len(good), len(broken)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_tag_and_evaluate_end_to_end(where, corpus, tiny_model, tmp_path, request):
    root, n_good, n_broken = corpus
    options: list[str] = []
    if where == "s3":
        s3 = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        s3.fs.put(str(root) + "/", f"{bucket}/in/", recursive=True)
        s3.fs.put(tiny_model + "/", f"{bucket}/model/", recursive=True)
        base, model, options = bucket, f"{bucket}/model", s3.cli_options()
        fs = s3.fs
    else:
        base, model = str(tmp_path), tiny_model
        fs = storage.filesystem(base)[0]
        (tmp_path / "in").symlink_to(root, target_is_directory=True)
    out = f"{base}/out"
    assert main(["tag", f"{base}/in", "--output", out, "--model", model, *options]) == 0
    songs = pd.read_parquet(fs._strip_protocol(f"{out}/songs"), filesystem=fs)
    errors = pd.read_parquet(fs._strip_protocol(f"{out}/errors"), filesystem=fs)
    assert (len(songs), len(errors)) == (n_good, n_broken)
    assert songs["path"].str.startswith(base).all()
    run = json.loads(fs.cat_file(f"{out}/run.json"))
    assert (run["n_songs"], run["n_errors"]) == (n_good, n_broken)
    for name in ("run.json", "config.yaml"):
        assert S3_SECRET not in fs.cat_file(f"{out}/{name}").decode(), f"secret leaked into {name}"

    report = f"{base}/report"
    assert main(["evaluate", f"{base}/in/good", "--model", model, "--output", report, *options]) == 2  # folder names
    # are not genres of the model: a clear LabelError, not a silent zero


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    from audio_factory import write_noise, write_tone

    root = tmp_path_factory.mktemp("labelled_storage")
    for i in range(4):
        write_tone(root / "data" / "tones" / f"tones.{i:05d}.wav", seconds=4.0, freq=300.0 + 100 * i)
        write_noise(root / "data" / "noise" / f"noise.{i:05d}.flac", seconds=4.0, seed=i)
    (root / "train.txt").write_text("\n".join(f"{g}/{g}.{i:05d}.wav" for g in ("tones", "noise") for i in range(3)))
    (root / "valid.txt").write_text("tones/tones.00003.wav\nnoise/noise.00003.wav\n")
    (root / "tiny.yaml").write_text(
        "features: {n_mels: 32, hop_length: 1024}\nmodel: {name: cnn, params: {channels: [4]}}\n"
    )
    return root


# On S3 only: local storage paths are what every other training test uses.
@pytest.mark.parametrize("where", ["s3"])
def test_train_with_checkpoints_in_storage_then_evaluate(where, labelled, tmp_path, request):
    """Data, Ray Train's run checkpoints, the final checkpoint and the report all live on ``where``."""
    options: list[str] = []
    if where == "s3":
        s3 = request.getfixturevalue("s3_server")
        base = request.getfixturevalue("s3_bucket")
        s3.fs.put(str(labelled / "data") + "/", f"{base}/data/", recursive=True)
        options, fs = s3.cli_options(), s3.fs
    else:
        base = str(tmp_path)
        fs = storage.filesystem(base)[0]
        (tmp_path / "data").symlink_to(labelled / "data", target_is_directory=True)
    lists = ["--train-list", str(labelled / "train.txt"), "--valid-list", str(labelled / "valid.txt")]
    rc = main(
        [
            "train",
            f"{base}/data",
            "--output",
            f"{base}/model",
            "--config",
            str(labelled / "tiny.yaml"),
            "--epochs",
            "2",
            "--storage-path",
            f"{base}/runs",
            "--run-name",
            "r",
            *lists,
            *options,
        ]
    )
    assert rc == 0
    assert fs.exists(f"{base}/model/model.pt") and fs.exists(f"{base}/model/config.json")
    run_files = fs.find(f"{base}/runs/r")
    assert any(p.endswith("train_state.pt") for p in run_files), "Ray Train kept no run checkpoint in storage"
    assert S3_SECRET not in fs.cat_file(f"{base}/model/train_config.yaml").decode()

    report = f"{base}/report"
    assert (
        main(
            [
                "evaluate",
                f"{base}/data",
                "--model",
                f"{base}/model",
                "--list",
                str(labelled / "valid.txt"),
                "--output",
                report,
                *options,
            ]
        )
        == 0
    )
    metrics = json.loads(fs.cat_file(f"{report}/metrics.json"))
    assert metrics["n_songs"] == 2 and set(metrics["per_genre"]) == {"noise", "tones"}
