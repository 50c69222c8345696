"""mgr_batch.clips.segmentation: AR fits, the fast SEM against direct filtering, adjacency, clustering, segments."""

from __future__ import annotations

import numpy as np
import pytest
from audio_factory import ar1 as _ar1
from audio_factory import chord as _chord
from audio_factory import drums as _drums
from audio_factory import noise as _noise
from audio_factory import three_part_song as make_three_part_song
from scipy.signal import lfilter

from mgr_batch.clips import segmentation as seg
from mgr_batch.errors import ConfigError, EmptyAudioError, InvalidAudioError
from mgr_batch.plots.segmentation import plot_segmentation

SR = 11025  # the default analysis rate: the synthetic songs skip resampling


@pytest.fixture(scope="module")
def three_part_song() -> np.ndarray:
    """20 s white noise, 20 s sine chord, 20 s kick/hi-hat pattern at 11025 Hz: boundaries at 20 s and 40 s."""
    return make_three_part_song()


def _direct_sem(frames: np.ndarray, order: int, max_lag: int, *, truncate: bool = False) -> np.ndarray:
    """The study's SEM by filtering every pair in the time domain (the slow reference)."""
    a, sigma2 = seg.ar_fit(frames, order)
    n, length = frames.shape
    S = np.zeros((n, n))
    for i in range(n):
        # the fast path treats each window as dithered by white noise NOISE_FLOOR below the mean power: the
        # residual of that noise through a_i adds its power times a_i's autocorrelation
        floor = seg.NOISE_FLOOR * np.mean(frames**2)
        dither = floor * np.array([a[i, : order + 1 - k] @ a[i, k:] if k <= order else 0.0 for k in range(max_lag + 1)])
        for j in range(n):
            x = frames[j] if truncate else np.pad(frames[j], (0, order))  # full residual: n + p samples
            e = lfilter(a[i], [1.0], x)
            r = np.array([e[: len(e) - k] @ e[k:] for k in range(max_lag + 1)]) / length + dither
            S[i, j] = (sigma2[i] / r[0] - 1.0) ** 2 + 2.0 * np.sum((r[1:] / r[0]) ** 2)
    return S


def _windows(*signals: np.ndarray) -> np.ndarray:
    length = min(len(s) for s in signals)
    return np.stack([s[:length] for s in signals])


@pytest.mark.parametrize("order, max_lag", [(1, 1), (4, 8), (16, 32), (12, 40), (24, 10)])
@pytest.mark.parametrize("seconds", [0.05, 0.5])
def test_fast_sem_matches_direct_filtering(order, max_lag, seconds):
    frames = _windows(
        _noise(seconds, seed=3),
        _ar1(seconds, 0.9, seed=4),
        _chord(seconds),
        _drums(seconds),
        _ar1(seconds, -0.5, seed=5),
    )
    R = seg._autocorr(frames, max_lag + order)
    a, sigma2 = seg._ar_from_autocorr(R, order)
    fast = seg._sem_from_autocorr(R, a, sigma2, max_lag)
    np.testing.assert_allclose(fast, _direct_sem(frames, order, max_lag), rtol=1e-6, atol=1e-12)


def test_fast_sem_is_close_to_truncated_lfilter():
    """The study filters with lfilter (n samples out): the last p samples of the residual barely matter."""
    frames = _windows(_noise(1.0, seed=3), _ar1(1.0, 0.9, seed=4), _drums(1.0))
    S, _ = seg.sem_matrix(frames.ravel(), sr=SR, cfg=seg.SegmentationConfig(window_seconds=1.0, order=16, max_lag=32))
    np.testing.assert_allclose(S, _direct_sem(frames, 16, 32, truncate=True), rtol=0.05, atol=1e-3)


