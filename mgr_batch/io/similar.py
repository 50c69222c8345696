"""Songs like a song: the k nearest by cosine similarity of their stored vectors (the ``embeddings`` table).

Exact search over a copy of the vectors kept beside the tables, ``OUT/_similar/``: per kind of vector
(``feature_id``) one float32 matrix of L2-normalized rows (``.npy``, memory-mapped where local) and the songs
of its rows (``.parquet``), with ``index.json`` naming the embeddings parts (and their sizes) it was built
from. Reading the vectors from their Parquet list column is what costs (about 0.15 s per 1,000 vectors of
1,168 values here, 6,000 times the search); the copy answers 100,000 vectors in a fraction of a second
(``benchmarks/similar.py``). ``tag`` refreshes it at the end of a run, and a query that finds it stale (the
parts changed) rebuilds it first.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mgr_batch.errors import ConfigError, InputNotFoundError
from mgr_batch.io import output, storage

#: The folder beside the tables that holds the search copy.
CACHE_DIR = "_similar"

#: The column that tells which vectors are comparable: ``feature_id`` (one per kind of stored vector), or on
#: outputs written before it, ``model_id`` (the embedding space).
KIND_COLUMNS = ("feature_id", "model_id")


def vector_matrix(vectors: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A list column of equal-length vectors (float16 or float32) as one float32 array (n, dims)."""
    flat = vectors.combine_chunks() if isinstance(vectors, pa.ChunkedArray) else vectors
    n = len(flat)
    values = np.asarray(flat.flatten().to_numpy(zero_copy_only=False), np.float32)
    if n and values.size % n:
        raise ConfigError("the stored vectors differ in length: they cannot be compared")
    return values.reshape(n, values.size // n if n else 0)


def nearest(
    matrix: np.ndarray, query: np.ndarray, k: int, *, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``matrix`` (n, dims) nearest ``query`` (dims,) by cosine similarity, best first, the rows
    ``exclude`` (indices) left out: (row indices (k,), similarities (k,)). A zero vector is similar to nothing."""
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))
    q = np.asarray(query, np.float32)
    q_norm = float(np.sqrt(q @ q))
    with np.errstate(divide="ignore", invalid="ignore"):
        sims = (matrix @ q) / (norms * q_norm)
    sims = np.nan_to_num(sims, nan=0.0, posinf=0.0, neginf=0.0)
    left_out = 0
    if exclude is not None:
        sims[exclude] = -np.inf
        left_out = len(np.unique(exclude))
    k = min(k, len(sims) - left_out)
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    top = np.argpartition(-sims, k - 1)[:k]
    top = top[np.lexsort((top, -sims[top]))]  # best first; ties in row order
    return top, sims[top]


def similar(output_uri: str, *, song: str, k: int = 10, storage_options: dict[str, Any] | None = None) -> list[dict]:
    """The ``k`` songs of the tag output ``output_uri`` nearest ``song`` (its song_id, or its path as listed),
    as ``{path, song_id, similarity}`` best first; the song itself is left out, and only vectors of the
    song's own kind (``feature_id``) are compared. Builds the search copy first where it is missing or stale."""
    if k < 1:
        raise ConfigError(f"--k must be at least 1, got {k}")
    index = refresh(output_uri, storage_options)
    if index is None:
        raise ConfigError(f"{output_uri!r} has no embeddings/ table (tag it without --no-embeddings)")
    for key in index["kinds"].values():
        songs = read_songs(output_uri, key, storage_options)
        ids = songs.column("song_id").to_numpy(zero_copy_only=False)
        paths = songs.column("path").to_numpy(zero_copy_only=False)
        hit = np.flatnonzero((ids == song) | (paths == song))
        if len(hit):
            break
    else:
        raise ConfigError(
            f"song {song!r} is not in {output_uri}/embeddings (give its song_id or its path as listed; "
            "a file that could not be tagged has no vector)"
        )
    matrix = read_matrix(output_uri, key, storage_options)
    itself = np.flatnonzero(ids == ids[hit[0]])  # more than one row if a rerun's duplicate is not yet pruned
    rows, sims = _nearest_normalized(matrix, matrix[hit[0]], k, exclude=itself)
    return [
        {"path": str(paths[r]), "song_id": str(ids[r]), "similarity": round(float(s), 6)}
        for r, s in zip(rows, sims, strict=True)
    ]


def _nearest_normalized(
    matrix: np.ndarray, query: np.ndarray, k: int, *, exclude: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`nearest` for rows and a query already L2-normalized (zero rows stay zero): one product."""
    sims = np.asarray(matrix @ np.asarray(query, np.float32), np.float32)
    sims[exclude] = -np.inf
    k = min(k, len(sims) - len(np.unique(exclude)))
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    top = np.argpartition(-sims, k - 1)[:k]
    top = top[np.lexsort((top, -sims[top]))]
    return top, sims[top]


def _signature(output_uri: str, so: dict[str, Any] | None) -> list[list]:
    """The embeddings parts a reader reads, each with its size: what the search copy must have been built from."""
    fs, paths = output.parts(output_uri, "embeddings", so)
    if not paths:
        return []
    sizes = {d["name"]: d["size"] for d in fs.ls(os.path.dirname(paths[0]), detail=True)}
    return [[os.path.basename(p), int(sizes.get(p, -1))] for p in paths]


def refresh(output_uri: str, storage_options: dict[str, Any] | None = None) -> dict | None:
    """The search copy's ``index.json`` of ``output_uri``, rebuilt first when the embeddings parts changed
    since it was written; None when there is no embeddings table."""
    parts = _signature(output_uri, storage_options)
    if not parts:
        return None
    here = storage.join(output_uri, CACHE_DIR)
    try:
        index = json.loads(storage.read_text(storage.join(here, "index.json"), storage_options))
    except (InputNotFoundError, ValueError):
        index = None
    if index is not None and index.get("parts") == parts:
        return index
    data = output.dataset(output_uri, "embeddings", storage_options)
    kind = next((c for c in KIND_COLUMNS if c in data.schema.names), None)
    table = data.to_table(columns=["song_id", "path", "vector", *([kind] if kind else [])])
    kinds = {}
    values = pc.unique(table.column(kind)).to_pylist() if kind else [""]
    for value in values:
        of = table.filter(pc.field(kind) == value) if kind else table
        key = hashlib.sha1(str(value).encode()).hexdigest()[:12]
        matrix = vector_matrix(of.column("vector"))
        norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))
        matrix /= np.where(norms > 0, norms, 1.0)[:, None]
        buf = io.BytesIO()
        pq.write_table(of.select(["song_id", "path"]), buf)
        storage.write_bytes_atomic(storage.join(here, f"{key}.parquet"), buf.getvalue(), storage_options)
        buf = io.BytesIO()
        np.save(buf, matrix)
        storage.write_bytes_atomic(storage.join(here, f"{key}.npy"), buf.getvalue(), storage_options)
        kinds[str(value)] = key
    index = {"parts": parts, "kind_column": kind, "kinds": kinds}
    storage.write_bytes_atomic(storage.join(here, "index.json"), json.dumps(index).encode(), storage_options)
    return index


def _read_bytes(uri: str, so: dict[str, Any] | None) -> bytes:
    fs, path = storage.filesystem(uri, so)
    with fs.open(path, "rb") as f:
        return f.read()


def read_songs(output_uri: str, key: str, so: dict[str, Any] | None) -> pa.Table:
    """The songs (``song_id``, ``path``) of the rows of a kind's search copy (its key in ``index.json``)."""
    return pq.read_table(io.BytesIO(_read_bytes(storage.join(output_uri, CACHE_DIR, f"{key}.parquet"), so)))


def read_matrix(output_uri: str, key: str, so: dict[str, Any] | None) -> np.ndarray:
    """The kind's normalized vectors (n, dims): memory-mapped where the output is local."""
    uri = storage.join(output_uri, CACHE_DIR, f"{key}.npy")
    if not storage.is_remote(uri):
        return np.load(storage.filesystem(uri, so)[1], mmap_mode="r")
    return np.load(io.BytesIO(_read_bytes(uri, so)))


def similar_lines(found: list[dict]) -> list[str]:
    """``found`` as a table to read: rank, similarity, song_id, path."""
    lines = [f"{'rank':>4}  {'similarity':>10}  {'song_id':<16}  path"]
    lines += [f"{i:>4}  {s['similarity']:>10.4f}  {s['song_id']:<16}  {s['path']}" for i, s in enumerate(found, 1)]
    return lines
