"""The tagging graph: listing -> decode+featurize (CPU tasks) -> inference (actor pool) -> Parquet."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from typing import Any

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


def run_tag(cfg: TagConfig) -> dict[str, Any]:
    """Tag every audio file under ``cfg.input``; writes songs/, clips/, errors/, run.json, config.yaml."""
    started = time.time()
    so = cfg.storage_options
    listing = storage.list_inputs(cfg.input, so)
    spec = checkpoint.load_spec(cfg.model, so)  # fail fast, on the driver, for a bad --model
    # The model fixes the clip length; the hop is the user's (back-to-back clips unless told otherwise).
    clip_cfg = cfg.clips or ClipConfig(clip_seconds=spec.clips.clip_seconds)
    _check_output_free(cfg.output, so)
    files = listing.files[list(LISTING_COLUMNS)]
    if listing.ignored:
        log.warning("ignoring %d non-audio file(s) in %s, e.g. %s", len(listing.ignored), cfg.input, listing.ignored[0])
    log.info("tagging %d file(s) with model %s", len(files), spec.model_id)
    with ray_session(cfg.ray):
        ds = featurized(files, spec=spec, clip_cfg=clip_cfg, inference=cfg.inference, storage_options=so)
        ds = predicted(ds, model=cfg.model, inference=cfg.inference, storage_options=so)
        ds = ds.map_batches(
            write_tables,
            fn_kwargs=dict(output=cfg.output, genres=spec.genres, model_id=spec.model_id,
                           clip_seconds=clip_cfg.clip_seconds, storage_options=so),  # fmt: skip
            batch_size=None,
            batch_format="numpy",
            num_cpus=0.25,
        )
        summaries = ds.take_all()
    counts = Counter()
    error_types: Counter = Counter()
    for row in summaries:
        for key in ("n_songs", "n_errors", "n_clips", "audio_s"):
            counts[key] += row[key]
        error_types.update(json.loads(row["error_types"]))
    summary = {
        "model_id": spec.model_id,
        "input": cfg.input,
        "output": cfg.output,
        "n_files": len(files),
        "n_songs": int(counts["n_songs"]),
        "n_errors": int(counts["n_errors"]),
        "n_clips": int(counts["n_clips"]),
        "errors_by_type": dict(sorted(error_types.items())),
        "ignored_non_audio_files": len(listing.ignored),
        "audio_seconds": round(float(counts["audio_s"]), 3),
        "wall_seconds": round(time.time() - started, 3),
        "clips": to_dict(clip_cfg),
        "config": to_dict(redacted(cfg)),
    }
    if summary["n_songs"] + summary["n_errors"] != summary["n_files"]:
        raise RuntimeError(f"lost files: {summary['n_files']} listed, {summary['n_songs']} songs + {summary['n_errors']} errors")
    storage.write_bytes_atomic(storage.join(cfg.output, "run.json"), json.dumps(summary, indent=2).encode(), so)
    storage.write_bytes_atomic(storage.join(cfg.output, "config.yaml"), dump_yaml(redacted(cfg)).encode(), so)
    return summary


def _check_output_free(output: str, storage_options: dict[str, Any] | None) -> None:
    fs, path = storage.filesystem(output, storage_options)
    taken = [t for t in TABLES if fs.exists(storage.join(path, t))]
    if taken:
        raise ConfigError(f"output {output!r} already holds {', '.join(taken)}/ from an earlier run; choose another --output")