@pytest.mark.parametrize("coefs", [(0.5,), (1.3, -0.6), (0.2, 0.3, -0.4), (-0.9,)])
def test_ar_fit_recovers_known_process(coefs):
    a_true = np.concatenate([[1.0], -np.asarray(coefs)])
    x = lfilter([1.0], a_true, _noise(20.0, seed=7, amplitude=1.0))
    a, sigma2 = seg.ar_fit(x[None, :], len(coefs))
    assert a.shape == (1, len(coefs) + 1) and sigma2.shape == (1,)
    np.testing.assert_allclose(a[0], a_true, atol=0.02)
    assert sigma2[0] == pytest.approx(1.0, rel=0.03)  # the driving noise's variance


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sem_of_a_window_against_itself_is_near_zero(seed):
    """Stationary windows whitened by their own model (a drum pattern's residual keeps its onsets: not ~0)."""
    frames = _windows(
        _noise(1.0, seed=seed), _ar1(1.0, 0.8, seed=seed), _ar1(1.0, -0.6, seed=seed), _chord(1.0, seed=seed)
    )
    S, _ = seg.sem_matrix(frames.ravel(), sr=SR, cfg=seg.SegmentationConfig(window_seconds=1.0))
    assert np.all(S >= 0)
    assert np.all(np.diag(S)[:3] < 0.01)  # noise-like: ~2 M / n_samples
    assert S[3, 3] < 0.2  # a chord 40 dB above its noise is whitened less perfectly
    off = np.where(np.eye(4, dtype=bool), np.inf, S)
    assert np.all(np.diag(S) < 0.2 * np.minimum(off.min(axis=0), off.min(axis=1)))


def test_sem_grows_with_spectral_difference():
    """White noise as the reference; windows tilted more and more (AR(1), rho up to 0.9), then a sine chord."""
    rhos = [0.0, 0.3, 0.6, 0.9]
    frames = _windows(_noise(1.0, seed=10), *[_ar1(1.0, rho, seed=11 + i) for i, rho in enumerate(rhos)], _chord(1.0))
    S, _ = seg.sem_matrix(frames.ravel(), sr=SR, cfg=seg.SegmentationConfig(window_seconds=1.0))
    sym = 0.5 * (S + S.T)
    row = sym[0, 1:]
    assert row[0] < 0.05  # another white noise
    assert np.all(np.diff(row) > 0)  # the last one, a chord, is no noise at all


@pytest.mark.parametrize("scale", [None, 0.5, 1.0, 10.0])
def test_adjacency_is_symmetric_with_zero_diagonal(scale):
    S = np.abs(np.random.default_rng(0).standard_normal((12, 12))) * 3.0
    A = seg.adjacency(S, scale)
    np.testing.assert_array_equal(A, A.T)
    np.testing.assert_array_equal(np.diag(A), 0.0)
    assert np.all((A >= 0) & (A <= 1))
    s = seg.default_scale(0.5 * (S + S.T)) if scale is None else scale
    off = ~np.eye(12, dtype=bool)
    np.testing.assert_allclose(A[off], np.exp(-(((0.5 * (S + S.T))[off] / s) ** 2)))


@pytest.mark.parametrize("neighbours", [1, 2, 3, 10])
def test_default_scale_is_the_median_kth_neighbour_distance(neighbours):
    S = np.abs(np.subtract.outer(np.arange(6.0) ** 2, np.arange(6.0) ** 2))  # points 0, 1, 4, 9, 16, 25 on a line
    kth = [sorted(np.delete(row, i))[min(neighbours, 5) - 1] for i, row in enumerate(S)]
    assert seg.default_scale(S, neighbours) == pytest.approx(np.median(kth))


def test_default_scale_of_identical_windows():
    assert seg.default_scale(np.zeros((3, 3))) == 1.0  # any scale will do
    S = np.ones((8, 8)) - np.eye(8)
    S[:6, :6] = 0.0  # six identical windows, two far ones: the 7th neighbour is far for everyone
    assert seg.default_scale(S) == 1.0


@pytest.mark.parametrize("bad", [np.zeros((3, 4)), np.zeros(5)])
def test_adjacency_rejects_non_square(bad):
    with pytest.raises(ConfigError):
        seg.adjacency(bad)


