"""The segmentation stage: decode a song, find its segments and representative one, draw its figure."""

from __future__ import annotations

from typing import Any

import numpy as np

from mgr_batch.clips import segmentation
from mgr_batch.config import AudioConfig, SegmentationConfig
from mgr_batch.io import audio as audio_io
from mgr_batch.plots.segmentation import segmentation_png
from mgr_batch.stages.decode import (
    per_song,
)

#: Columns :func:`segment_batch` adds.
SEGMENT_COLUMNS = (
    "status",
    "duration_s",
    "seg_start_s",
    "seg_end_s",
    "seg_cluster",
    "seg_representative",
    "plot_png",
    "error_stage",
    "error_type",
    "error_message",
)


def segment_batch(
    batch: dict[str, np.ndarray],
    *,
    audio: AudioConfig,
    seg_cfg: SegmentationConfig,
    plot: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Decode each listed file and segment it (:func:`mgr_batch.clips.segmentation.representative`).

    Adds :data:`SEGMENT_COLUMNS`: per song, its segments' starts, ends (s), clusters and whether each is
    representative (ragged, one entry per segment), and with ``plot`` the figure as PNG bytes.
    """

    def ok(decoded: audio_io.Decoded, i: int) -> dict[str, Any]:
        seg = segmentation.representative(decoded.y, sr=audio.sr, cfg=seg_cfg)
        spans = np.array(seg.spans).reshape(-1, 2)
        bounds = np.array([(lo, hi) for lo, hi, _ in seg.segments]).reshape(-1, 2)
        inside = [bool(((spans[:, 0] < hi) & (spans[:, 1] > lo)).any()) for lo, hi in bounds]
        return dict(
            duration_s=decoded.duration,
            seg_start_s=bounds[:, 0],
            seg_end_s=bounds[:, 1],
            seg_cluster=np.array([c for _, _, c in seg.segments], np.int32),
            seg_representative=np.array(inside, bool),
            plot_png=segmentation_png(seg, decoded.y, audio.sr) if plot else b"",
        )

    failed = dict(
        duration_s=0.0,
        seg_start_s=np.zeros(0),
        seg_end_s=np.zeros(0),
        seg_cluster=np.zeros(0, np.int32),
        seg_representative=np.zeros(0, bool),
        plot_png=b"",
    )
    return per_song(batch, audio, storage_options, ok, failed, typed={"duration_s": np.float64})
