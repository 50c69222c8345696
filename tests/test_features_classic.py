"""mgr_batch.features.classic: names and shapes, known answers on tones and clicks, fast == reference, GTZAN rows."""

from __future__ import annotations

from pathlib import Path

import classic_tolerances as tol
import numpy as np
import pandas as pd
import pytest
import scipy.ndimage

from mgr_batch.features import classic as fc
from mgr_batch.io import audio

SR = 22050
GTZAN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gtzan"
#: The first `kind == full` song of three genres in manifest order (not picked for agreement).
GTZAN_SONGS = ("blues/blues.00000", "jazz/jazz.00000", "rock/rock.00000")
#: One song against its published row: every feature within this many across-song standard deviations.
SONG_STD_TOLERANCE = 0.3
#: Tempo estimates within this fraction count as the same tempo.
TEMPO_TOLERANCE = 0.04


def sine(freq: float, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def clicks(bpm: float, seconds: float, seed: int = 0) -> np.ndarray:
    """Short decaying noise bursts every beat."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    burst = rng.standard_normal(int(0.02 * SR)) * np.exp(-np.arange(int(0.02 * SR)) / (0.004 * SR))
    y = np.zeros(n)
    for start in np.round(np.arange(0, seconds, 60 / bpm) * SR).astype(int):
        y[start : start + len(burst)] += 0.5 * burst[: n - start]
    return y.astype(np.float32)


def music(seconds: float, *, root: float, bpm: float, noise: float, seed: int) -> np.ndarray:
    """A major triad (four harmonics per note, random phases) over a click track, plus white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SR))) / SR
    chord = sum(
        amp * np.sin(2 * np.pi * root * ratio * h * t + rng.uniform(0, 2 * np.pi)) / h
        for ratio, amp in ((1.0, 0.2), (2 ** (4 / 12), 0.15), (2 ** (7 / 12), 0.15))
        for h in (1, 2, 3, 4)
    )
    y = chord + clicks(bpm, seconds, seed) + noise * rng.standard_normal(len(t))
    return y.astype(np.float32)


def feature(vector: np.ndarray, name: str) -> float:
    return float(vector[fc.FEATURE_NAMES.index(name)])


def test_feature_names():
    names = fc.FEATURE_NAMES
    assert len(names) == 58 == len(set(names))
    assert names[:3] == ("length", "chroma_stft_mean", "chroma_stft_var")
    assert names[15:20] == ("perceptr_mean", "perceptr_var", "tempo", "mfcc1_mean", "mfcc1_var")
    assert names[-1] == "mfcc20_var"
    assert set(tol.PUBLISHED_TOLERANCE) == set(names) == set(tol.FAST_ATOL)


@pytest.mark.skipif(not GTZAN.is_dir(), reason=f"GTZAN data not found at {GTZAN}")
def test_feature_names_match_published_columns():
    columns = pd.read_csv(GTZAN / "features_30_sec.train_valid.csv", nrows=0).columns
    assert tuple(columns) == ("filename", *fc.FEATURE_NAMES, "label")


@pytest.mark.filterwarnings("ignore::UserWarning")  # librosa: n_fft larger than a 1-sample input, no pitches
@pytest.mark.parametrize("n_samples", [1, 2047, 2048, SR, 3 * SR + 17])
@pytest.mark.parametrize("function", [fc.gtzan_features, fc.gtzan_features_reference])
def test_shape(function, n_samples):
    y = (0.1 * np.random.default_rng(n_samples).standard_normal(n_samples)).astype(np.float32)
    out = function(y, sr=SR)
    assert out.shape == (58,) and out.dtype == np.float64
    assert np.isfinite(out).all()
    assert feature(out, "length") == n_samples


def test_frames_shapes():
    n = 2 * SR + 100
    frames = fc.gtzan_frames(sine(440.0, n / SR) + clicks(120, n / SR), sr=SR)
    n_frames = 1 + n // fc.HOP_LENGTH
    assert frames["chroma_stft"].shape == (12, n_frames)
    assert frames["mfcc"].shape == (fc.N_MFCC, n_frames)
    for name in ("rms", "spectral_centroid", "spectral_bandwidth", "rolloff", "zero_crossing_rate"):
        assert frames[name].shape == (n_frames,), name
    assert frames["harmony"].shape == frames["perceptr"].shape == (n,)
    assert frames["tempo"].shape == ()


@pytest.mark.parametrize("bad", [np.zeros(0), np.zeros((2, 100)), np.array([0.0, np.nan, 0.0])])
def test_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        fc.gtzan_features(bad)


