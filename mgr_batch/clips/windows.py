"""Song to clips: fixed windows of ``clip_seconds`` every ``hop_seconds`` (lhotse's cut_into_windows)."""

from __future__ import annotations

import numpy as np


def clip_starts(duration: float, *, clip_seconds: float, hop_seconds: float) -> np.ndarray:
    """Start times (s) of the clips of a song of ``duration`` seconds.

    Every window that fits whole is kept; a song shorter than one clip still gives one clip (at 0 s,
    zero-padded by :func:`cut`), so no song is ever dropped. Shape (n_clips,), float64.
    """
    if clip_seconds <= 0 or hop_seconds <= 0:
        raise ValueError("clip_seconds and hop_seconds must be positive")
    n = 1 + int(np.floor((duration - clip_seconds) / hop_seconds + 1e-9)) if duration >= clip_seconds else 1
    return np.arange(n, dtype=np.float64) * hop_seconds


def cut(y: np.ndarray, *, sr: int, clip_seconds: float, hop_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut a mono waveform (n,) into clips (n_clips, clip_samples), zero-padding a short song.

    Returns ``(clips, starts)`` with ``starts`` in seconds, shape (n_clips,).
    """
    clip_samples = int(round(clip_seconds * sr))
    starts = clip_starts(len(y) / sr, clip_seconds=clip_seconds, hop_seconds=hop_seconds)
    if len(y) < clip_samples:
        y = np.pad(y, (0, clip_samples - len(y)))
    offsets = np.round(starts * sr).astype(np.int64)
    offsets = np.minimum(offsets, len(y) - clip_samples)  # guard rounding at the very end
    clips = np.lib.stride_tricks.sliding_window_view(y, clip_samples)[offsets]
    return np.ascontiguousarray(clips, dtype=np.float32), starts
