"""Songs like a song: the k nearest by cosine similarity of their stored vectors (the ``embeddings`` table).

Exact search over a copy of the vectors kept beside the tables, ``OUT/_similar/``: per kind of vector
(``feature_id``) one float32 matrix of L2-normalized rows (``.npy``, memory-mapped where local) and the songs
of its rows (``.parquet``: ``song_id``, ``path`` and ``key``, a 64-bit hash of the row's song, path and vector),
with ``index.json`` naming the embeddings parts (each with its size and modification time, or ETag) it was
built from. Reading the vectors from their Parquet list column is what costs (about 0.15 s per 1,000 vectors of
1,168 values here, 6,000 times the search); the copy answers 100,000 vectors in a fraction of a second
(``benchmarks/similar.py``). The first query that finds it stale (the parts changed) rebuilds it first.

From :data:`INDEX_THRESHOLD` vectors of a kind on, where exact search nears a second, a query goes through an
approximate index instead: usearch's HNSW over float16 (``<kind>.usearch`` in the same folder, with
``<kind>.usearch-keys.npy``, the row keys it holds; ``index.json`` records the parts it covers). A query that
finds it behind the copy removes the keys no longer there (a song pruned or redone) and adds the new ones, so
an update costs the new rows, not a rebuild; its candidates are mapped back to rows by key, a key no longer in
the copy is dropped, and their similarities are recomputed exactly from the copy. It is refreshed by the query,
not by ``tag``: a tag run cannot know whether anyone will search, and adding a vector costs several times
reading it from Parquet (about 1.5 ms against 0.4 ms on 2 cores).
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
#: The layout of the search copy; a copy of another layout is rebuilt.
COPY_VERSION = 2
#: Vectors of one kind from which a query uses the approximate index: exact search costs about 2.4 µs per
#: vector on a 2-core AMD EPYC (a second at ~419,000); usearch answers in under a millisecond at 200,000 with
#: recall@10 of ~0.99 (benchmarks/results/similar.md).
INDEX_THRESHOLD = 400_000
#: usearch's HNSW settings, as measured: links per node, candidates while adding and while searching.
CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH = 16, 128, 64

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


def similar(
    output_uri: str,
    *,
    song: str,
    k: int = 10,
    storage_options: dict[str, Any] | None = None,
    index_threshold: int = INDEX_THRESHOLD,
) -> list[dict]:
    """The ``k`` songs of the tag output ``output_uri`` nearest ``song`` (its song_id, or its path as listed),
    as ``{path, song_id, similarity}`` best first; the song itself is left out, and only vectors of the
    song's own kind (``feature_id``) are compared. Builds the search copy first where it is missing or stale;
    a kind of ``index_threshold`` vectors or more is searched through the approximate index (see above)."""
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
    if len(matrix) >= index_threshold:
        ann = refresh_index(output_uri, index, key, songs, matrix, storage_options)
        rows, sims = _nearest_approximate(ann, songs, matrix, matrix[hit[0]], k, exclude=itself)
    else:
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


def _nearest_approximate(
    ann: Any, songs: pa.Table, matrix: np.ndarray, query: np.ndarray, k: int, *, exclude: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_nearest_normalized` through the usearch index ``ann`` of the rows' keys (``songs``' ``key``
    column): its candidates mapped back to rows (a key not among the rows dropped), the rows ``exclude`` left
    out, similarities recomputed from ``matrix``. The search's whole beam (:data:`EXPANSION_SEARCH` candidates, or
    more for a larger ``k``) is re-ranked so, not only its first ``k``: with ``k`` alone, one of the 10 nearest of
    60 vectors was missed now and then. An answer short of what was asked where the rows hold more is searched
    exactly instead: HNSW can miss songs when that nears the number of vectors (usearch's graph built by several
    threads left 1 of 60 unreached for 60 asked in 9% of queries)."""
    keys = songs.column("key").to_numpy()
    unique, first = np.unique(keys, return_index=True)
    want = min(max(k + len(exclude), EXPANSION_SEARCH), len(unique))
    found = np.atleast_1d(np.asarray(ann.search(np.asarray(query, np.float32), want, threads=1).keys, np.uint64))
    if len(found) < want:
        return _nearest_normalized(matrix, query, k, exclude=exclude)
    at = np.minimum(np.searchsorted(unique, found), len(unique) - 1)
    rows = np.sort(first[at[unique[at] == found]])
    rows = rows[~np.isin(rows, exclude)]
    sims = np.asarray(matrix[rows] @ np.asarray(query, np.float32), np.float32)
    order = np.lexsort((rows, -sims))[:k]
    return rows[order], sims[order]