@pytest.mark.parametrize(
    "freq, pitch_class",
    [(261.63, 0), (440.0, 9), (1000.0, 11), (1480.0, 6)],  # C4, A4, 1 kHz (B5 + 21 cents), F#6
)
@pytest.mark.parametrize("amplitude", [0.1, 0.5])
def test_sine_known_answers(freq, pitch_class, amplitude):
    y = sine(freq, 3.0, amplitude)
    frames = fc.gtzan_frames(y, sr=SR)
    inner = slice(4, -4)  # frames whose window lies wholly inside the tone (no zero padding)
    chroma = frames["chroma_stft"][:, inner]
    assert np.argmax(chroma.mean(axis=1)) == pitch_class
    np.testing.assert_allclose(chroma[pitch_class], 1.0)  # each frame's maximum, which norm=inf scales to 1
    assert np.median(frames["spectral_centroid"][inner]) == pytest.approx(freq, rel=0.01)
    assert np.median(frames["rolloff"][inner]) == pytest.approx(freq, abs=2 * SR / fc.N_FFT)
    assert np.median(frames["spectral_bandwidth"][inner]) < 2 * SR / fc.N_FFT  # the Hann main lobe, in Hz
    assert np.median(frames["zero_crossing_rate"][inner]) == pytest.approx(2 * freq / SR, rel=0.01)
    assert np.median(frames["rms"][inner]) == pytest.approx(amplitude / np.sqrt(2), rel=1e-3)

    out = fc.gtzan_features(y, sr=SR)
    # A steady tone is all harmonic: the percussive part holds (almost) none of its energy.
    assert feature(out, "harmony_var") == pytest.approx(amplitude**2 / 2, rel=0.02)
    assert feature(out, "perceptr_var") < 1e-3 * amplitude**2
    assert 1 / 12 <= feature(out, "chroma_stft_mean") < 0.2  # nearly one-hot chroma (wider leakage when low)


@pytest.mark.parametrize("bpm", [90.0, 100.0, 140.0])
def test_click_track_tempo(bpm):
    out = fc.gtzan_features(clicks(bpm, 10.0), sr=SR)
    assert feature(out, "tempo") == pytest.approx(bpm, rel=TEMPO_TOLERANCE)


@pytest.mark.parametrize(
    "root, bpm, noise, seed",
    [(261.63, 120.0, 0.01, 0), (440.0, 90.0, 0.01, 1), (196.0, 140.0, 0.05, 2), (329.63, 100.0, 0.0, 3)],
)
def test_fast_agrees_with_reference(root, bpm, noise, seed):
    y = music(4.0, root=root, bpm=bpm, noise=noise, seed=seed)
    fast, ref = fc.gtzan_features(y, sr=SR), fc.gtzan_features_reference(y, sr=SR)
    atol = np.array([tol.FAST_ATOL[name] for name in fc.FEATURE_NAMES])
    bad = np.abs(fast - ref) > tol.FAST_RTOL * np.abs(ref) + atol
    assert not bad.any(), {n: (f, r) for n, f, r, b in zip(fc.FEATURE_NAMES, fast, ref, bad, strict=True) if b}


@pytest.mark.parametrize(
    "seconds, window_seconds, hop_seconds, n_windows",
    [(9.0, 3.0, 3.0, 3), (9.5, 3.0, 3.0, 3), (9.0, 3.0, 1.5, 5), (2.0, 3.0, 3.0, 1), (3.0, 1.0, 1.0, 3)],
)
def test_windows(seconds, window_seconds, hop_seconds, n_windows):
    y = music(seconds, root=220.0, bpm=120.0, noise=0.01, seed=0)
    out = fc.gtzan_features_windows(y, sr=SR, window_seconds=window_seconds, hop_seconds=hop_seconds)
    assert out.shape == (n_windows, 58)
    window = int(round(window_seconds * SR))
    assert (out[:, 0] == window).all()  # a short song's single window is zero-padded to full length
    if seconds >= window_seconds:
        start = int(round(hop_seconds * SR)) * (n_windows - 1)
        np.testing.assert_array_equal(out[-1], fc.gtzan_features(y[start : start + window], sr=SR))


@pytest.mark.parametrize("shape", [(3, 1), (3, 2), (4, 15), (5, 31), (5, 32), (7, 200), (2, 1293)])
@pytest.mark.parametrize("size", [1, 3, 31])
@pytest.mark.parametrize("kind", ["random", "ties"])
def test_median_filter_rows_matches_scipy(shape, size, kind):
    rng = np.random.default_rng(size)
    x = rng.random(shape).astype(np.float32)
    if kind == "ties":
        x = np.round(x * 3).astype(np.float32)  # few distinct values, many zeros
    expected = scipy.ndimage.median_filter(x, size=(1, size), mode="reflect")
    np.testing.assert_array_equal(fc.median_filter_rows(x, size), expected)


@pytest.mark.skipif(not GTZAN.is_dir(), reason=f"GTZAN data not found at {GTZAN} (../shared/data beside the repo)")
@pytest.mark.parametrize("song", GTZAN_SONGS)
def test_real_song_matches_published_row(song):
    path = GTZAN / f"{song}.ogg"
    if not path.exists():
        pytest.skip(f"{path} not found")
    table = pd.read_csv(GTZAN / "features_30_sec.train_valid.csv")
    published = table.set_index("filename").loc[f"{Path(song).name}.wav", list(fc.FEATURE_NAMES)].to_numpy(float)
    spread = table[list(fc.FEATURE_NAMES)].to_numpy(float).std(axis=0)
    ours = fc.gtzan_features(audio.load(str(path), sr=SR).y, sr=SR)

    assert feature(ours, "length") == feature(published, "length")
    assert feature(ours, "tempo") == pytest.approx(feature(published, "tempo"), rel=TEMPO_TOLERANCE)
    std_error = np.abs(ours - published) / spread
    bad = std_error > SONG_STD_TOLERANCE
    assert not bad.any(), {n: (o, p) for n, o, p, b in zip(fc.FEATURE_NAMES, ours, published, bad, strict=True) if b}
