"""End to end: ``mgr-batch evaluate`` and ``mgr-batch cv`` on generated audio with a real local Ray."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from audio_factory import write_noise, write_tone

from mgr_batch.cli import main
from mgr_batch.models import checkpoint

pytestmark = pytest.mark.usefixtures("ray_cluster")

TINY = """
features: {n_mels: 32, hop_length: 1024}
model: {name: cnn, params: {channels: [4, 8]}}
optim: {batch_size: 8, epochs: 1}
"""


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    for i in range(3):
        write_tone(root / "blues" / f"blues.{i:05d}.wav", seconds=6.0, freq=220.0 * (i + 1))
        write_noise(root / "rock" / f"rock.{i:05d}.flac", seconds=4.0, seed=i)
    (root / "rock" / "rock.00009.wav").write_bytes(b"broken")
    (root / "valid.txt").write_text("blues/blues.00000.wav\nrock/rock.00001.wav\nrock/rock.00009.wav\n")
    (root / "tiny.yaml").write_text(TINY)
    return root


def test_evaluate_writes_consistent_reports(labelled, tiny_model, tmp_path):
    out = tmp_path / "report"
    assert main(["evaluate", str(labelled), "--model", tiny_model, "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    songs = pd.read_parquet(out / "songs.parquet")
    assert metrics["n_songs"] == len(songs) == 6 and metrics["n_errors"] == 1
    assert metrics["errors_by_type"] == {"AudioDecodeError": 1}
    assert metrics["n_clips"] == 6 * 2 - 3  # 6 s tones -> 2 clips, 4 s noise -> 1 clip
    assert metrics["song_accuracy"] == pytest.approx(songs["correct"].mean())
    assert sum(map(sum, metrics["confusion_matrix"]["counts"])) == 6
    assert metrics["per_genre"]["blues"]["support"] == 3 and metrics["per_genre"]["jazz"]["support"] == 0
    assert set(metrics["aggregations"]) == {"mean", "vote", "log"}
    assert metrics["model_id"] == checkpoint.load_spec(tiny_model).model_id
    for name in ("per_genre.csv", "confusion_matrix.png", "report.md", "config.yaml"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "Most confident mistakes" in report and "mean certainty" in report
    assert len(pd.read_csv(out / "per_genre.csv")) == 10


def test_evaluate_list_restricts_the_songs(labelled, tiny_model, tmp_path):
    out = tmp_path / "r"
    assert (
        main(["evaluate", str(labelled), "--model", tiny_model, "--list", str(labelled / "valid.txt"), "-o", str(out)])
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["n_songs"], metrics["n_errors"]) == (2, 1)


def test_evaluate_refuses_unknown_labels_and_training_songs(labelled, tiny_model, tmp_path, capsys):
    odd = tmp_path / "odd"
    write_tone(odd / "polka" / "polka.00000.wav", seconds=3.0)
    assert main(["evaluate", str(odd), "--model", tiny_model, "-o", str(tmp_path / "o1")]) == 2
    assert "polka" in capsys.readouterr().err

    model, spec = checkpoint.load(tiny_model)
    leaky = str(tmp_path / "leaky")
    checkpoint.save(leaky, model, dataclasses.replace(spec, train={"train_songs": ["rock.00001"]}))
    assert main(["evaluate", str(labelled), "--model", leaky, "-o", str(tmp_path / "o2")]) == 2
    assert "rock.00001" in capsys.readouterr().err


def cv_args(labelled: Path, out: Path, runs: Path, *extra: str) -> list[str]:
    return [
        "cv",
        str(labelled),
        "--model-type",
        "cnn",
        "--folds",
        "2",
        "--output",
        str(out),
        "--config",
        str(labelled / "tiny.yaml"),
        "--storage-path",
        str(runs),
        *extra,
    ]


@pytest.fixture(scope="module")
def cross_validated(labelled, tmp_path_factory) -> tuple[Path, Path]:
    """A 2-fold CV of the tiny CNN: (its output folder, its Ray Train storage path)."""
    root = tmp_path_factory.mktemp("cv")
    assert main(cv_args(labelled, root / "cv", root / "runs")) == 0
    return root / "cv", root / "runs"


def test_cv_folds_are_made_of_whole_songs(cross_validated):
    out, _ = cross_validated
    summary = json.loads((out / "cv.json").read_text())
    assert summary["folds"] == 2 and len(summary["per_fold"]) == 2
    assert summary["group_by"] == "stem"
    written = yaml.safe_load((out / "config.yaml").read_text())  # the resolved config, beside cv.json
    assert written["folds"] == 2 and written["train"]["output"] == str(out)
    tested = [set(pd.read_parquet(out / f"fold-{k}" / "songs.parquet")["path"]) for k in range(2)]
    assert not tested[0] & tested[1]
    assert len(tested[0] | tested[1]) == 6  # the broken file is an error row, in neither
    for k in range(2):
        spec = checkpoint.load_spec(str(out / f"fold-{k}" / "model"))
        assert not set(spec.train["train_songs"]) & {Path(p).stem for p in tested[k]}
        assert "valid" not in spec.train["n_songs"]  # the held-out fold is never used to pick the epoch
        assert set(torch.load(out / f"fold-{k}" / "model" / "model.pt", weights_only=True))
    for m in ("song_accuracy", "song_balanced_accuracy"):
        assert summary[m]["mean"] == pytest.approx(sum(f[m] for f in summary["per_fold"]) / 2)
    assert (out / "cv.md").read_text().startswith("# 2-fold cross-validation")


def test_cv_resumes_finished_folds_and_redoes_changed_ones(labelled, cross_validated, tmp_path):
    first, runs = cross_validated
    out = tmp_path / "cv"
    shutil.copytree(first, out)
    before = json.loads((out / "cv.json").read_text())
    weights = [out / f"fold-{k}" / "model" / "model.pt" for k in range(2)]
    stamps = [w.stat().st_mtime_ns for w in weights]
    # Fold 1 as an interrupted run leaves it: no result file, and a stray row in its tags.
    (out / "fold-1" / "fold.json").unlink()
    stray = out / "fold-1" / "tags" / "songs" / "stray.parquet"
    pd.read_parquet(out / "fold-1" / "tags" / "songs").head(1).to_parquet(stray)
    assert main(cv_args(labelled, out, runs)) == 0
    again = json.loads((out / "cv.json").read_text())
    assert weights[0].stat().st_mtime_ns == stamps[0]  # fold 0 is reused as it was
    assert weights[1].stat().st_mtime_ns != stamps[1]  # fold 1 trains again
    assert again["per_fold"][0] == before["per_fold"][0]
    assert not stray.exists()
    assert [f["n_songs"] for f in again["per_fold"]] == [f["n_songs"] for f in before["per_fold"]]


def test_a_fold_is_reused_only_under_the_same_settings(labelled, tmp_path):
    """A fold's key (what an earlier fold.json must match to be reused) follows the training settings, the
    model and the songs on each side, not where data is read or written or the run's name."""
    from mgr_batch.cli import build_parser, cv_config
    from mgr_batch.evaluation import datasets
    from mgr_batch.execution.evaluate import fold_key
    from mgr_batch.execution.train import training_spec

    def key(*extra: str, out: Path = tmp_path / "cv", runs: Path = tmp_path / "runs", side: int = 0) -> str:
        cfg = cv_config(build_parser().parse_args(cv_args(labelled, out, runs, *extra)))
        files = datasets.labelled(cfg.train.data, None)
        split = ["test" if (i + side) % 2 else "train" for i in range(len(files))]
        return fold_key(cfg, training_spec(files, cfg.train), files.assign(split=split))

    same = key()
    assert key(out=tmp_path / "elsewhere", runs=tmp_path / "other-runs") == same
    for other in (key("--lr", "0.003"), key("--epochs", "2"), key("--weight-decay", "0.1"), key(side=1)):
        assert other != same
