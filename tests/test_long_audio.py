"""A 1-hour file must not blow memory: only ``audio.max_duration`` seconds are decoded, in bounded blocks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from audio_factory import write_long_tone

from mgr_batch.config import AudioConfig

HOUR_S = 3600.0
FILE_SR = 8000
#: Peak memory the decode may add: 1800 s at 22050 Hz float32 is 159 MB; the resampler's chunks and their
#: concatenation double that. Decoding the whole hour instead would need about 1.3 GB.
MAX_PEAK_MB = 600

#: Decodes the file the way the decode stage does (storage.open_input, then audio.load with the default
#: AudioConfig) and prints the result and the memory it took, as JSON. Imports and a short warm-up decode
#: happen first, so the baseline holds every library the decode needs.
DECODE_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, tracemalloc
    from mgr_batch.io import audio
    from mgr_batch.io import storage
    from mgr_batch.config import AudioConfig

    cfg = AudioConfig()
    path, warm = sys.argv[1], sys.argv[2]

    def decode(p):
        with storage.open_input(p) as f:
            return audio.load(f, sr=cfg.sr, max_duration=cfg.max_duration,
                              silence_threshold=cfg.silence_threshold, resample_quality=cfg.resample_quality)

    decode(warm)
    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    d = decode(path)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    after_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "n": len(d.y), "sr": d.sr, "native_sr": d.native_sr, "channels": d.channels, "duration": d.duration,
        "analyzed": d.analyzed, "dtype": str(d.y.dtype), "max_duration": cfg.max_duration,
        "rss_delta_mb": (after_kb - before_kb) / 1024, "traced_peak_mb": traced_peak / 2**20,
    }))
    """
)


@pytest.fixture(scope="module")
def hour_file(tmp_path_factory) -> Path:
    """One hour of 8 kHz mono 16-bit WAV (57.6 MB), written in 60 s blocks."""
    folder = tmp_path_factory.mktemp("long")
    path = write_long_tone(folder / "one_hour_8k.wav", seconds=HOUR_S, sr=FILE_SR)
    assert path.stat().st_size == pytest.approx(HOUR_S * FILE_SR * 2, abs=1024)
    write_long_tone(folder / "warm_up.wav", seconds=2.0, sr=FILE_SR)
    return path


@pytest.fixture(scope="module")
def decoded(hour_file) -> dict:
    """Decode in a fresh interpreter, so its peak resident memory is this decode's alone."""
    proc = subprocess.run(
        [sys.executable, "-c", DECODE_SCRIPT, str(hour_file), str(hour_file.with_name("warm_up.wav"))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_only_max_duration_is_decoded_but_duration_is_the_whole_file(decoded):
    assert decoded["max_duration"] == AudioConfig().max_duration == 1800.0
    assert decoded["duration"] == pytest.approx(HOUR_S)
    assert decoded["analyzed"] == pytest.approx(1800.0, abs=1e-3)
    assert decoded["n"] == pytest.approx(1800 * 22050, abs=2)
    assert (decoded["sr"], decoded["native_sr"], decoded["channels"], decoded["dtype"]) == (
        22050,
        FILE_SR,
        1,
        "float32",
    )


def test_decode_peak_memory_stays_bounded(decoded):
    output_mb = decoded["n"] * 4 / 2**20  # the returned waveform itself: 151 MiB
    assert decoded["rss_delta_mb"] < MAX_PEAK_MB, decoded
    assert decoded["traced_peak_mb"] < MAX_PEAK_MB, decoded
    assert decoded["traced_peak_mb"] >= output_mb  # the measurement did see the decode
