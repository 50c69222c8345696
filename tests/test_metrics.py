"""mgr_batch.evaluation.metrics: clip and song accuracy on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from mgr_batch.evaluation import metrics

# Song s1 (label 0): clips say 0, 1, 0 -> song 0 (right).  Song s2 (label 1): clips say 1, 2 -> the mean
# says 2 (wrong).  Song s3 (label 2): one clip, 2 (right).  Clips right: 2 + 1 + 1 of 6.
CLIP_PROBS = np.array(
    [
        [0.8, 0.1, 0.1],
        [0.3, 0.6, 0.1],
        [0.6, 0.3, 0.1],
        [0.1, 0.5, 0.4],
        [0.0, 0.2, 0.8],
        [0.1, 0.1, 0.8],
    ]
)
SONG_IDS = np.array(["s1", "s1", "s1", "s2", "s2", "s3"])
LABELS = np.array([0, 0, 0, 1, 1, 2])


def test_song_predictions():
    songs = metrics.song_predictions(CLIP_PROBS, SONG_IDS, LABELS)
    assert list(songs.columns) == ["song_id", "label", "probs"]
    assert list(songs["song_id"]) == ["s1", "s2", "s3"]
    assert list(songs["label"]) == [0, 1, 2]
    np.testing.assert_allclose(songs["probs"][0], [1.7 / 3, 1.0 / 3, 0.3 / 3])
    np.testing.assert_allclose(songs["probs"][1], [0.05, 0.35, 0.6])
    np.testing.assert_allclose(songs["probs"][2], [0.1, 0.1, 0.8])


def test_song_predictions_groups_interleaved_clips():
    order = np.array([5, 3, 0, 4, 2, 1])
    a = metrics.song_predictions(CLIP_PROBS, SONG_IDS, LABELS)
    b = metrics.song_predictions(CLIP_PROBS[order], SONG_IDS[order], LABELS[order])
    for pa_, pb in zip(a["probs"], b["probs"], strict=True):
        np.testing.assert_allclose(pa_, pb)


def test_song_predictions_vote():
    songs = metrics.song_predictions(CLIP_PROBS, SONG_IDS, LABELS, method="vote")
    np.testing.assert_allclose(songs["probs"][0], [2 / 3, 1 / 3, 0])
    np.testing.assert_allclose(songs["probs"][1], [0, 0.5, 0.5])


def test_accuracy_summary():
    summary = metrics.accuracy_summary(CLIP_PROBS, SONG_IDS, LABELS)
    assert summary["clip_accuracy"] == pytest.approx(4 / 6)
    assert summary["song_accuracy"] == pytest.approx(2 / 3)
    # recall per genre: 1, 0, 1
    assert summary["song_balanced_accuracy"] == pytest.approx(2 / 3)
    assert summary["n_songs"] == 3 and summary["n_clips"] == 6


def test_balanced_accuracy_weights_genres_not_songs():
    # four songs of genre 0 all right, one song of genre 1 wrong: accuracy 0.8, balanced 0.5
    probs = np.array([[0.9, 0.1]] * 5)
    summary = metrics.accuracy_summary(probs, np.array(["a", "b", "c", "d", "e"]), np.array([0, 0, 0, 0, 1]))
    assert summary["song_accuracy"] == pytest.approx(0.8)
    assert summary["song_balanced_accuracy"] == pytest.approx(0.5)


def test_empty_summary():
    assert metrics.accuracy_summary(np.zeros((0, 3)), np.zeros(0, str), np.zeros(0, int)) == {}
