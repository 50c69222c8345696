"""Predicted batches to the three output tables (songs, clips, errors) as Parquet parts."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from mgr_batch.io import schemas, storage
from mgr_batch.io.aggregate import certainty, song_probabilities
from mgr_batch.io.tags import FILE_TAG_COLUMNS

#: Storage type of the vector column: float16 halves the table; heads agree with float32 (README, Your own genres).
VECTOR_DTYPE = np.float16
#: Parquet key-value metadata of an embeddings part: a JSON mapping of each feature_id it holds to its
#: kind's JSON (:meth:`mgr_batch.stages.vectors.VectorKind.to_json`).
META_KINDS = b"mgr_batch.vector_kinds"


def build_tables(
    batch: dict[str, np.ndarray],
    *,
    genres: tuple[str, ...],
    model_id: str,
    clip_seconds: float,
    aggregation: str = "mean",
    uncertain_below: float | None = None,
) -> dict[str, pa.Table]:
    """Songs, clips and errors tables (in :mod:`mgr_batch.io.schemas` form) of one predicted batch.

    Song probabilities are the batch's ``song_probs`` when the Predictor gave them (a song-level head, a
    calibrated model), else the ``aggregation`` of the song's ``clip_probs``. ``uncertain`` is
    ``certainty < uncertain_below``, or null for every song when the model has no threshold.

    Needs the listing columns, the featurize columns (less ``features``) and ``clip_probs``; a batch with
    the Predictor's ``timeline_probs`` also gets a timeline table (:func:`timeline_table`), one with the
    Embedder's ``embedding`` an embeddings table (:func:`embeddings_table`).
    """
    genres = tuple(genres)
    ok = np.asarray(batch["status"]) == "ok"
    idx = np.flatnonzero(ok)
    g = np.asarray(genres)

    if "song_probs" in batch:  # a song-level head's own (or a calibrated model's) song probabilities
        song_probs = (
            np.stack([np.asarray(batch["song_probs"][i]) for i in idx]) if len(idx) else np.zeros((0, len(genres)))
        )
    else:
        song_probs = (
            np.stack([song_probabilities(batch["clip_probs"][i], method=aggregation) for i in idx])
            if len(idx)
            else np.zeros((0, len(genres)))
        )
    song_certainty = certainty(song_probs) if len(idx) else np.zeros(0)
    order = np.argsort(-song_probs, axis=1, kind="stable")
    songs = {c: batch[c][idx] for c in _copied("songs", batch)}
    songs.setdefault("decode_notes", [""] * len(idx))  # batches featurized without notes (e.g. by hand)
    songs.setdefault("truncated", [False] * len(idx))
    for c in FILE_TAG_COLUMNS:  # the file's own tags: "" (none) or a batch without them is null
        songs[c] = [str(v) if v else None for v in songs[c]] if c in songs else [None] * len(idx)
    songs.update(
        {
            "genre": g[order[:, 0]] if len(idx) else np.zeros(0, str),
            "confidence": song_probs[np.arange(len(idx)), order[:, 0]] if len(idx) else np.zeros(0),
            "certainty": song_certainty,
            # null (unknown) for a model without a threshold; never False by default
            "uncertain": [None] * len(idx) if uncertain_below is None else (song_certainty < uncertain_below).tolist(),
            "top3": [list(g[o[:3]]) for o in order],
            "model_id": [model_id] * len(idx),
        }
    )
    for j, column in enumerate(schemas.probability_columns(genres)):
        songs[column] = song_probs[:, j]

    clip_rows: dict[str, list] = {k: [] for k in ("song_id", "clip_id", "path", "clip_index", "start_s", "end_s")}
    clip_probs = []
    for i in idx:
        starts = np.asarray(batch["clip_start_s"][i], dtype=np.float64)
        k = len(starts)
        sid = str(batch["song_id"][i])
        clip_rows["song_id"] += [sid] * k
        clip_rows["clip_id"] += [f"{sid}-{c:05d}" for c in range(k)]
        clip_rows["path"] += [str(batch["path"][i])] * k
        clip_rows["clip_index"].append(np.arange(k))
        clip_rows["start_s"].append(starts)
        clip_rows["end_s"].append(starts + clip_seconds)
        clip_probs.append(batch["clip_probs"][i])
    cp = np.concatenate(clip_probs) if clip_probs else np.zeros((0, len(genres)), np.float32)
    clips = {k: (np.concatenate(v) if v and isinstance(v[0], np.ndarray) else v) for k, v in clip_rows.items()}
    clips["genre"] = g[cp.argmax(axis=1)] if len(cp) else np.zeros(0, str)
    clips["confidence"] = cp.max(axis=1) if len(cp) else np.zeros(0)
    clips["model_id"] = [model_id] * len(cp)
    for j, column in enumerate(schemas.probability_columns(genres)):
        clips[column] = cp[:, j]

    bad = np.flatnonzero(~ok)
    errors = {c: batch[ERROR_COLUMNS.get(c, c)][bad] for c in _copied("errors", batch)}
    errors["model_id"] = [model_id] * len(bad)
    # Order matters: parts are written in this order, and a songs row must imply its clips (see output.py).
    return {
        "clips": _table(clips, schemas.arrow_schema("clips", genres)),
        "errors": _table(errors, schemas.arrow_schema("errors")),
        **(
            {"timeline": timeline_table(batch, idx, genres=genres, model_id=model_id)}
            if "timeline_probs" in batch
            else {}
        ),
        **({"embeddings": embeddings_table(batch, idx)} if "embedding" in batch else {}),
        "songs": _table(songs, schemas.arrow_schema("songs", genres)),
    }


def timeline_table(
    batch: dict[str, np.ndarray], idx: np.ndarray, *, genres: tuple[str, ...], model_id: str
) -> pa.Table:
    """The timeline table of songs ``idx`` of a batch: one row per step of each clip, in song, clip, step order.

    Needs ``song_id``, ``path`` and the Predictor's ``timeline_probs[i]`` (n_clips, n_steps, n_genres) and
    ``timeline_s[i]`` (n_clips, n_steps).
    """
    n_genres = len(genres)
    cols: dict[str, list] = {k: [] for k in ("song_id", "path", "clip_index", "step_index", "time_s")}
    probs = []
    for i in idx:
        p = np.asarray(batch["timeline_probs"][i], np.float32)
        n_clips, n_steps = p.shape[:2]
        cols["song_id"] += [str(batch["song_id"][i])] * (n_clips * n_steps)
        cols["path"] += [str(batch["path"][i])] * (n_clips * n_steps)
        cols["clip_index"].append(np.repeat(np.arange(n_clips, dtype=np.int32), n_steps))
        cols["step_index"].append(np.tile(np.arange(n_steps, dtype=np.int32), n_clips))
        cols["time_s"].append(np.asarray(batch["timeline_s"][i], np.float64).reshape(-1))
        probs.append(p.reshape(-1, n_genres))
    for k in ("clip_index", "step_index", "time_s"):
        cols[k] = np.concatenate(cols[k]) if cols[k] else np.zeros(0)
    p = np.concatenate(probs) if probs else np.zeros((0, n_genres), np.float32)
    cols["genre"] = np.asarray(genres)[p.argmax(axis=1)] if len(p) else np.zeros(0, str)
    cols["model_id"] = [model_id] * len(p)
    offsets = np.arange(len(p) + 1, dtype=np.int32) * n_genres
    schema = schemas.arrow_schema("timeline")
    arrays = [
        pa.ListArray.from_arrays(pa.array(offsets), pa.array(p.reshape(-1), pa.float32()))
        if f.name == "probabilities"
        else pa.array(cols[f.name], type=f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def embeddings_table(batch: dict[str, np.ndarray], idx: np.ndarray) -> pa.Table:
    """The embeddings table of songs ``idx`` of a batch: one row per song, its stored vector as list<float16>.

    Needs ``song_id``, ``path``, ``n_clips``, ``embedding[i]`` (dims,) and the kind's columns
    (:func:`mgr_batch.stages.vectors.kind_columns`: ``embedding_kind[i]`` as JSON, ``embedding_feature_id[i]``,
    ``embedding_feature[i]``). Each kind's JSON is kept in the part's metadata (:data:`META_KINDS`, a JSON
    mapping of feature_id to it), so that a head can be fitted on the vectors without the model that wrote them.
    """
    ids = {
        str(batch["embedding_kind"][i]): (str(batch["embedding_feature_id"][i]), str(batch["embedding_feature"][i]))
        for i in idx
    }
    vectors = [np.asarray(batch["embedding"][i], VECTOR_DTYPE) for i in idx]
    dims = np.array([len(v) for v in vectors], np.int32)
    cols = {
        "song_id": [str(batch["song_id"][i]) for i in idx],
        "path": [str(batch["path"][i]) for i in idx],
        "feature_id": [ids[str(batch["embedding_kind"][i])][0] for i in idx],
        "feature": [ids[str(batch["embedding_kind"][i])][1] for i in idx],
        "dims": dims,
        "n_clips": np.asarray(batch["n_clips"], np.int32)[idx],
    }
    schema = schemas.arrow_schema("embeddings")
    arrays = [
        vector_array(vectors, dims) if f.name == "vector" else pa.array(cols[f.name], type=f.type) for f in schema
    ]
    meta = {META_KINDS: json.dumps({ids[k][0]: k for k in ids}, sort_keys=True).encode()}
    return pa.Table.from_arrays(arrays, schema=schema.with_metadata(meta))


def vector_array(vectors: list[np.ndarray] | np.ndarray, dims: np.ndarray) -> pa.ListArray:
    """The ``vector`` column of rows of ``dims`` values each (a list of (dims,) arrays, or one (n, dims) array)."""
    offsets = np.concatenate([[0], np.cumsum(dims)]).astype(np.int32)
    flat = np.concatenate([np.ravel(v) for v in vectors]).astype(VECTOR_DTYPE) if len(vectors) else np.zeros(0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.astype(VECTOR_DTYPE), pa.float16()))


#: Nullable columns a batch may lack (null then): the exact bytes of a name that is not UTF-8.
OPTIONAL_INPUTS = frozenset({"path_bytes"})

#: errors-table column -> the featurize column it comes from
ERROR_COLUMNS = {"stage": "error_stage", "message": "error_message"}


def _copied(table: str, batch: dict[str, np.ndarray]) -> list[str]:
    """The columns of ``table``'s schema that come straight from the batch."""
    return [
        c["name"]
        for c in schemas.spec(table)["columns"]
        if ERROR_COLUMNS.get(c["name"], c["name"]) in batch
        and not (table == "songs" and c["name"] in ("genre", "model_id"))
    ]


