"""Training steps with no Ray in them: a batch of featurized songs exploded into one row per clip, the
learning-rate schedules, what each training worker saw and ended with, scoring on the valid split, calibration
of a fitted classic model, the epoch line."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np
import torch

from mgr_batch.config import OptimConfig

log = logging.getLogger(__name__)


def explode_clips(
    batch: dict[str, np.ndarray],
    *,
    genres: tuple[str, ...],
    split: str,
    shape: tuple[int, int] | None = None,
) -> dict[str, np.ndarray]:
    """Per-song featurized rows of ``split`` -> one row per clip for training.

    Keeps songs with ``status == "ok"``; returns ``features`` (n, n_features, n_steps) float32, ``label``
    (n,) int64 (index into ``genres``), ``song_id``, ``clip_index`` and the int64 keys :func:`clip_key` and
    :func:`song_key`. Every clip has the same (n_features, n_steps), so Ray Data stores ``features`` as a
    fixed-shape tensor column; with ``shape`` given, a song whose clips have another shape is an error, and
    a batch with no row of ``split`` still has that shape.
    """
    index = {g: i for i, g in enumerate(genres)}
    keep = [i for i in range(len(batch["path"])) if batch["status"][i] == "ok" and batch["split"][i] == split]
    feats = [np.asarray(batch["features"][i]) for i in keep]
    counts = [len(f) for f in feats]
    if shape is not None:
        for i, f in zip(keep, feats, strict=True):
            if f.shape[1:] != tuple(shape):
                raise ValueError(f"features of {batch['path'][i]} have shape {f.shape[1:]}, not {tuple(shape)}")
    if not keep:
        if shape is None:
            shape = np.asarray(batch["features"][0]).shape[1:] if len(batch["features"]) else (0, 0)
        return {
            "features": np.zeros((0, *shape), np.float32),
            "label": np.zeros(0, np.int64),
            "song_id": np.zeros(0, dtype=str),
            "clip_index": np.zeros(0, np.int32),
            "clip_key": np.zeros(0, np.int64),
            "song_key": np.zeros(0, np.int64),
        }
    song_ids = [str(batch["song_id"][i]) for i in keep]
    clip_index = np.concatenate([np.arange(c, dtype=np.int32) for c in counts])
    song_id = np.repeat(song_ids, counts)
    return {
        "features": np.concatenate(feats).astype(np.float32, copy=False),
        "label": np.repeat([index[str(batch["label"][i])] for i in keep], counts).astype(np.int64),
        "song_id": song_id,
        "clip_index": clip_index,
        "clip_key": np.array([clip_key(s, int(c)) for s, c in zip(song_id, clip_index, strict=True)], np.int64),
        "song_key": np.repeat([song_key(s) for s in song_ids], counts).astype(np.int64),
    }


def song_key(song_id: str) -> int:
    """A 63-bit key of ``song_id``, the same in every process and run."""
    return _key(song_id)


def clip_key(song_id: str, clip_index: int) -> int:
    """A 63-bit key of clip ``clip_index`` of ``song_id``, the same in every process and run."""
    return _key(f"{song_id}#{clip_index}")


def _key(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def xor_digest(keys: np.ndarray) -> int:
    """The XOR of int64 ``keys`` (n,): two workers' digests XOR to the whole set's when they saw disjoint parts."""
    return int(np.bitwise_xor.reduce(np.asarray(keys, np.int64))) if len(keys) else 0


class ShardTally:
    """What one training worker saw in an epoch: clips, distinct songs and the XOR digest of its clip keys."""

    def __init__(self) -> None:
        self.clips = 0
        self.digest = 0
        self.songs: set[int] = set()

    def add(self, clip_keys: np.ndarray, song_keys: np.ndarray) -> None:
        """Count one batch: its ``clip_key`` and ``song_key`` columns, (n,) int64 each."""
        self.clips += len(clip_keys)
        self.digest ^= xor_digest(clip_keys)
        self.songs.update(np.asarray(song_keys).tolist())

    def record(self, rank: int, model: torch.nn.Module) -> dict[str, Any]:
        """The worker's entry of the run record: ``rank``, ``clips``, ``songs``, ``clips_digest`` (16 hex
        digits) and ``weights`` (:func:`weights_digest` of ``model`` at the end of the epoch)."""
        return {
            "rank": rank,
            "clips": self.clips,
            "songs": len(self.songs),
            "clips_digest": f"{self.digest:016x}",
            "weights": weights_digest(model),
        }


def weights_digest(model: torch.nn.Module) -> str:
    """16 hex digits that change with any parameter of ``model`` (names, shapes and values; buffers such as
    batch norm's running statistics left out)."""
    h = hashlib.blake2b(digest_size=8)
    for name, p in unwrap(model).named_parameters():
        t = p.detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def lr_schedule(opt: torch.optim.Optimizer, optim: OptimConfig, *, steps_per_epoch: int):
    """The scheduler ``optim.schedule`` names and whether it steps per batch (else per epoch).

    ``cyclic`` and ``onecycle`` step per batch, so a worker must see about ``steps_per_epoch`` batches an
    epoch (the one-cycle schedule is sized with some slack and stays at its floor past the end).
    """
    if optim.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, optim.epochs)), False
    if optim.schedule == "constant":
        return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0), False
    if optim.schedule == "cyclic":
        half = max(1, int(round(optim.cycle_epochs * steps_per_epoch / 2)))
        return torch.optim.lr_scheduler.CyclicLR(
            opt, base_lr=optim.lr / 10, max_lr=optim.lr, step_size_up=half, cycle_momentum=False
        ), True
    total = int(optim.epochs * steps_per_epoch * 1.1) + 1
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=optim.lr, total_steps=total, cycle_momentum=False), True


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside a DistributedDataParallel wrapper (``model`` itself when unwrapped)."""
    return model.module if hasattr(model, "module") else model


def song_level_summary(model, clips: dict[str, np.ndarray]) -> dict[str, float]:
    """Song accuracy and balanced accuracy of a song-level head on ``clips`` (its pooled rows per song)."""
    from sklearn.metrics import balanced_accuracy_score

    songs, first = np.unique(clips["song_id"], return_index=True)
    pred = np.array([model.predict_song_proba(clips["features"][clips["song_id"] == s]).argmax() for s in songs])
    truth = clips["label"][first]
    return {
        "song_accuracy": float((pred == truth).mean()),
        "song_balanced_accuracy": float(balanced_accuracy_score(truth, pred)),
    }


def epoch_line(metrics: dict[str, Any], n_epochs: int) -> str:
    """``epoch 3/10: train loss 1.2340, valid song accuracy 61.0%, valid clip accuracy 55.2%``."""
    parts = [f"train loss {metrics['train_loss']:.4f}"]
    parts += [
        f"valid {k[len('valid_') :].replace('_', ' ')} {100 * v:.1f}%"
        for k, v in metrics.items()
        if k.startswith("valid_") and k.endswith("accuracy")
    ]
    return f"epoch {metrics['epoch']}/{n_epochs}: " + ", ".join(parts)
