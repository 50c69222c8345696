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

import functools
import hashlib
import io
import json
import os
import posixpath
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
#: A run's part names start so (the name of its batch); merged files and the empty part of a table do not.
BATCH_PREFIX = "part-"
#: The part that stands for a table with no rows.
EMPTY_PART = "part-empty.parquet"
#: Parquet key-value metadata of a merged file: the batches it holds (a JSON list).
META_BATCHES = b"mgr_batch.batches"
DEFAULT_TARGET_BYTES = 128 * 2**20


def _base(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


def batches_of(name: str, metadata: dict[bytes, bytes] | None) -> frozenset[str] | None:
    """The batches a file holds: a run's part is its own batch; a merged file lists its own in its metadata
    (None: not known, a file merged by an older version)."""
    if name.startswith(BATCH_PREFIX):
        return frozenset() if name == EMPTY_PART else frozenset([name])
    found = (metadata or {}).get(META_BATCHES)
    return frozenset(json.loads(found)) if found is not None else None


def merged_batches(sources: list[tuple[str, dict[bytes, bytes] | None]]) -> dict[bytes, bytes]:
    """The :data:`META_BATCHES` entry of a file merged from ``sources`` (name, metadata); none when the batches
    of a source are not known."""
    found: set[str] = set()
    for name, meta in sources:
        batches = batches_of(name, meta)
        if batches is None:
            return {}
        found |= batches
    return {META_BATCHES: json.dumps(sorted(found)).encode()}


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
        self.fs.invalidate_cache(self.root)
        listed = {_base(p) for p in self.fs.ls(self.root, detail=False)} if self.fs.exists(self.root) else set()
        present = [self.path(b) for b in bases if b in listed]
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
    workers: int = 2,
    run_merges: RunMerges | None = None,
) -> dict[str, Any]:
    """Merge the parts of every table under ``output`` (local or URL) into files of about ``target_rows`` rows
    or ``target_bytes`` bytes; returns, per table, the parts before and after and the rows.

    A table's groups are merged under one commit record per table, by ``run_merges`` (e.g. as Ray tasks over
    a cluster), else ``workers`` at a time in threads of this process (reading, sorting, compressing and
    writing Parquet run outside the GIL). Parts of a batch that the songs table does not hold (a killed run's
    leftovers, which the next ``tag`` prunes) are left as they are.
    """
    step = _Steps()
    repaired = repair(output, so, tables, step)
    summary: dict[str, Any] = {"repaired": repaired, "tables": {}}
    for name in tables:
        t = _table(output, name, so)
        if not t.fs.exists(t.root):
            continue
        whole = _whole_batches(output, so) if name in DEPENDENT_TABLES else None
        summary["tables"][name] = _compact_table(
            t,
            so,
            target_rows=target_rows,
            target_bytes=target_bytes,
            step=step,
            whole=whole,
            run_merges=run_merges or functools.partial(_in_threads, workers=workers),
        )
    return summary


#: Tables whose parts belong to the songs of their batch (written before its songs part).
DEPENDENT_TABLES = ("clips", "timeline", "embeddings")


@dataclass(frozen=True)
class _Footer:
    """What compaction needs of a part's footer (not the footer: tens of thousands of them would not fit)."""

    num_rows: int
    merge_key: tuple
    metadata: dict[bytes, bytes] | None


def _footers(t: _Table, bases: list[str]) -> dict[str, _Footer]:
    def footer(base: str) -> _Footer:
        with t.fs.open(t.path(base), "rb") as f:
            meta = pq.ParquetFile(f).metadata
        return _Footer(meta.num_rows, _merge_key(meta.schema.to_arrow_schema()), meta.metadata)

    with ThreadPoolExecutor(16) as pool:
        return dict(zip(bases, pool.map(footer, bases), strict=True))


def _listed(t: _Table) -> dict[str, int]:
    infos = t.fs.ls(t.root, detail=True)
    return {
        _base(i["name"]): int(i.get("size") or 0)
        for i in infos
        if i["name"].endswith(".parquet") and not _base(i["name"]).startswith((".", "_"))
    }


