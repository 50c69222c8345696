"""The tagging graph: listing -> decode+featurize (CPU tasks) -> inference (actor pool) -> Parquet."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from typing import Any

import pandas as pd
import ray

from mgr_batch import checkpoint, storage
from mgr_batch.checkpoint import ModelSpec
from mgr_batch.config import ClipConfig, InferenceConfig, TagConfig, dump_yaml, redacted, to_dict
from mgr_batch.errors import ConfigError
from mgr_batch.execution.runtime import DECODE_MAX_CALLS, dataset_from_listing, ray_session
from mgr_batch.schemas import TABLES
from mgr_batch.stages import LISTING_COLUMNS, Predictor, featurize_batch
from mgr_batch.writer import write_tables

log = logging.getLogger(__name__)


def featurized(files, *, spec: ModelSpec, clip_cfg: ClipConfig, inference: InferenceConfig,
               storage_options: dict[str, Any] | None) -> ray.data.Dataset:  # fmt: skip
    """Dataset of per-song rows with ``features`` (see :func:`mgr_batch.stages.featurize_batch`)."""
    ds = dataset_from_listing(files, rows_per_block=inference.songs_per_task)
    return ds.map_batches(
        featurize_batch,
        fn_kwargs=dict(audio=spec.audio, clip_cfg=clip_cfg, feature_cfg=spec.features, storage_options=storage_options),
        batch_size=inference.songs_per_task,
        batch_format="numpy",
        num_cpus=1,
        max_calls=DECODE_MAX_CALLS,
    )


def predicted(ds: ray.data.Dataset, *, model: str | None, inference: InferenceConfig,
              storage_options: dict[str, Any] | None) -> ray.data.Dataset:  # fmt: skip
    """Adds ``clip_probs`` with an actor pool that loads the model once per actor."""
    return ds.map_batches(
        Predictor,
        fn_constructor_args=(model,),
        fn_constructor_kwargs=dict(storage_options=storage_options, batch_size=inference.batch_size),
        batch_size=inference.songs_per_task,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=inference.num_workers),
        num_gpus=inference.num_gpus or None,
    )


def tag_files(files: pd.DataFrame, *, spec: ModelSpec, model: str | None, clip_cfg: ClipConfig,
              inference: InferenceConfig, output: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """Run the tagging graph over listed ``files`` (inside a Ray session); returns the counts.

    Writes songs/, clips/ and errors/ under ``output``; fails if any file is missing from both.
    """
    ds = featurized(files, spec=spec, clip_cfg=clip_cfg, inference=inference, storage_options=storage_options)
    return tag_featurized(ds, len(files), spec=spec, model=model, clip_cfg=clip_cfg, inference=inference,
                          output=output, storage_options=storage_options)  # fmt: skip


def tag_featurized(ds: ray.data.Dataset, n_files: int, *, spec: ModelSpec, model: str | None, clip_cfg: ClipConfig,
                   inference: InferenceConfig, output: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """The rest of the tagging graph (inference, tables) over already featurized songs."""
    ds = predicted(ds, model=model, inference=inference, storage_options=storage_options)
    ds = ds.map_batches(
        write_tables,
        fn_kwargs=dict(output=output, genres=spec.genres, model_id=spec.model_id,
                       clip_seconds=clip_cfg.clip_seconds, storage_options=storage_options),  # fmt: skip
        batch_size=None,
        batch_format="numpy",
        num_cpus=0.25,
    )
    totals: Counter = Counter()
    error_types: Counter = Counter()
    for row in ds.take_all():  # one small summary row per written batch
        for key in ("n_songs", "n_errors", "n_clips", "audio_s"):
            totals[key] += row[key]
        error_types.update(json.loads(row["error_types"]))
    counts = {
        "n_songs": int(totals["n_songs"]),
        "n_errors": int(totals["n_errors"]),
        "n_clips": int(totals["n_clips"]),
        "errors_by_type": dict(sorted(error_types.items())),
        "audio_seconds": round(float(totals["audio_s"]), 3),
    }
    if counts["n_songs"] + counts["n_errors"] != n_files:
        raise RuntimeError(f"lost files: {n_files} listed, {counts['n_songs']} songs + {counts['n_errors']} errors")
    return counts


def run_tag(cfg: TagConfig) -> dict[str, Any]:
    """Tag every audio file under ``cfg.input``; writes songs/, clips/, errors/, run.json, config.yaml."""
    started = time.time()
    so = cfg.storage_options
    listing = storage.list_inputs(cfg.input, so)
    spec = checkpoint.load_spec(cfg.model, so)  # fail fast, on the driver, for a bad --model
    # The model fixes the clip length; the hop is the user's (back-to-back clips unless told otherwise).
    clip_cfg = cfg.clips or ClipConfig(clip_seconds=spec.clips.clip_seconds)
    check_output_free(cfg.output, so)
    files = listing.files[list(LISTING_COLUMNS)]
    if listing.ignored:
        log.warning("ignoring %d non-audio file(s) in %s, e.g. %s", len(listing.ignored), cfg.input, listing.ignored[0])
    log.info("tagging %d file(s) with model %s", len(files), spec.model_id)
    with ray_session(cfg.ray):
        counts = tag_files(files, spec=spec, model=cfg.model, clip_cfg=clip_cfg, inference=cfg.inference,
                           output=cfg.output, storage_options=so)  # fmt: skip
    summary = {
        "model_id": spec.model_id,
        "input": cfg.input,
        "output": cfg.output,
        "n_files": len(files),
        **counts,
        "ignored_non_audio_files": len(listing.ignored),
        "wall_seconds": round(time.time() - started, 3),
        "clips": to_dict(clip_cfg),
        "config": to_dict(redacted(cfg)),
    }
    storage.write_bytes_atomic(storage.join(cfg.output, "run.json"), json.dumps(summary, indent=2).encode(), so)
    storage.write_bytes_atomic(storage.join(cfg.output, "config.yaml"), dump_yaml(redacted(cfg)).encode(), so)
    return summary


def check_output_free(output: str, storage_options: dict[str, Any] | None) -> None:
    fs, path = storage.filesystem(output, storage_options)
    taken = [t for t in TABLES if fs.exists(storage.join(path, t))]
    if taken:
        raise ConfigError(f"output {output!r} already holds {', '.join(taken)}/ from an earlier run; choose another --output")
