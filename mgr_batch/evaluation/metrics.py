"""Accuracy at clip and song level (songs aggregate their clips)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from mgr_batch.io.aggregate import song_probabilities


def song_predictions(
    clip_probs: np.ndarray, song_ids: np.ndarray, labels: np.ndarray, *, method: str = "mean"
) -> pd.DataFrame:
    """One row per song: ``song_id``, ``label`` and ``probs`` (n_genres,) aggregated from its clips.

    ``clip_probs`` is (n_clips, n_genres); ``song_ids`` and ``labels`` (int) are (n_clips,).
    """
    frame = pd.DataFrame({"song_id": song_ids, "label": labels, "row": np.arange(len(song_ids))})
    rows = []
    for sid, group in frame.groupby("song_id", sort=True):
        rows.append(
            {
                "song_id": sid,
                "label": int(group["label"].iloc[0]),
                "probs": song_probabilities(clip_probs[group["row"].to_numpy()], method=method),
            }
        )
    return pd.DataFrame(rows, columns=["song_id", "label", "probs"])


def accuracy_summary(clip_probs: np.ndarray, song_ids: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Clip accuracy, song accuracy and song balanced accuracy (mean per-genre recall), with counts."""
    if len(labels) == 0:
        return {}
    songs = song_predictions(clip_probs, song_ids, labels)
    pred = np.stack(songs["probs"].to_numpy()).argmax(axis=1)
    return {
        "clip_accuracy": float((clip_probs.argmax(axis=1) == labels).mean()),
        "song_accuracy": float((pred == songs["label"].to_numpy()).mean()),
        "song_balanced_accuracy": float(balanced_accuracy_score(songs["label"], pred)),
        "n_songs": len(songs),
        "n_clips": len(labels),
    }


def evaluate_valid(model, valid, device) -> dict[str, float]:
    """Clip and song accuracy of ``model`` on the whole valid dataset iterator (batches of ``features`` (n, n_features, n_steps), ``song_id``, ``label``)."""
    import torch

    model.eval()
    probs, sids, labels = [], [], []
    with torch.inference_mode():
        for batch in valid.iter_batches(batch_size=256, batch_format="numpy"):
            x = torch.from_numpy(np.ascontiguousarray(batch["features"], dtype=np.float32)).to(device)
            probs.append(torch.softmax(model(x), dim=-1).cpu().numpy())
            sids.append(batch["song_id"])
            labels.append(batch["label"])
    model.train()
    if not probs:
        return {}
    return accuracy_summary(np.concatenate(probs), np.concatenate(sids), np.concatenate(labels))