@pytest.mark.parametrize("representative", ["cluster", "longest_run"])
@pytest.mark.parametrize("hop_seconds", [None, 1.0])
def test_three_part_song_is_recovered(three_part_song, representative, hop_seconds):
    cfg = seg.SegmentationConfig(hop_seconds=hop_seconds, representative=representative)
    result = seg.representative(three_part_song, sr=SR, cfg=cfg)
    assert result.n_clusters == 3  # from the eigen-gap
    assert [c for _, _, c in result.segments] == [0, 1, 2]
    boundaries = [hi for _, hi, _ in result.segments[:-1]]
    np.testing.assert_allclose(boundaries, [20.0, 40.0], atol=cfg.window_seconds)
    assert result.segments[0][0] == 0.0 and result.segments[-1][1] == pytest.approx(60.0)
    ((lo, hi),) = result.spans
    assert any(part <= lo and hi <= part + 20.0 + cfg.window_seconds for part in (0.0, 20.0, 40.0))
    assert result.keep_mask.sum() >= 20.0 / cfg.hop - 2
    assert np.all(result.labels[result.keep_mask] == result.cluster)


def test_eigen_gap_picks_three_clusters(three_part_song):
    S, _ = seg.sem_matrix(three_part_song, sr=SR, cfg=seg.SegmentationConfig())
    labels = seg.spectral_clusters(seg.adjacency(S), None, k_max=8)
    assert labels.max() + 1 == 3
    assert labels[0] == 0  # numbered in order of first appearance


@pytest.mark.parametrize("n_clusters", [1, 2, 3, 4])
def test_spectral_clusters_gives_the_asked_number(three_part_song, n_clusters):
    S, _ = seg.sem_matrix(three_part_song, sr=SR, cfg=seg.SegmentationConfig())
    labels = seg.spectral_clusters(seg.adjacency(S), n_clusters, seed=0)
    assert labels.shape == (len(S),)
    assert labels.max() + 1 == n_clusters
    np.testing.assert_array_equal(np.unique(labels[: labels.argmax() + 1]), np.arange(labels.max() + 1))


@pytest.mark.parametrize("seconds", [0.3, 1.9, 2.0, 3.9])
def test_song_shorter_than_two_windows_is_wholly_representative(seconds):
    y = _noise(seconds)
    result = seg.representative(y, sr=SR, cfg=seg.SegmentationConfig(window_seconds=2.0))
    duration = len(y) / SR
    assert result.segments == [(0.0, duration, 0)]
    assert result.spans == [(0.0, duration)]
    assert result.keep_mask.all() and len(result.keep_mask) == len(result.starts_s) <= 1
    assert result.clip_mask(np.array([0.0]), 0.25).all()


@pytest.mark.parametrize(
    "labels, starts, window, duration, expected",
    [
        ([0, 0, 1, 1, 0], [0, 2, 4, 6, 8], 2.0, None, [(0, 4, 0), (4, 8, 1), (8, 10, 0)]),
        ([0, 0, 1, 1, 0], [0, 2, 4, 6, 8], 2.0, 11.5, [(0, 4, 0), (4, 8, 1), (8, 11.5, 0)]),
        ([2, 2, 2], [0, 1, 2], 1.0, None, [(0, 3, 2)]),
        ([0, 1, 1, 1], [0, 1, 2, 3], 2.0, None, [(0, 1.5, 0), (1.5, 5, 1)]),  # overlap: between window centres
        ([], [], 1.0, None, []),
    ],
)
def test_segments_from_labels(labels, starts, window, duration, expected):
    got = seg.segments_from_labels(np.array(labels, int), np.array(starts, float), window, duration=duration)
    assert got == [(pytest.approx(lo), pytest.approx(hi), c) for lo, hi, c in expected]


