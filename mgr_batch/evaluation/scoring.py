"""Song-level metrics against true labels: accuracy, balanced accuracy, per-genre P/R/F1, confusion."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from mgr_batch.evaluation import calibration as cal
from mgr_batch.io import schemas
from mgr_batch.stages.aggregate import certainty, song_probabilities

AGGREGATIONS = ("mean", "vote", "log")


def _nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, genres: tuple[str, ...]) -> dict[str, Any]:
    """Metrics of predictions ``probs`` (n, n_genres) for integer labels ``y_true`` (n,).

    Balanced accuracy is the mean recall over the genres that have support (a genre absent from the
    data has no recall); per-genre precision is ``None`` for a genre never predicted, recall and mean
    certainty are ``None`` for a genre with no support.
    """
    y_true = np.asarray(y_true, dtype=int)
    n_genres = len(genres)
    if len(y_true) == 0:
        return {"n": 0}
    pred = probs.argmax(axis=1)
    labels = list(range(n_genres))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, pred, labels=labels, zero_division=np.nan)
    cert = certainty(probs)
    top3 = np.argsort(-probs, axis=1)[:, :3]
    per_genre = {}
    for j, g in enumerate(genres):
        mask = y_true == j
        per_genre[g] = {
            "precision": _nan_to_none(precision[j]),
            "recall": _nan_to_none(recall[j]) if support[j] else None,
            "f1": _nan_to_none(f1[j]) if support[j] and (pred == j).any() else (0.0 if support[j] else None),
            "support": int(support[j]),
            "mean_certainty": float(cert[mask].mean()) if mask.any() else None,
        }
    recalls = [per_genre[g]["recall"] for g in genres if per_genre[g]["support"]]
    return {
        "n": int(len(y_true)),
        "accuracy": float((pred == y_true).mean()),
        "balanced_accuracy": float(np.mean(recalls)),
        "top3_accuracy": float((top3 == y_true[:, None]).any(axis=1).mean()),
        "per_genre": per_genre,
        "confusion_matrix": confusion_matrix(y_true, pred, labels=labels).tolist(),
    }


def song_frame(songs: pd.DataFrame, labels: pd.Series, genres: tuple[str, ...]) -> pd.DataFrame:
    """The songs table joined with true labels (``labels`` indexed by path): one row per song.

    Adds ``label``, ``predicted`` (= ``genre``), ``correct`` and ``true_rank`` (1 = top-1).
    """
    out = songs.copy()
    out["label"] = out["path"].map(labels).astype(str)
    out["predicted"] = out["genre"]
    out["correct"] = out["label"] == out["predicted"]
    probs = out[schemas.probability_columns(genres)].to_numpy()
    index = {g: i for i, g in enumerate(genres)}
    true_p = probs[np.arange(len(out)), out["label"].map(index).to_numpy()]
    out["true_rank"] = 1 + (probs > true_p[:, None]).sum(axis=1)
    return out


def aggregation_comparison(clips: pd.DataFrame, labels_by_song: pd.Series, genres: tuple[str, ...]) -> dict[str, dict]:
    """Song accuracy and balanced accuracy for each way of pooling clips (mean, vote, log)."""
    cols = schemas.probability_columns(genres)
    index = {g: i for i, g in enumerate(genres)}
    groups = [(sid, g[cols].to_numpy()) for sid, g in clips.groupby("song_id", sort=True)]
    y = np.array([index[labels_by_song[sid]] for sid, _ in groups])
    out = {}
    for method in AGGREGATIONS:
        probs = np.stack([song_probabilities(p, method=method) for _, p in groups])
        m = classification_metrics(y, probs, genres)
        out[method] = {"song_accuracy": m["accuracy"], "song_balanced_accuracy": m["balanced_accuracy"]}
    return out


def calibration_metrics(
    frame: pd.DataFrame, genres: tuple[str, ...], *, temperature: float | None, uncertain_below: float | None
) -> dict[str, Any]:
    """Calibration of a song frame's probabilities (:func:`song_frame`): the expected calibration error (15
    bins) as written (``ece``) and, for a model with a ``temperature``, before it (``ece_uncalibrated``: the
    written probabilities with the temperature undone, exactly), per-bin reliability, and the share of songs
    flagged ``uncertain`` with the accuracy of the rest (None for a model without a threshold)."""
    index = {g: i for i, g in enumerate(genres)}
    y = frame["label"].map(index).to_numpy()
    after = frame[schemas.probability_columns(genres)].to_numpy(np.float64)
    before = cal.apply_temperature(after, 1.0 / temperature) if temperature else after
    flags = cal.flag_summary(after, y, uncertain_below)
    return {
        "bins": cal.ECE_BINS,
        "temperature": temperature,
        "ece_uncalibrated": cal.ece(before, y),
        "ece": cal.ece(after, y),
        "reliability_uncalibrated": cal.reliability(before, y),
        "reliability": cal.reliability(after, y),
        **flags,
    }


def evaluate_tables(
    songs: pd.DataFrame,
    clips: pd.DataFrame,
    labels: pd.Series,
    genres: tuple[str, ...],
    *,
    temperature: float | None = None,
    uncertain_below: float | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """All metrics of a tagged, labelled set: ``(metrics, song_frame)``; ``labels`` is indexed by path.
    ``temperature`` and ``uncertain_below`` are the model's calibration (:func:`calibration_metrics`)."""
    frame = song_frame(songs, labels, genres)
    index = {g: i for i, g in enumerate(genres)}
    y = frame["label"].map(index).to_numpy()
    song_m = classification_metrics(y, frame[schemas.probability_columns(genres)].to_numpy(), genres)
    clip_labels = clips["path"].map(labels).map(index).to_numpy()
    clip_pred = clips[schemas.probability_columns(genres)].to_numpy().argmax(axis=1)
    metrics = {
        "n_songs": int(len(frame)),
        "n_clips": int(len(clips)),
        "song_accuracy": song_m.get("accuracy"),
        "song_balanced_accuracy": song_m.get("balanced_accuracy"),
        "clip_accuracy": float((clip_pred == clip_labels).mean()) if len(clips) else None,
        "song_top3_accuracy": song_m.get("top3_accuracy"),
        "per_genre": song_m.get("per_genre", {}),
        "confusion_matrix": {
            "genres": list(genres),
            "rows": "true genre",
            "columns": "predicted genre",
            "counts": song_m.get("confusion_matrix", []),
        },
        "aggregations": aggregation_comparison(clips, frame.set_index("song_id")["label"], genres)
        if len(clips)
        else {},
        "calibration": calibration_metrics(frame, genres, temperature=temperature, uncertain_below=uncertain_below)
        if len(frame)
        else {},
    }
    return metrics, frame
