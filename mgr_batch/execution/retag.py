"""``retag``: a head applied to the stored vectors of a tag output through Ray Data over Parquet, no audio read."""

from __future__ import annotations

import time
from typing import Any

import pyarrow.parquet as pq

from mgr_batch.config import to_dict
from mgr_batch.config.outputs import RetagConfig
from mgr_batch.errors import ConfigError
from mgr_batch.execution.relabel import PREDICTION_COLUMNS, feature_ids
from mgr_batch.io import output, schemas, storage
from mgr_batch.models import checkpoint
from mgr_batch.models.checkpoint import ModelSpec
from mgr_batch.stages import vectors as sv


def check_retag(cfg: RetagConfig) -> tuple[ModelSpec, sv.VectorKind]:
    """The head's spec and vector kind, refused (one line) unless ``cfg.tagged``'s vectors are of that kind."""
    so = cfg.storage_options
    if storage.join(cfg.tagged, "") == storage.join(cfg.output, ""):
        raise ConfigError("retag --output must be another folder than OUT (OUT's own songs stay as they are)")
    spec = checkpoint.load_spec(cfg.model, so)
    kind = sv.head_kind(spec)
    if kind is None:
        raise ConfigError(
            f"model {spec.model_id} ({spec.model.name} on {spec.features.kind}) does not read one stored vector per "
            "song: retag takes a song-level head on pre-trained embeddings (the default, or one from train --labels)"
        )
    found = feature_ids(cfg.tagged, so)
    if kind.feature_id not in found:
        held = "; ".join(f"{i} ({d})" for i, d in found.items()) or "none"
        raise ConfigError(
            f"model {spec.model_id} reads vectors {kind.feature_id} ({kind.description}); {cfg.tagged} holds {held}"
        )
    fs, root = storage.filesystem(storage.join(cfg.output, "clips"), so)
    if fs.exists(root):
        raise ConfigError(f"retag --output {cfg.output!r} holds a clips/ table: it is a tag output, not retag's own")
    return spec, kind


def run_retag(cfg: RetagConfig) -> dict[str, Any]:
    """Write ``cfg.output``/songs: every song of ``cfg.tagged`` with a stored vector of the head's kind, its
    prediction columns from the head (:class:`mgr_batch.stages.vectors.RetagStage`) and every other column
    copied from the tag output's songs table. Ray Data reads the embeddings parts, applies the head in tasks
    (loaded once per worker), joins the predictions with the songs rows by ``song_id`` and writes songs
    parts as ``tag`` does (part names from the song ids, whole parts only, model and genres in the metadata)."""
    import ray
    from ray.data.expressions import col

    from mgr_batch.execution.cache import call_cached
    from mgr_batch.execution.runtime import ray_session
    from mgr_batch.io.writer import write_songs

    started = time.time()
    so = cfg.storage_options
    spec, kind = check_retag(cfg)
    emb_fs, emb_paths = output.parts(cfg.tagged, "embeddings", so)
    songs_fs, songs_paths = output.parts(cfg.tagged, "songs", so)
    songs_names = pq.read_schema(songs_fs.open(songs_paths[0], "rb")).names if songs_paths else []
    keep = [c for c in songs_names if c not in PREDICTION_COLUMNS and not c.startswith(schemas.PROBABILITY_PREFIX)]
    for table in ("songs",):
        out_fs, out_root = storage.filesystem(storage.join(cfg.output, table), so)
        if out_fs.exists(out_root):
            out_fs.rm(out_root, recursive=True)
    with ray_session(cfg.ray):
        vectors = (
            ray.data.read_parquet(emb_paths, filesystem=_arrow_fs(emb_fs))
            .select_columns(["song_id", "feature_id", "vector"])
            .filter(expr=col("feature_id") == kind.feature_id)
        )
        predicted = vectors.map_batches(
            call_cached,
            fn_kwargs=dict(stage=sv.RetagStage, kwargs={"model_uri": cfg.model, "storage_options": so}),
            batch_size=cfg.rows_per_batch,
            batch_format="pyarrow",
        )
        songs = ray.data.read_parquet(songs_paths, filesystem=_arrow_fs(songs_fs)).select_columns(keep)
        n_partitions = max(1, min(cfg.join_partitions, len(songs_paths)))
        joined = songs.join(predicted, join_type="inner", num_partitions=n_partitions, on=("song_id",))
        written = joined.map_batches(
            write_songs,
            fn_kwargs=dict(output=cfg.output, genres=spec.genres, model_id=spec.model_id, storage_options=so),
            batch_size=cfg.rows_per_batch,
            batch_format="pyarrow",
        )
        n_songs = sum(int(r["n_songs"]) for r in written.iter_rows())
    total = sum(pq.ParquetFile(songs_fs.open(p, "rb")).metadata.num_rows for p in songs_paths)
    summary = {
        "model_id": spec.model_id,
        "tagged": cfg.tagged,
        "output": cfg.output,
        "feature_id": kind.feature_id,
        "feature": kind.description,
        "n_songs": n_songs,
        "n_songs_without_vector": int(total - n_songs),
        "wall_seconds": round(time.time() - started, 3),
        "config": to_dict(cfg),
    }
    from mgr_batch.execution.records import write_run_record

    write_run_record(cfg.output, summary, cfg, so)
    return summary


def _arrow_fs(fs: Any) -> Any:
    import pyarrow.fs

    if type(fs).__name__ == "LocalFileSystem":
        return pyarrow.fs.LocalFileSystem()
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))


def retag_summary(r: dict[str, Any]) -> list[str]:
    missing = f"; {r['n_songs_without_vector']} songs of OUT had no such vector" if r["n_songs_without_vector"] else ""
    return [
        f"Retagged {r['n_songs']} songs of {r['tagged']} with {r['model_id']} from their stored vectors "
        f"in {r['wall_seconds']:.1f} s{missing}",
        f"Tables: songs/ under {r['output']} (Parquet), with run.json",
    ]