def refresh_index(
    output_uri: str, index: dict, key: str, songs: pa.Table, matrix: np.ndarray, so: dict[str, Any] | None
) -> Any:
    """The usearch index of the kind ``key`` of the search copy (``index``: its ``index.json``), brought up to
    the copy first where it is missing or behind: the keys gone removed, the new ones added (rebuilt whole
    when more than half of it is gone)."""
    from usearch.index import Index  # only for catalogs past the threshold

    here = storage.join(output_uri, CACHE_DIR)
    path, keys_path = storage.join(here, f"{key}.usearch"), storage.join(here, f"{key}.usearch-keys.npy")
    covered = index.get("ann", {}).get(key) == index["parts"]
    local = not storage.is_remote(path)
    ann, held = None, np.zeros(0, np.uint64)
    try:
        if covered and local:  # memory-mapped: nothing read but what the search visits
            ann = Index.restore(storage.filesystem(path, so)[1], view=True)
            if ann is not None:
                return ann
        ann = Index.restore(bytearray(_read_bytes(path, so)))  # None where there is none
        if ann is not None:
            held = np.load(io.BytesIO(_read_bytes(keys_path, so)))
    except (InputNotFoundError, FileNotFoundError, ValueError):  # missing or unreadable: built anew
        ann, held = None, np.zeros(0, np.uint64)
    if covered and ann is not None:
        return ann
    keys = songs.column("key").to_numpy()
    unique, first = np.unique(keys, return_index=True)
    gone = np.setdiff1d(held, unique)
    if ann is None or ann.ndim != matrix.shape[1] or len(gone) * 2 > len(held):
        held, gone = np.zeros(0, np.uint64), gone[:0]
        ann = Index(
            ndim=matrix.shape[1],
            metric="cos",
            dtype="f16",
            connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        )
    if len(gone):
        ann.remove(gone)
    new = np.isin(unique, held, invert=True)
    if new.any():
        ann.add(unique[new], np.asarray(matrix[first[new]], np.float32), threads=os.cpu_count() or 1)
    buf = io.BytesIO()
    np.save(buf, unique)
    storage.write_bytes_atomic(path, bytes(ann.save()), so)
    storage.write_bytes_atomic(keys_path, buf.getvalue(), so)
    index.setdefault("ann", {})[key] = index["parts"]
    storage.write_bytes_atomic(storage.join(here, "index.json"), json.dumps(index).encode(), so)
    return ann


def _keys(table: pa.Table, matrix: np.ndarray) -> np.ndarray:
    """A 64-bit key per row of ``table`` (``song_id``, ``path``) and its vector (a row of ``matrix``): a row
    redone with another vector gets another key."""
    ids = table.column("song_id").to_pylist()
    paths = table.column("path").to_pylist()
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(f"{i}\0{p}\0".encode() + v.tobytes(), digest_size=8).digest(), "little")
            for i, p, v in zip(ids, paths, matrix, strict=True)
        ],
        np.uint64,
    )


def _signature(output_uri: str, so: dict[str, Any] | None) -> list[list]:
    """The embeddings parts a reader reads, each with its size and modification time (or ETag), as the output's
    index trusts them (:func:`mgr_batch.io.folders.version_of`): what the search copy must have been built from."""
    from mgr_batch.io.folders import version_of

    fs, paths = output.parts(output_uri, "embeddings", so)
    if not paths:
        return []
    fs.invalidate_cache(os.path.dirname(paths[0]))
    versions = {d["name"]: version_of(d) for d in fs.ls(os.path.dirname(paths[0]), detail=True)}
    return [[os.path.basename(p), versions.get(p, "")] for p in paths]


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
    if index is not None and index.get("parts") == parts and index.get("version") == COPY_VERSION:
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
        songs = of.select(["song_id", "path"])
        pq.write_table(songs.append_column("key", pa.array(_keys(songs, matrix), pa.uint64())), buf)
        storage.write_bytes_atomic(storage.join(here, f"{key}.parquet"), buf.getvalue(), storage_options)
        buf = io.BytesIO()
        np.save(buf, matrix)
        storage.write_bytes_atomic(storage.join(here, f"{key}.npy"), buf.getvalue(), storage_options)
        kinds[str(value)] = key
    index = {"version": COPY_VERSION, "parts": parts, "kind_column": kind, "kinds": kinds}
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
