"""Which clips of a song a model sees: every window, those of the representative segment, or random crops."""

from __future__ import annotations

import hashlib

import numpy as np

from mgr_batch.clips import segmentation
from mgr_batch.clips import windows as clips
from mgr_batch.config import ClipConfig


def select_clips(
    y: np.ndarray, *, sr: int, cfg: ClipConfig, training: bool = False, song_id: str = ""
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut a song into clips: all windows, those in its representative segment, or random crops.

    Returns ``(clips (n_clips, clip_samples), starts (n_clips,) s, spans (n_spans, 2) s)``, where
    ``spans`` are the parts of the song the clips were taken from. A representative segment shorter
    than half a clip still yields one clip: the one nearest its middle. ``select="random"`` applies only
    when ``training``: ``cfg.crops`` crops at offsets drawn from a generator seeded by ``song_id``
    (the same crops on every run); otherwise it falls back to fixed windows.
    """
    if cfg.select == "random" and training:
        return random_crops(y, sr=sr, clip_seconds=cfg.clip_seconds, crops=cfg.crops, song_id=song_id)
    song_clips, starts = clips.cut(y, sr=sr, clip_seconds=cfg.clip_seconds, hop_seconds=cfg.hop)
    if cfg.select != "representative":
        return song_clips, starts, np.array([[0.0, len(y) / sr]])
    seg = segmentation.representative(y, sr=sr, cfg=cfg.segmentation)
    keep = seg.clip_mask(starts, cfg.clip_seconds)
    if not keep.any():
        middle = 0.5 * (seg.spans[0][0] + seg.spans[0][1])
        keep[np.argmin(np.abs(starts + cfg.clip_seconds / 2 - middle))] = True
    return song_clips[keep], starts[keep], np.array(seg.spans, dtype=np.float64).reshape(-1, 2)


def random_crops(
    y: np.ndarray, *, sr: int, clip_seconds: float, crops: int, song_id: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``crops`` windows of ``clip_seconds`` at random sample offsets (sorted), seeded by ``song_id``.

    Returns ``(clips (crops, clip_samples), starts (crops,) s, spans (1, 2) s)``; a song shorter than
    one clip gives its one zero-padded clip.
    """
    n = int(round(clip_seconds * sr))
    if len(y) <= n:
        song_clips, starts = clips.cut(y, sr=sr, clip_seconds=clip_seconds, hop_seconds=clip_seconds)
        return song_clips, starts, np.array([[0.0, len(y) / sr]])
    seed = int.from_bytes(hashlib.sha1(song_id.encode()).digest()[:8], "little")
    offsets = np.sort(np.random.default_rng(seed).integers(0, len(y) - n + 1, size=crops))
    song_clips = np.stack([y[o : o + n] for o in offsets]).astype(np.float32, copy=False)
    return song_clips, offsets / sr, np.array([[0.0, len(y) / sr]])
