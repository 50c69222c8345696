"""An output folder as a run sees it: each table listed once, and only what changed since the last run read.

A tagging run writes each batch of songs as one part per table under one name, ``part-<hash>.parquet`` (the
batch's name), its songs part last. So the songs table alone says which batches are whole: a clips, timeline or
embeddings part named after no songs part is the leftover of a killed run, and a song's rows in those tables
lie in the parts of its own batch. Nothing here reads a clip row to know that.

:class:`Output` holds, for every table, its visible parts (a compaction's commit record honoured) with their row
counts and the batches they hold, and the key rows of the songs and errors tables (``song_id, size, mtime,
model_id, stage, error_type``, the part and batch of each). It is kept between runs in ``OUT/_index/`` (two
Parquet files, hidden from glob readers by the leading underscore) as a cache: each part's entry is trusted only
while the part's size and modification time (an ETag on object storage) are those the index recorded, and a part
the index does not know is read, so a lost or stale index costs a rebuild, never a wrong answer. A rerun thus
reads what earlier runs wrote once, and after that only the parts that appeared or changed.

A compaction (:mod:`mgr_batch.io.compaction`) writes the batches it merged into each merged file's metadata, so
that a song's batch, and with it its rows in every table, is still known after one.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from mgr_batch.io import storage
from mgr_batch.io.compaction import BATCH_PREFIX, EMPTY_PART, batches_of
from mgr_batch.io.folders import Part, Table, is_local, list_table, version_of
from mgr_batch.io.schemas import OPTIONAL_TAG_TABLES, TAG_TABLES

log = logging.getLogger(__name__)

TABLES = (*TAG_TABLES, *OPTIONAL_TAG_TABLES)
#: Tables whose rows are keyed by song and read whole into the index.
KEY_TABLES = ("songs", "errors")
#: Tables a batch writes before its songs part: their rows belong to the songs of their batch.
DEPENDENT_TABLES = ("clips", *OPTIONAL_TAG_TABLES)
INDEX_DIR = "_index"
#: The columns of :attr:`Output.keys`.
KEY_COLUMNS = ["song_id", "size", "mtime", "model_id", "stage", "error_type", "table", "part", "batch"]
#: Parts whose key rows are gathered into one Arrow table at a time.
READ_CHUNK = 1000
#: Threads that read part footers and list folders (I/O bound: object storage answers in parallel).
IO_THREADS = 16


class Output:
    """The tables of a tag output folder (see the module's docstring). Build it with :meth:`open`."""

    def __init__(self, uri: str, so: dict[str, Any] | None) -> None:
        self.uri, self.so = uri, so
        self.tables: dict[str, Table] = {}
        self.parts: dict[str, dict[str, Part]] = {t: {} for t in TABLES}
        self.keys = _empty_keys()
        self._saved: frozenset[tuple[str, str, str]] | None = None
        self._saved_keys = -1
        self.reads = 0  # parts read (footers or key rows) since open: what a run paid for what it found new

    @classmethod
    def open(cls, uri: str, so: dict[str, Any] | None) -> Output:
        """List every table of ``uri`` once and read what the index there does not already know."""
        out = cls(uri, so)
        out._load_index()
        out.refresh()
        return out

    # -- reading -------------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """List every table again and read the parts that appeared or changed (and forget those gone)."""
        with ThreadPoolExecutor(IO_THREADS) as pool:
            listed = dict(zip(TABLES, pool.map(lambda t: list_table(self.uri, t, self.so), TABLES), strict=True))
        self.tables = listed
        old_keys = self.keys
        old_parts = pa.array(old_keys["part"], pa.string())  # looked up in Arrow: a million rows, no Python object each
        valid = []
        for table in TABLES:
            versions = listed[table].versions
            known = self.parts[table]
            self.parts[table] = {n: p for n, p in known.items() if versions.get(n) == p.version}
            new = [n for n in versions if n not in self.parts[table]]
            held = pa.array(list(self.parts[table]), pa.string())  # the parts whose key rows stay valid
            for part in self._read_parts(table, new):
                self.parts[table][part.name] = part
            if table in KEY_TABLES:
                of_table = old_keys["table"].eq(table).to_numpy()
                kept = old_keys[of_table & pc.is_in(old_parts, value_set=held).to_numpy(zero_copy_only=False)]
                valid.append(kept)
                if new:
                    valid.append(self._read_keys(table, new, old_keys))
        self.keys = pd.concat(valid, ignore_index=True) if valid else _empty_keys()

    def _read_parts(self, table: str, names: list[str]) -> list[Part]:
        t = self.tables[table]

        def footer(name: str) -> Part:
            with _open(t, name) as f:
                meta = pq.ParquetFile(f).metadata
            return Part(name, t.versions[name], meta.num_rows, batches_of(name, meta.metadata))

        self.reads += len(names)
        if len(names) < 4:
            return [footer(n) for n in names]
        with ThreadPoolExecutor(IO_THREADS) as pool:
            return list(pool.map(footer, names))

    def _read_keys(self, table: str, names: list[str], old_keys: pd.DataFrame) -> pd.DataFrame:
        """The key rows of parts ``names`` of ``table``, with their part and batch."""
        t = self.tables[table]
        wanted = ["song_id", "size", "mtime", "model_id", *(["stage", "error_type"] if table == "errors" else [])]

        def read(name: str) -> pa.Table:
            with _open(t, name) as f:
                data = pq.ParquetFile(f, pre_buffer=False)
                columns = [c for c in wanted if c in data.schema_arrow.names]
                rows = data.read(columns=columns, use_threads=False)
            return rows.append_column("part", pa.array([name] * rows.num_rows, pa.string()))

        chunks = []
        with ThreadPoolExecutor(IO_THREADS) as pool:
            for k in range(0, len(names), READ_CHUNK):  # whole Arrow chunks: no small per-file buffers pile up
                parts = list(pool.map(read, names[k : k + READ_CHUNK]))
                chunks.append(pa.concat_tables(parts, promote_options="default").combine_chunks())
        rows = pa.concat_tables(chunks, promote_options="default").to_pandas()
        for c in KEY_COLUMNS:
            if c not in rows:
                rows[c] = None
        rows["table"] = table
        batch = rows["part"].where(rows["part"].str.startswith(BATCH_PREFIX))
        merged = ~rows["part"].str.startswith(BATCH_PREFIX)
        if merged.any():  # a merged file: each song's batch as the index knew it before the merge, where it did
            earlier = old_keys.dropna(subset=["batch"]).drop_duplicates("song_id").set_index("song_id")["batch"]
            batch[merged] = rows.loc[merged, "song_id"].map(earlier)
        rows["batch"] = batch
        return rows[KEY_COLUMNS]

    # -- what the tables hold ------------------------------------------------------------------------------

    def batches(self, table: str) -> tuple[frozenset[str], bool]:
        """The batches ``table`` holds rows of, and whether some file's batches are not known."""
        found: set[str] = set()
        unknown = False
        for p in self.parts[table].values():
            if p.batches is None:
                unknown = True
            else:
                found |= p.batches
        return frozenset(found), unknown

    def orphan_parts(self) -> dict[str, list[str]]:
        """Per dependent table, the run parts of batches the songs table does not hold (a killed run's)."""
        whole, _ = self.batches("songs")
        return {
            t: [n for n in self.parts[t] if n.startswith(BATCH_PREFIX) and n != EMPTY_PART and n not in whole]
            for t in DEPENDENT_TABLES
        }

    def song_ids(self, table: str, names: Iterable[str]) -> pd.Series:
        """The ``song_id`` column of parts ``names`` of ``table`` (read: use it for few, small parts)."""
        names = list(names)
        if not names:
            return pd.Series([], dtype=object)
        t = self.tables[table]
        self.reads += len(names)
        data = pads.dataset([t.path(n) for n in names], filesystem=_arrow_filesystem(t.fs), format="parquet")
        return data.to_table(columns=["song_id"]).column("song_id").to_pandas()

    def counts(self) -> dict[str, int]:
        """Rows in each table now."""
        return {t: sum(p.rows for p in self.parts[t].values()) for t in TABLES}

    def errors_by_type(self) -> dict[str, int]:
        types = self.keys.loc[self.keys["table"] == "errors", "error_type"]
        return {str(k): int(v) for k, v in sorted(types.value_counts().items())}

    def files_holding(self, table: str, batches: set[str]) -> list[str]:
        """The parts of ``table`` that may hold rows of ``batches`` (every file whose batches are not known)."""
        return [n for n, p in self.parts[table].items() if p.batches is None or p.batches & batches]

    # -- changing --------------------------------------------------------------------------------------------

    def remove_rows(self, table: str, name: str, drop_ids: set[str]) -> int:
        """Remove the rows of ``drop_ids`` from part ``name`` of ``table`` (rewritten, or deleted when emptied);
        returns the rows removed. The index follows."""
        t = self.tables[table]
        path = t.path(name)
        with t.fs.open(path, "rb") as f:
            data = pq.read_table(f)
        self.reads += 1
        keep = ~np.asarray(pd.Series(data.column("song_id").to_pandas()).isin(drop_ids), bool)
        removed = int((~keep).sum())
        if not removed:
            return 0
        is_key = self.keys["table"].eq(table) & self.keys["part"].eq(name)
        if not keep.any():
            t.fs.rm(path)
            del self.parts[table][name]
            t.versions.pop(name, None)
            self.keys = self.keys[~is_key]
            return removed
        buf = io.BytesIO()
        pq.write_table(data.filter(pa.array(keep)), buf, compression="zstd")
        storage.write_bytes_atomic(t.fs.unstrip_protocol(path) if not is_local(t.fs) else path, buf.getvalue(), self.so)
        t.fs.invalidate_cache(t.root)
        version = version_of(t.fs.info(path))
        t.versions[name] = version
        old = self.parts[table][name]
        self.parts[table][name] = Part(name, version, int(keep.sum()), old.batches)
        if table in KEY_TABLES:
            self.keys = self.keys[~(is_key & self.keys["song_id"].isin(drop_ids))]
        return removed

    def remove_temp_files(self) -> None:
        """Delete half-written temp files killed writers left (readers never saw them: they start with a dot)."""
        for t in self.tables.values():
            for p in t.temp:
                t.fs.rm(p)
            t.temp.clear()

    # -- the index between runs ------------------------------------------------------------------------------

    def _index_uri(self, name: str) -> str:
        return storage.join(self.uri, INDEX_DIR, name)

    def _load_index(self) -> None:
        try:
            parts, keys = (_read_table(self._index_uri(n), self.so) for n in ("parts.parquet", "keys.parquet"))
        except (FileNotFoundError, pa.ArrowInvalid, OSError) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("the index of %s could not be read (%s); rebuilding it from the tables", self.uri, exc)
            return
        # Python lists of the columns (in C), not a Python object per cell of a pandas frame
        columns = [parts.column(c).to_pylist() for c in ("table", "name", "version", "rows", "batches")]
        for t, name, version, rows, b in zip(*columns, strict=True):
            if t in self.parts:
                self.parts[t][name] = Part(name, version, rows, None if b is None else frozenset(b))
        self._saved = self._signature()
        # key rows are valid only for parts whose entry is valid: keep those of parts the index lists
        listed = None
        for t in KEY_TABLES:
            held = pa.array(list(self.parts[t]), pa.string())
            of_t = pc.and_(pc.equal(keys["table"], t), pc.is_in(keys["part"], value_set=held))
            listed = of_t if listed is None else pc.or_(listed, of_t)
        self.keys = keys.select(KEY_COLUMNS).filter(listed).to_pandas()
        self._saved_keys = len(self.keys)

    def _signature(self) -> frozenset[tuple[str, str, str]]:
        return frozenset((t, p.name, p.version) for t in TABLES for p in self.parts[t].values())

    def save(self) -> None:
        """Write the index (keys first: key rows of a part are used only while the parts file lists it), unless
        it holds what it held when read (a run with nothing to do writes nothing)."""
        if self._signature() == self._saved and len(self.keys) == self._saved_keys:
            return
        keys = pa.Table.from_pandas(self.keys[KEY_COLUMNS], schema=_KEYS_SCHEMA, preserve_index=False)
        held = [(t, p) for t in TABLES for p in self.parts[t].values()]
        columns = {  # column by column: a dict per part took seconds at a hundred thousand parts
            "table": [t for t, _ in held],
            "name": [p.name for _, p in held],
            "version": [p.version for _, p in held],
            "rows": [p.rows for _, p in held],
            "batches": [None if p.batches is None else sorted(p.batches) for _, p in held],
        }
        parts = pa.table(columns, schema=_PARTS_SCHEMA)
        for name, table in (("keys.parquet", keys), ("parts.parquet", parts)):
            buf = io.BytesIO()
            pq.write_table(table, buf, compression="zstd")
            storage.write_bytes_atomic(self._index_uri(name), buf.getvalue(), self.so)


_KEYS_SCHEMA = pa.schema(
    [
        ("song_id", pa.string()),
        ("size", pa.int64()),
        ("mtime", pa.float64()),
        ("model_id", pa.string()),
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("table", pa.string()),
        ("part", pa.string()),
        ("batch", pa.string()),
    ]
)
_PARTS_SCHEMA = pa.schema(
    [
        ("table", pa.string()),
        ("name", pa.string()),
        ("version", pa.string()),
        ("rows", pa.int64()),
        ("batches", pa.list_(pa.string())),
    ]
)


def _read_table(uri: str, so: dict[str, Any] | None) -> pa.Table:
    fs, path = storage.filesystem(uri, so)
    if is_local(fs):
        return pq.read_table(path, memory_map=True)
    with fs.open(path, "rb") as f:
        return pq.read_table(f)


def _open(t: Table, name: str) -> Any:
    """A part of ``t`` opened for reading (pyarrow's own file for a local path: no Python call per read)."""
    return pa.OSFile(t.path(name)) if is_local(t.fs) else t.fs.open(t.path(name), "rb")


def _arrow_filesystem(fs: Any) -> Any:
    """pyarrow's own local filesystem for local paths (no Python call per file), else the fsspec one."""
    return None if is_local(fs) else fs


def _empty_keys() -> pd.DataFrame:
    return _KEYS_SCHEMA.empty_table().to_pandas()


def clear(output: str, so: dict[str, Any] | None) -> None:
    """Delete the index (with the tables, ``--force``)."""
    fs, root = storage.filesystem(storage.join(output, INDEX_DIR), so)
    if fs.exists(root):
        fs.rm(root, recursive=True)
