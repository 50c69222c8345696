"""Compaction: merge each table's many small Parquet parts into few large ones, safely at every moment.

A tagging run writes one part per batch of songs (``part-<hash>.parquet``); ``compact`` merges them into
``compact-<hash>.parquet`` files of about ``target_rows`` rows or ``target_bytes`` bytes, each sorted by
``song_id`` (then clip and step) so that one song's rows sit together.

Every group of parts is merged under a commit record, ``<table>/_compaction.json``, in five steps:

1. the record is written with ``state: pending``, naming the ``sources`` and the ``target``;
2. the target is written (whole or not at all, as every part);
3. the record is rewritten with ``state: committed``;
4. the sources are deleted;
5. the record is deleted.

mgr-batch's own readers (:func:`visible`) skip the target while the record is pending and the sources once it
is committed, so ``tag``, ``report`` and ``compact`` never count a row twice nor miss one, whatever step a
kill interrupts; :func:`repair` (run first by ``tag`` and ``compact``) rolls a pending record back and
finishes a committed one. A plain glob reader (DuckDB, pandas, Spark) sees both the target and its sources
between steps 2 and 4 of a group: run compaction when nobody reads, or read through a record-aware reader.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mgr_batch.io import schemas, storage

JOURNAL = "_compaction.json"
PREFIX = "compact-"
#: Test hook: with this set to k, the process kills itself (SIGKILL) right after its k-th step.
KILL_AT_ENV = "MGR_BATCH_COMPACT_KILL_AT"
#: Row order inside a merged file, by table.
SORT_KEYS = {
    "clips": ["song_id", "clip_index"],
    "timeline": ["song_id", "clip_index", "step_index"],
    "segments": ["song_id", "segment_index"],
}
DEFAULT_TARGET_ROWS = 1_000_000
DEFAULT_TARGET_BYTES = 128 * 2**20


def _base(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


def read_journal(fs: Any, root: str) -> dict[str, Any] | None:
    """The commit record of table folder ``root``, or None when no compaction is in progress there."""
    path = posixpath.join(root, JOURNAL) if not _local(fs) else os.path.join(root, JOURNAL)
    if not fs.exists(path):
        return None
    return json.loads(fs.cat_file(path))


def visible(parts: list[str], journal: dict[str, Any] | None) -> list[str]:
    """The parts of a table a reader must read: the target of a pending merge, or the sources of a committed one, left out."""
    if journal is None:
        return parts
    hidden = set(journal["targets"] if journal["state"] == "pending" else journal["sources"])
    return [p for p in parts if _base(p) not in hidden]


def _local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


class _Steps:
    """Counts side effects; kills the process after the ``KILL_AT_ENV``-th (the kill test's hook)."""

    def __init__(self) -> None:
        self.n = 0
        self.kill_at = int(os.environ.get(KILL_AT_ENV) or 0)

    def __call__(self) -> None:
        self.n += 1
        if self.n == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class _Table:
    """One table folder: its filesystem, path and the URI form of its files."""

    fs: Any
    root: str
    output: str
    name: str

    def path(self, base: str) -> str:
        return os.path.join(self.root, base) if _local(self.fs) else posixpath.join(self.root, base)

    def uri(self, base: str) -> str:
        return storage.join(self.output, self.name, base)

    def write_journal(self, record: dict[str, Any], so: dict[str, Any] | None) -> None:
        storage.write_bytes_atomic(self.uri(JOURNAL), json.dumps(record).encode(), so)

    def remove(self, bases: list[str]) -> None:
        present = [self.path(b) for b in bases if self.fs.exists(self.path(b))]
        if present:
            self.fs.rm(present)


def _table(output: str, name: str, so: dict[str, Any] | None) -> _Table:
    fs, root = storage.filesystem(storage.join(output, name), so)
    fs.invalidate_cache(root)  # what another (perhaps killed) process left there, not a cached listing
    return _Table(fs=fs, root=root, output=output, name=name)


def repair(
    output: str,
    so: dict[str, Any] | None,
    tables: tuple[str, ...] = schemas.TABLES,
    step: Callable[[], None] = lambda: None,
) -> int:
    """Finish (committed) or roll back (pending) the compaction a killed run left in each table; returns how many."""
    n = 0
    for name in tables:
        t = _table(output, name, so)
        if not t.fs.exists(t.root):
            continue
        journal = read_journal(t.fs, t.root)
        if journal is None:
            continue
        t.remove(journal["targets"] if journal["state"] == "pending" else journal["sources"])
        step()
        t.fs.rm(t.path(JOURNAL))
        step()
        n += 1
    return n


def _merge_key(schema: pa.Schema) -> tuple:
    """Parts merge only with parts of the same columns and the same metadata (model, genres, schema version)."""
    meta = schemas.read_part_metadata(schema.metadata)
    return (str(schema.remove_metadata()), meta["model_id"], meta["genres"], meta["schema_version"])


def _metadata(table: pa.Table, name: str) -> dict[bytes, bytes]:
    """The merged file's key-value metadata: its sources' own, or (parts older than the metadata) what the rows tell."""
    meta = schemas.read_part_metadata(table.schema.metadata)
    if meta["model_id"] is not None and meta["genres"] is not None:
        return {k: v for k, v in table.schema.metadata.items() if k.startswith(b"mgr_batch.")}
    ids = table.column("model_id").unique().to_pylist() if "model_id" in table.column_names else []
    model_id = ids[0] if len(ids) == 1 else ",".join(sorted(ids))
    genres = schemas.probability_genres(table.column_names) if name in ("songs", "clips") else ()
    return schemas.part_metadata(model_id, genres)


def compact(
    output: str,
    so: dict[str, Any] | None = None,
    *,
    target_rows: int = DEFAULT_TARGET_ROWS,
    target_bytes: int = DEFAULT_TARGET_BYTES,
    tables: tuple[str, ...] = schemas.TABLES,
) -> dict[str, Any]:
    """Merge the parts of every table under ``output`` (local or URL) into files of about ``target_rows`` rows
    or ``target_bytes`` bytes; returns, per table, the parts before and after and the rows."""
    step = _Steps()
    repaired = repair(output, so, tables, step)
    summary: dict[str, Any] = {"repaired": repaired, "tables": {}}
    for name in tables:
        t = _table(output, name, so)
        if not t.fs.exists(t.root):
            continue
        summary["tables"][name] = _compact_table(t, so, target_rows=target_rows, target_bytes=target_bytes, step=step)
    return summary


def _compact_table(
    t: _Table, so: dict[str, Any] | None, *, target_rows: int, target_bytes: int, step: _Steps
) -> dict[str, int]:
    infos = [
        i
        for i in t.fs.ls(t.root, detail=True)
        if i["name"].endswith(".parquet") and not _base(i["name"]).startswith((".", "_"))
    ]
    sizes = {_base(i["name"]): int(i.get("size") or 0) for i in infos}
    buckets: dict[tuple, list[str]] = {}
    rows_before = 0
    for base in sorted(sizes):
        with t.fs.open(t.path(base), "rb") as f:
            meta = pq.ParquetFile(f).metadata
        rows_before += meta.num_rows
        full = base.startswith(PREFIX) and (meta.num_rows >= target_rows / 2 or sizes[base] >= target_bytes / 2)
        if not full:
            buckets.setdefault(_merge_key(meta.schema.to_arrow_schema()), []).append(base)
    merged = 0
    for bases in buckets.values():
        group: list[tuple[str, pa.Table]] = []
        rows = nbytes = 0
        for base in bases:
            with t.fs.open(t.path(base), "rb") as f:
                data = pq.read_table(f)
            if group and (rows + data.num_rows > target_rows or nbytes + sizes[base] > target_bytes):
                merged += _merge(t, group, so, step)
                group, rows, nbytes = [], 0, 0
            group.append((base, data))
            rows, nbytes = rows + data.num_rows, nbytes + sizes[base]
        merged += _merge(t, group, so, step)
    after = len(
        [p for p in t.fs.ls(t.root, detail=False) if p.endswith(".parquet") and not _base(p).startswith((".", "_"))]
    )
    return {"parts_before": len(sizes), "parts_after": after, "rows": rows_before, "merged_groups": merged}


def _merge(t: _Table, group: list[tuple[str, pa.Table]], so: dict[str, Any] | None, step: _Steps) -> int:
    """One group of parts into one sorted file, under the commit record (see the module's docstring)."""
    if len(group) < 2:
        return 0
    sources = [b for b, _ in group]
    target = f"{PREFIX}{hashlib.sha1(chr(10).join(sorted(sources)).encode()).hexdigest()[:20]}.parquet"
    data = pa.concat_tables([d for _, d in group])
    keys = [k for k in SORT_KEYS.get(t.name, ["song_id"]) if k in data.column_names]
    data = data.sort_by([(k, "ascending") for k in keys])
    data = data.replace_schema_metadata(_metadata(data, t.name))
    record = {"table": t.name, "state": "pending", "sources": sources, "targets": [target]}
    t.write_journal(record, so)
    step()
    buf = io.BytesIO()
    pq.write_table(data, buf, compression="zstd", row_group_size=128 * 1024)
    storage.write_bytes_atomic(t.uri(target), buf.getvalue(), so)
    step()
    t.write_journal({**record, "state": "committed"}, so)
    step()
    t.remove(sources)
    step()
    t.fs.rm(t.path(JOURNAL))
    step()
    return 1
