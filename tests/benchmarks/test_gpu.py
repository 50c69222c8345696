"""benchmarks/gpu.py runs end to end on CPU (``--smoke``: the actor path forced, no GPU asked for)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from audio_factory import write_chirp, write_tone

pytestmark = pytest.mark.e2e  # tag and train in subprocesses, each with its own Ray

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_benchmark_smoke_run_on_cpu(tmp_path):
    data = tmp_path / "data"
    for genre, i in [(g, i) for g in ("blues", "rock") for i in range(3)]:
        (data / genre).mkdir(parents=True, exist_ok=True)
        if genre == "blues":
            write_tone(data / genre / f"{genre}.{i:05d}.wav", seconds=3.5, freq=220.0 * (i + 1))
        else:
            write_chirp(data / genre / f"{genre}.{i:05d}.wav", seconds=3.5, fmin=200 + 100 * i)
    results = tmp_path / "results"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "gpu.py"),
        "--smoke",
        "--data",
        str(data),
        "--results",
        str(results),
        "--minutes",
        "0.5",
        "--model",
        "logmel-cnn",  # the script, not the default's networks (their actor path has its own e2e test)
        "--actors",
        "1",
        "--batch-sizes",
        "8",
        "--model-types",
        "cnn",
        "--train-songs",
        "6",
        "--work",
        str(tmp_path / "work"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    r = json.loads((results / "gpu.json").read_text())
    (tag,) = r["tag"]
    # the catalog repeats the 6 files until it holds 30 s of audio: 9 files of 3.5 s
    assert r["catalog_files"] == 9 and tag["n_songs"] == 9 and tag["n_errors"] == 0
    assert tag["n_clips"] == 9  # one 3 s clip per 3.5 s song
    assert tag["clips_per_s_per_gpu"] > 0
    (train,) = r["train"]
    assert train["model_type"] == "cnn" and not train["use_gpu"] and len(train["history"]) == 1
    md = (results / "gpu.md").read_text()
    assert "Smoke run on CPU" in md and "| 1 | 8 |" in md
