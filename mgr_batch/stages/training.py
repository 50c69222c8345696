"""Training rows: a batch of featurized songs exploded into one row per clip."""

from __future__ import annotations

import numpy as np


def explode_clips(batch: dict[str, np.ndarray], *, genres: tuple[str, ...], split: str) -> dict[str, np.ndarray]:
    """Per-song featurized rows of ``split`` -> one row per clip for training.

    Keeps songs with ``status == "ok"``; returns ``features`` (n, n_mels, n_frames) float32, ``label``
    (n,) int64 (index into ``genres``), ``song_id`` and ``clip_index``.
    """
    index = {g: i for i, g in enumerate(genres)}
    keep = [i for i in range(len(batch["path"])) if batch["status"][i] == "ok" and batch["split"][i] == split]
    feats = [batch["features"][i] for i in keep]
    counts = [len(f) for f in feats]
    if not keep:
        shape = np.asarray(batch["features"][0]).shape[1:] if len(batch["features"]) else (0, 0)
        return {
            "features": np.zeros((0, *shape), np.float32),
            "label": np.zeros(0, np.int64),
            "song_id": np.zeros(0, dtype=str),
            "clip_index": np.zeros(0, np.int32),
        }
    return {
        "features": np.concatenate(feats).astype(np.float32, copy=False),
        "label": np.repeat([index[str(batch["label"][i])] for i in keep], counts).astype(np.int64),
        "song_id": np.repeat([str(batch["song_id"][i]) for i in keep], counts),
        "clip_index": np.concatenate([np.arange(c, dtype=np.int32) for c in counts]),
    }
