"""mgr_batch.clips.windows: window arithmetic, shapes, zero padding and start times."""

from __future__ import annotations

import numpy as np
import pytest

from mgr_batch.clips import windows as clips


@pytest.mark.parametrize(
    "duration, clip_seconds, hop_seconds, n_expected",
    [
        (30.0, 3.0, 3.0, 10),
        (31.0, 3.0, 3.0, 10),
        (32.99, 3.0, 3.0, 10),
        (33.0, 3.0, 3.0, 11),
        (3.0, 3.0, 3.0, 1),
        (2.0, 3.0, 3.0, 1),  # shorter than a clip: one zero-padded clip
        (0.01, 3.0, 3.0, 1),
        (9.0, 3.0, 1.5, 5),
        (10.0, 3.0, 2.0, 4),
        (0.9, 0.3, 0.1, 7),  # (0.9 - 0.3) / 0.1 is 5.999... in floating point
        (29.98, 3.0, 3.0, 9),
        (600.0, 10.0, 5.0, 119),
        (5.0, 1.0, 0.25, 17),
    ],
)
def test_clip_count(duration, clip_seconds, hop_seconds, n_expected):
    starts = clips.clip_starts(duration, clip_seconds=clip_seconds, hop_seconds=hop_seconds)
    assert starts.dtype == np.float64
    assert starts.shape == (n_expected,)
    np.testing.assert_allclose(starts, np.arange(n_expected) * hop_seconds)
    if duration >= clip_seconds:
        assert starts[-1] + clip_seconds <= duration + 1e-9  # every window fits whole


@pytest.mark.parametrize("clip_seconds, hop_seconds", [(0.0, 1.0), (1.0, 0.0), (-3.0, 3.0), (3.0, -1.0)])
def test_non_positive_windows_are_rejected(clip_seconds, hop_seconds):
    with pytest.raises(ValueError):
        clips.clip_starts(10.0, clip_seconds=clip_seconds, hop_seconds=hop_seconds)


@pytest.mark.parametrize(
    "seconds, sr, clip_seconds, hop_seconds, n_expected",
    [
        (30.0, 22050, 3.0, 3.0, 10),
        (31.0, 22050, 3.0, 3.0, 10),
        (9.0, 16000, 3.0, 1.5, 5),
        (2.0, 22050, 3.0, 3.0, 1),
        (3.0, 8000, 3.0, 3.0, 1),
        (4.0, 8000, 0.5, 0.25, 15),
    ],
)
def test_cut_shapes_and_content(seconds, sr, clip_seconds, hop_seconds, n_expected):
    n = int(round(seconds * sr))
    y = np.arange(n, dtype=np.float32)  # each sample holds its own index, so offsets are visible
    got, starts = clips.cut(y, sr=sr, clip_seconds=clip_seconds, hop_seconds=hop_seconds)
    clip_samples = int(round(clip_seconds * sr))
    assert got.shape == (n_expected, clip_samples)
    assert got.dtype == np.float32
    assert got.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(starts, np.arange(n_expected) * hop_seconds)
    for k, start in enumerate(starts):
        first = int(round(start * sr))
        valid = min(clip_samples, n - first)
        np.testing.assert_array_equal(got[k, :valid], np.arange(first, first + valid, dtype=np.float32))
        np.testing.assert_array_equal(got[k, valid:], 0.0)


def test_short_song_is_zero_padded():
    sr = 1000
    y = np.linspace(-1, 1, 1500).astype(np.float32)
    got, starts = clips.cut(y, sr=sr, clip_seconds=3.0, hop_seconds=3.0)
    assert got.shape == (1, 3000)
    np.testing.assert_array_equal(starts, [0.0])
    np.testing.assert_array_equal(got[0, :1500], y)
    assert not got[0, 1500:].any()


def test_cut_does_not_alias_the_input():
    y = np.ones(6000, np.float32)
    got, _ = clips.cut(y, sr=1000, clip_seconds=2.0, hop_seconds=1.0)
    got[0, 0] = 5.0
    assert y[0] == 1.0
    assert got[1, 0] == 1.0  # overlapping clips are separate copies


def test_starts_are_seconds_not_samples():
    _, starts = clips.cut(np.ones(10 * 22050, np.float32), sr=22050, clip_seconds=3.0, hop_seconds=2.5)
    np.testing.assert_allclose(starts, [0.0, 2.5, 5.0])