@pytest.mark.parametrize(
    "labels, min_windows, expected",
    [
        ([0, 0, 0, 1, 0, 0, 0], 2, [0, 0, 0, 0, 0, 0, 0]),
        ([0, 0, 0, 1, 1, 1, 2, 1], 2, [0, 0, 0, 1, 1, 1, 1, 1]),
        ([0, 1, 0, 1], 5, [0, 0, 0, 0]),
        ([0, 0, 1, 1], 1, [0, 0, 1, 1]),
        ([3, 3, 1, 1, 1], 2, [0, 0, 1, 1, 1]),  # renumbered by first appearance
    ],
)
def test_merge_short_runs(labels, min_windows, expected):
    A = np.ones((len(labels), len(labels))) - np.eye(len(labels))
    np.testing.assert_array_equal(seg.merge_short_runs(np.array(labels), A, min_windows), expected)


def test_merge_short_runs_joins_the_most_adjacent_neighbour():
    labels = np.array([0, 0, 0, 1, 2, 2, 2])
    A = np.zeros((7, 7))
    A[3, 4:] = A[4:, 3] = 0.9  # window 3 resembles the run after it
    np.testing.assert_array_equal(seg.merge_short_runs(labels, A, 2), [0, 0, 0, 1, 1, 1, 1])


def test_clip_mask_keeps_clips_inside_the_spans(three_part_song):
    result = seg.representative(three_part_song, sr=SR, cfg=seg.SegmentationConfig())
    ((lo, hi),) = result.spans
    starts = np.arange(0.0, 57.0, 3.0)
    mask = result.clip_mask(starts, 3.0)
    centres = starts + 1.5
    np.testing.assert_array_equal(mask, (centres >= lo) & (centres <= hi))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(window_seconds=0.0),
        dict(hop_seconds=-1.0),
        dict(order=0),
        dict(max_lag=0),
        dict(sr=0),
        dict(n_clusters=0),
        dict(k_max=0),
        dict(scale=0.0),
        dict(scale_neighbours=0),
        dict(min_segment_seconds=-1.0),
        dict(representative="middle"),
    ],
)
def test_bad_config_is_rejected(kwargs):
    with pytest.raises(ConfigError):
        seg.SegmentationConfig(**kwargs)


@pytest.mark.parametrize(
    "y, error",
    [
        (np.zeros(0), EmptyAudioError),
        (np.array([0.0, np.nan, 0.0]), InvalidAudioError),
        (np.zeros((2, 100)), ConfigError),
    ],
)
def test_bad_audio_is_rejected(y, error):
    with pytest.raises(error):
        seg.representative(y, sr=SR)


def test_silence_is_one_cluster():
    result = seg.representative(np.zeros(SR * 10), sr=SR)
    assert result.n_clusters == 1 and result.spans == [(0.0, 10.0)]


def test_resampling_to_the_analysis_rate(three_part_song):
    """The same song at 22050 Hz is analyzed at 11025 Hz: the same three parts come out."""
    import soxr

    y = soxr.resample(three_part_song, SR, 2 * SR)
    result = seg.representative(y, sr=2 * SR)
    assert [c for _, _, c in result.segments] == [0, 1, 2]
    np.testing.assert_allclose([hi for _, hi, _ in result.segments[:-1]], [20.0, 40.0], atol=2.0)


def test_plot_writes_a_png(tmp_path, three_part_song):
    result = seg.representative(three_part_song, sr=SR)
    out = plot_segmentation(result, three_part_song, SR, tmp_path / "figs" / "seg.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_plot_of_a_short_song(tmp_path):
    y = _noise(1.0)
    out = plot_segmentation(seg.representative(y, sr=SR), y, SR, tmp_path / "short.png")
    assert out.stat().st_size > 0


@pytest.mark.parametrize("gain", [1e-4, 1.0, 3e4])
def test_sem_does_not_depend_on_the_gain(three_part_song, gain):
    cfg = seg.SegmentationConfig()
    S, _ = seg.sem_matrix(three_part_song, sr=SR, cfg=cfg)
    S_gain, _ = seg.sem_matrix(gain * three_part_song, sr=SR, cfg=cfg)
    np.testing.assert_allclose(S_gain, S, rtol=1e-6, atol=1e-9)