def _whole_batches(output: str, so: dict[str, Any] | None) -> frozenset[str] | None:
    """The batches the songs table holds (None: some merged file does not say which)."""
    t = _table(output, "songs", so)
    if not t.fs.exists(t.root):
        return frozenset()
    found: set[str] = set()
    for base, meta in _footers(t, sorted(_listed(t))).items():
        batches = batches_of(base, meta.metadata)
        if batches is None:
            return None
        found |= batches
    return frozenset(found)


def _compact_table(
    t: _Table,
    so: dict[str, Any] | None,
    *,
    target_rows: int,
    target_bytes: int,
    step: _Steps,
    whole: frozenset[str] | None,
    run_merges: RunMerges,
) -> dict[str, int]:
    sizes = _listed(t)
    footers = _footers(t, sorted(sizes))
    buckets: dict[tuple, list[str]] = {}
    rows_before = 0
    for base, meta in footers.items():
        rows_before += meta.num_rows
        full = base.startswith(PREFIX) and (meta.num_rows >= target_rows / 2 or sizes[base] >= target_bytes / 2)
        orphan = whole is not None and base.startswith(BATCH_PREFIX) and base != EMPTY_PART and base not in whole
        if not full and not orphan:
            buckets.setdefault(meta.merge_key, []).append(base)
    groups: list[list[str]] = []
    for bases in buckets.values():
        group: list[str] = []
        rows = nbytes = 0
        for base in bases:
            n = footers[base].num_rows
            if group and (rows + n > target_rows or nbytes + sizes[base] > target_bytes):
                groups.append(group)
                group, rows, nbytes = [], 0, 0
            group.append(base)
            rows, nbytes = rows + n, nbytes + sizes[base]
        groups.append(group)
    groups = [g for g in groups if len(g) > 1]
    if groups:
        _merge_all(t, groups, {b: footers[b].metadata for g in groups for b in g}, so, step, run_merges)
    return {
        "parts_before": len(sizes),
        "parts_after": len(_listed(t)),
        "rows": rows_before,
        "merged_groups": len(groups),
    }


def _target(sources: list[str]) -> str:
    return f"{PREFIX}{hashlib.sha1(chr(10).join(sorted(sources)).encode()).hexdigest()[:20]}.parquet"


def _merge_all(
    t: _Table,
    groups: list[list[str]],
    metadata: dict[str, dict[bytes, bytes] | None],
    so: dict[str, Any] | None,
    step: _Steps,
    run_merges: RunMerges,
) -> None:
    """Each group of parts into one sorted file, all under one commit record (see the module's docstring)."""
    sources = [b for g in groups for b in g]
    record = {"table": t.name, "state": "pending", "sources": sources, "targets": [_target(g) for g in groups]}
    t.write_journal(record, so)
    step()
    run_merges([Merge(t, g, {b: metadata[b] for b in g}, so) for g in groups])
    step()
    t.write_journal({**record, "state": "committed"}, so)
    step()
    t.remove(sources)
    step()
    t.fs.rm(t.path(JOURNAL))
    step()


@dataclass(frozen=True)
class Merge:
    """One group of a table's parts (``sources``, with their Parquet metadata) to merge into one sorted file;
    ``merge(job)`` does it, in any process that reaches the storage."""

    table: _Table
    sources: list[str]
    metadata: dict[str, dict[bytes, bytes] | None]
    storage_options: dict[str, Any] | None


#: Runs every merge of a list, returning once all are written (raising the first error).
RunMerges = Callable[[list[Merge]], None]


def merge(job: Merge) -> None:
    """Read ``job``'s sources, sort their rows by :data:`SORT_KEYS`, write the target whole (zstd)."""
    t = job.table
    data = pa.concat_tables([_read(t, b) for b in job.sources], promote_options="default")
    keys = [k for k in SORT_KEYS.get(t.name, ["song_id"]) if k in data.column_names]
    data = data.sort_by([(k, "ascending") for k in keys])
    meta = {**_metadata(data, t.name), **merged_batches([(b, job.metadata[b]) for b in job.sources])}
    data = data.replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(data, buf, compression="zstd", row_group_size=128 * 1024)
    storage.write_bytes_atomic(t.uri(_target(job.sources)), buf.getvalue(), job.storage_options)


def _in_threads(jobs: list[Merge], *, workers: int) -> None:
    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(merge, jobs))


def _read(t: _Table, base: str) -> pa.Table:
    with t.fs.open(t.path(base), "rb") as f:
        return pq.read_table(f)