def _table(columns: dict[str, Any], schema: pa.Schema) -> pa.Table:
    arrays = []
    n = len(next(iter(columns.values()))) if columns else 0
    for f in schema:
        if f.name not in columns and f.name in OPTIONAL_INPUTS:  # batches listed or featurized without it
            arrays.append(pa.nulls(n, f.type))
            continue
        values = columns[f.name]
        if isinstance(values, np.ndarray) and (values.dtype == object or values.ndim > 1):
            # ragged per-row arrays come as an object array, or as one 2-D array when all rows agree
            values = [np.asarray(v).tolist() for v in values]
        arrays.append(pa.array(values, type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def part_name(song_ids: np.ndarray) -> str:
    """Deterministic part file name from the songs a batch holds."""
    digest = hashlib.sha1("\n".join(sorted(map(str, song_ids))).encode()).hexdigest()[:20]
    return f"part-{digest}.parquet"


def write_tables(
    batch: dict[str, np.ndarray],
    *,
    output: str,
    genres: tuple[str, ...],
    model_id: str,
    clip_seconds: float,
    storage_options: dict[str, Any] | None = None,
    aggregation: str = "mean",
    uncertain_below: float | None = None,
) -> dict[str, np.ndarray]:
    """Write one predicted batch as a Parquet part per table under ``output``; return a summary row.

    A part is written whole or not at all (temp file + rename locally; one PUT on object storage),
    so a killed run never leaves a half-written file for readers. Part names derive from the batch's
    song ids, so the same batch always lands in the same file.
    """
    tables = build_tables(
        batch,
        genres=genres,
        model_id=model_id,
        clip_seconds=clip_seconds,
        aggregation=aggregation,
        uncertain_below=uncertain_below,
    )
    _write_parts(tables, output, part_name(batch["song_id"]), storage_options, schemas.part_metadata(model_id, genres))
    errors = Counter(tables["errors"].column("error_type").to_pylist())
    return {
        "n_songs": np.array([tables["songs"].num_rows]),
        "n_errors": np.array([tables["errors"].num_rows]),
        "n_clips": np.array([tables["clips"].num_rows]),
        "n_timeline_steps": np.array([tables["timeline"].num_rows if "timeline" in tables else 0]),
        "n_embeddings": np.array([tables["embeddings"].num_rows if "embeddings" in tables else 0]),
        "audio_s": np.array([float(pa.compute.sum(tables["songs"].column("analyzed_s")).as_py() or 0.0)]),
        "error_types": np.array([json.dumps(errors)]),
    }


def write_segments(
    batch: dict[str, np.ndarray], *, output: str, storage_options: dict[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """Write a segmented batch: a ``segments`` part, an ``errors`` part, and ``plots/<song_id>.png``."""
    ok = np.flatnonzero(np.asarray(batch["status"]) == "ok")
    rows: dict[str, list] = {c["name"]: [] for c in schemas.spec("segments")["columns"]}
    for i in ok:
        n = len(batch["seg_start_s"][i])
        rows["song_id"] += [str(batch["song_id"][i])] * n
        rows["path"] += [str(batch["path"][i])] * n
        rows["segment_index"] += list(range(n))
        rows["start_s"] += np.asarray(batch["seg_start_s"][i], float).tolist()
        rows["end_s"] += np.asarray(batch["seg_end_s"][i], float).tolist()
        rows["cluster"] += np.asarray(batch["seg_cluster"][i], int).tolist()
        rows["is_representative"] += np.asarray(batch["seg_representative"][i], bool).tolist()
        png = batch["plot_png"][i]
        if png:
            storage.write_bytes_atomic(
                storage.join(output, "plots", f"{batch['song_id'][i]}.png"), bytes(png), storage_options
            )
    bad = np.flatnonzero(np.asarray(batch["status"]) != "ok")
    errors = {c: batch[ERROR_COLUMNS.get(c, c)][bad] for c in _copied("errors", batch)}
    errors["model_id"] = ["segmentation"] * len(bad)
    tables = {
        "segments": _table(rows, schemas.arrow_schema("segments")),
        "errors": _table(errors, schemas.arrow_schema("errors")),
    }
    _write_parts(
        tables, output, part_name(batch["song_id"]), storage_options, schemas.part_metadata("segmentation", ())
    )
    return {
        "n_songs": np.array([len(ok)]),
        "n_errors": np.array([len(bad)]),
        "n_segments": np.array([tables["segments"].num_rows]),
        "audio_s": np.array([float(np.sum(np.asarray(batch["duration_s"], np.float64)[ok]))]),
        "error_types": np.array([json.dumps(Counter(tables["errors"].column("error_type").to_pylist()))]),
    }


def _write_parts(
    tables: dict[str, pa.Table],
    output: str,
    name: str,
    storage_options: dict[str, Any] | None,
    metadata: dict[bytes, bytes],
) -> None:
    """Each non-empty table as ``output/<table>/<name>``, with the key-value ``metadata`` (schema version, model, genres)."""
    for table_name, table in tables.items():
        if table.num_rows:
            buf = io.BytesIO()
            pq.write_table(
                table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata}), buf, compression="zstd"
            )
            storage.write_bytes_atomic(storage.join(output, table_name, name), buf.getvalue(), storage_options)


def write_songs(
    batch: pa.Table,
    *,
    output: str,
    genres: tuple[str, ...],
    model_id: str,
    storage_options: dict[str, Any] | None = None,
) -> pa.Table:
    """Write songs rows that are already whole (``retag``: a tag output's columns with new predictions) as one
    songs part under ``output``, named, written and tagged as :func:`write_tables` does; a column of the
    schema that ``batch`` lacks (an older output's) is null. Returns a summary row (``n_songs``)."""
    schema = schemas.arrow_schema("songs", tuple(genres))
    arrays = []
    for f in schema:
        if f.name in batch.column_names:
            arrays.append(batch.column(f.name).cast(f.type))
        else:
            arrays.append(pa.nulls(batch.num_rows, f.type))
    table = pa.Table.from_arrays(arrays, schema=schema)
    if table.num_rows:
        ids = np.asarray(table.column("song_id").to_pylist())
        _write_parts({"songs": table}, output, part_name(ids), storage_options, schemas.part_metadata(model_id, genres))
    return pa.table({"n_songs": [table.num_rows]})
