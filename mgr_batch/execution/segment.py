"""The segmentation graph: listing -> decode + segment (CPU tasks) -> segments/ and errors/ tables."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from mgr_batch.config import SegmentConfig, redacted, to_dict
from mgr_batch.errors import ConfigError
from mgr_batch.execution.progress import Progress
from mgr_batch.execution.records import check_every_file_accounted, write_run_record
from mgr_batch.execution.runtime import DECODE_MAX_CALLS, dataset_from_listing, ray_session
from mgr_batch.io import output, storage
from mgr_batch.io.writer import write_segments
from mgr_batch.stages.decode import LISTING_COLUMNS
from mgr_batch.stages.segment import segment_batch


def run_segment(cfg: SegmentConfig) -> dict[str, Any]:
    """Segment every audio file of ``cfg.input``; writes segments/, errors/, plots/ (with ``plot``), run.json."""
    started = time.time()
    so = cfg.storage_options
    files = storage.list_inputs(cfg.input, so, extensions=cfg.extensions).files[list(LISTING_COLUMNS)]
    fs, root = storage.filesystem(cfg.output, so)
    if any(fs.exists(storage.join(root, t)) for t in ("segments", "errors")):
        raise ConfigError(f"output {cfg.output!r} already holds segments/ or errors/ from an earlier run")
    with ray_session(cfg.ray):
        ds = dataset_from_listing(files, songs_per_task=cfg.inference.songs_per_task)
        ds = ds.map_batches(
            segment_batch,
            fn_kwargs=dict(audio=cfg.audio, seg_cfg=cfg.segmentation, plot=cfg.plot, storage_options=so),
            batch_size=cfg.inference.songs_per_task,
            batch_format="numpy",
            num_cpus=1,
            max_calls=DECODE_MAX_CALLS,
        )
        ds = ds.map_batches(
            write_segments,
            fn_kwargs=dict(output=cfg.output, storage_options=so),
            batch_size=None,
            batch_format="numpy",
            num_cpus=0.25,
        )
        rows = []
        with Progress(len(files), desc="segment") as progress:
            for row in ds.iter_rows():  # one summary row per written batch, as it is written
                rows.append(row)
                progress.update(
                    files=int(row["n_songs"] + row["n_errors"]),
                    errors=int(row["n_errors"]),
                    audio_s=float(row["audio_s"]),
                )
    errors: Counter = Counter()
    for row in rows:
        errors.update(json.loads(row["error_types"]))
    summary = {
        "input": cfg.input,
        "output": cfg.output,
        "n_files": len(files),
        "n_songs": int(sum(r["n_songs"] for r in rows)),
        "n_errors": int(sum(r["n_errors"] for r in rows)),
        "n_segments": int(sum(r["n_segments"] for r in rows)),
        "errors_by_type": dict(sorted(errors.items())),
        "wall_seconds": round(time.time() - started, 3),
        "config": to_dict(redacted(cfg)),
    }
    check_every_file_accounted(len(files), summary["n_songs"], summary["n_errors"])
    output.ensure_tables(cfg.output, ("segments", "errors"), (), so)
    write_run_record(cfg.output, summary, cfg, so)
    return summary
