"""Song-level metrics against small hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mgr_batch.evaluation.scoring import aggregation_comparison, classification_metrics, evaluate_tables, song_frame

GENRES = ("a", "b", "c")


def probs_for(preds: list[int], confident: float = 0.7) -> np.ndarray:
    out = np.full((len(preds), 3), (1 - confident) / 2)
    out[np.arange(len(preds)), preds] = confident
    return out


def test_hand_computed_case_with_a_genre_of_zero_support():
    # true: a a a b b ; pred: a a b b c   (genre c has no support but is predicted once)
    m = classification_metrics(np.array([0, 0, 0, 1, 1]), probs_for([0, 0, 1, 1, 2]), GENRES)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["per_genre"]["a"] == pytest.approx(
        {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3, "mean_certainty": math.log10(0.7 / 0.15)}
    )
    assert m["per_genre"]["b"]["precision"] == pytest.approx(1 / 2)
    assert m["per_genre"]["b"]["recall"] == pytest.approx(1 / 2)
    assert m["per_genre"]["c"]["support"] == 0
    assert m["per_genre"]["c"]["recall"] is None and m["per_genre"]["c"]["mean_certainty"] is None
    assert m["per_genre"]["c"]["precision"] == 0.0  # predicted once, never right
    # balanced accuracy: mean recall over genres WITH support: (2/3 + 1/2) / 2
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 0]]


def test_never_predicted_genre_has_no_precision_and_zero_f1():
    m = classification_metrics(np.array([0, 1, 2]), probs_for([0, 0, 0]), GENRES)
    assert m["per_genre"]["b"]["precision"] is None
    assert m["per_genre"]["b"]["recall"] == 0.0 and m["per_genre"]["b"]["f1"] == 0.0


def test_top3_accuracy_counts_the_true_genre_in_the_top_three():
    probs = np.array([[0.5, 0.3, 0.2, 0.0], [0.1, 0.2, 0.3, 0.4]])
    m = classification_metrics(np.array([2, 0]), probs, ("a", "b", "c", "d"))
    assert m["accuracy"] == 0.0
    assert m["top3_accuracy"] == pytest.approx(0.5)


def test_aggregations_can_disagree():
    # one song, three clips: mean prefers b, majority vote prefers a
    clips = pd.DataFrame({"song_id": ["s"] * 3, "p_a": [0.5, 0.5, 0.0], "p_b": [0.4, 0.4, 1.0], "p_c": [0.1, 0.1, 0.0]})
    out = aggregation_comparison(clips, pd.Series({"s": "a"}), GENRES)
    assert out["vote"]["song_accuracy"] == 1.0
    assert out["mean"]["song_accuracy"] == 0.0


def test_evaluate_tables_and_true_rank():
    songs = pd.DataFrame(
        {
            "song_id": ["s1", "s2"],
            "path": ["x/1", "x/2"],
            "genre": ["a", "c"],
            "confidence": [0.6, 0.5],
            "certainty": [0.1, 0.2],
            "p_a": [0.6, 0.2],
            "p_b": [0.3, 0.3],
            "p_c": [0.1, 0.5],
        }
    )
    clips = pd.DataFrame(
        {
            "song_id": ["s1", "s2", "s2"],
            "path": ["x/1", "x/2", "x/2"],
            "p_a": [0.6, 0.2, 0.2],
            "p_b": [0.3, 0.3, 0.3],
            "p_c": [0.1, 0.5, 0.5],
        }
    )
    labels = pd.Series({"x/1": "a", "x/2": "b"})
    metrics, frame = evaluate_tables(songs, clips, labels, GENRES)
    assert (metrics["n_songs"], metrics["n_clips"]) == (2, 3)
    assert metrics["song_accuracy"] == 0.5 and metrics["clip_accuracy"] == pytest.approx(1 / 3)
    assert frame["true_rank"].tolist() == [1, 2]
    assert frame["correct"].tolist() == [True, False]
    assert song_frame(songs, labels, GENRES)["label"].tolist() == ["a", "b"]
