"""mgr_batch.models.precision: what ``auto`` means where, the scope of a precision, and bfloat16's agreement
with float32 for the shipped default (the tolerance its docs state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mgr_batch.config import InferenceConfig
from mgr_batch.errors import ConfigError
from mgr_batch.features import stacked as fs
from mgr_batch.io import audio
from mgr_batch.models import checkpoint, precision
from tests.audio_factory import chord, drums, noise

GTZAN = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gtzan"
LONG = GTZAN.parent / "long"
#: Stated tolerance of bfloat16 against float32 for the default model: song probabilities within this
#: (benchmarks/precision.py measured at most 0.013 over 444 GTZAN songs and 0.007 over the 26 long tracks on an
#: AMD EPYC with AVX512_BF16; 0.013 on an Intel Xeon with AMX), and the same genre.
SONG_PROB_TOLERANCE = 0.03


def _cpu_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def test_auto_is_bfloat16_only_on_a_cpu_with_native_bfloat16():
    flags = _cpu_flags()
    if flags:  # Linux: the kernel's own view of the CPU, independent of torch's probes
        amx = "amx_tile" in flags and "amx_bf16" in flags
        assert precision.native_bfloat16() == (amx or "avx512_bf16" in flags)
    want = "bfloat16" if precision.native_bfloat16() else "float32"
    assert precision.resolve("auto", "cpu") == want
    assert precision.resolve("auto", "cuda") == "float32"
    assert precision.resolve("float32", "cpu") == "float32"
    assert precision.resolve("bfloat16", "cuda") == "bfloat16"


@pytest.mark.parametrize("bad", ["half", "fp16", "", "BFLOAT16"])
def test_a_bad_precision_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="precision"):
        precision.resolve(bad)
    with pytest.raises(ConfigError, match="inference.precision"):
        InferenceConfig(precision=bad)
    with pytest.raises(ConfigError, match="precision"), precision.networks(bad):
        pass


def _clips(sr: int) -> np.ndarray:
    """Four 3 s clips: a chord, drums, noise and their mix, at ``sr`` Hz."""
    parts = [chord(3.0, sr=sr), drums(3.0, sr=sr), noise(3.0, sr=sr, amplitude=0.2)]
    parts.append(sum(parts) / 3)
    return np.stack([p[: 3 * sr] for p in parts]).astype(np.float32)


def test_the_networks_run_in_bfloat16_only_inside_the_block_within_tolerance():
    """The default's stack (MSD_musicnn + EfficientAT): float32 outside any block and after one, musicnn in
    bfloat16 inside (different numbers, each clip's embedding within 5% relative and at cosine >= 0.998), and
    EfficientAT's part in float32 still."""
    cfg = checkpoint.load_spec("default").features
    x = _clips(32000)
    before = fs.stacked_embedding(x, sr=32000, cfg=cfg)
    with precision.networks("bfloat16"):
        assert precision.current("cpu") == "bfloat16"
        half = fs.stacked_embedding(x, sr=32000, cfg=cfg)
    assert precision.current("cpu") == "float32"
    after = fs.stacked_embedding(x, sr=32000, cfg=cfg)
    np.testing.assert_array_equal(before, after)
    assert np.abs(half - before).max() > 0  # the block did change the arithmetic
    rel = np.linalg.norm(half - before, axis=1) / np.linalg.norm(before, axis=1)
    cos = (half * before).sum(axis=1) / (np.linalg.norm(half, axis=1) * np.linalg.norm(before, axis=1))
    assert rel.max() < 0.05 and cos.min() > 0.998, (rel, cos)
    np.testing.assert_array_equal(half[:, 200:], before[:, 200:])  # EfficientAT's 384 values


@pytest.mark.skipif(not GTZAN.is_dir(), reason=f"GTZAN data not found at {GTZAN} (../shared/data beside the repo)")
def test_the_default_gives_the_same_genres_in_bfloat16_on_real_songs():
    """Five whole GTZAN songs of five genres and the two shortest long tracks (stereo, 44.1 kHz): the default
    model's song genre is the same in both precisions and its song probabilities agree within the stated
    tolerance."""
    model, spec = checkpoint.load("default")
    manifest = pd.read_csv(GTZAN / "manifest.csv")
    songs = manifest[manifest["kind"] == "full"].groupby("genre").head(1).head(5)
    assert len(songs) == 5
    long = pd.read_csv(LONG / "manifest.csv").nsmallest(2, "duration_s")
    paths = [GTZAN / p for p in songs["path"]] + [LONG / p for p in long["path"]]
    for path in paths:
        y = audio.load(str(path), sr=spec.audio.sr).y
        clips = np.stack([y[i * 96000 : (i + 1) * 96000] for i in range(len(y) // 96000)])
        full = model.predict_song_proba(fs.stacked_embedding(clips, sr=spec.audio.sr, cfg=spec.features)[:, :, None])
        with precision.networks("bfloat16"):
            half = fs.stacked_embedding(clips, sr=spec.audio.sr, cfg=spec.features)
        half = model.predict_song_proba(half[:, :, None])
        assert np.argmax(half) == np.argmax(full), path
        assert np.abs(half - full).max() < SONG_PROB_TOLERANCE, path
