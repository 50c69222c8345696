"""The output folder across runs: what earlier runs wrote, which files are done, pruning rows to redo.

A file is done when the songs or errors table holds its ``path`` with the same ``size``, ``mtime`` and
``model_id`` (an error of stage ``read`` never counts: the file is tried again); anything else is (re)done, and its old rows are pruned first so no song appears twice.
Songs rows are written last in every batch (after its clips, errors and timeline), so a songs row implies
its clips; clips (or timeline rows) of songs without a songs row are leftovers of a killed run and are
pruned on the next run. A table being compacted is read as its commit record says (see :mod:`mgr_batch.io.compaction`),
so no row is counted twice while merged files and their sources both exist.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from mgr_batch.io import compaction, schemas, storage
from mgr_batch.io.schemas import OPTIONAL_TAG_TABLES, TAG_TABLES

log = logging.getLogger(__name__)

TABLES = (*TAG_TABLES, *OPTIONAL_TAG_TABLES)

KEY = ["path", "size", "mtime", "model_id"]


def _parts(output: str, table: str, so: dict[str, Any] | None) -> tuple[Any, list[str]]:
    """The filesystem and the parts of ``table`` a reader must read (a compaction's commit record honoured)."""
    fs, root = storage.filesystem(storage.join(output, table), so)
    fs.invalidate_cache(root)  # other processes (workers, a compaction) write there: never a stale listing
    if not fs.exists(root):
        return fs, []
    parts = sorted(p for p in fs.ls(root, detail=False) if p.endswith(".parquet") and not _hidden(p))
    return fs, compaction.visible(parts, compaction.read_journal(fs, root))


def parts(output: str, table: str, so: dict[str, Any] | None) -> tuple[Any, list[str]]:
    """The filesystem and the Parquet files of ``table`` to read, as :func:`dataset` reads them."""
    return _parts(output, table, so)


def _hidden(path: str) -> bool:
    return os.path.basename(path).startswith((".", "_"))


def dataset(output: str, table: str, so: dict[str, Any] | None) -> pads.Dataset | None:
    """The parts of ``table`` a reader must read (:func:`parts`) as one ``pyarrow.dataset`` (its schema: the
    first part's), or None when the table has none. Use it to read a few columns or rows of a large table."""
    fs, paths = _parts(output, table, so)
    # pyarrow wraps an fsspec filesystem itself (PyFileSystem(FSSpecHandler(fs)))
    return pads.dataset(paths, filesystem=fs, format="parquet") if paths else None


def frame(
    data: pads.Dataset | None, columns: list[str] | None = None, filter: pc.Expression | None = None
) -> pd.DataFrame:
    """``columns`` (all when None) of the rows of ``data`` where ``filter`` holds; an empty frame with
    ``columns`` when ``data`` is None (a table with no parts)."""
    if data is None:
        return pd.DataFrame(columns=columns)
    return data.to_table(columns=columns, filter=filter).to_pandas()


def read_column_set(
    output: str,
    table: str,
    columns: list[str] | None,
    so: dict[str, Any] | None,
    *,
    filter: pc.Expression | None = None,
) -> pd.DataFrame:
    """Selected columns (all when None) of every part of ``table``, the rows where ``filter`` holds (an empty
    frame with ``columns`` when there is no part)."""
    return frame(dataset(output, table, so), columns, filter)


@dataclass(frozen=True)
class Plan:
    """What a run must do: ``todo`` files, how many were ``skipped``, and song ids whose rows to ``prune``."""

    todo: pd.DataFrame
    skipped: int
    prune: frozenset[str]


def plan(
    files: pd.DataFrame, output: str, model_id: str, so: dict[str, Any] | None, *, require: tuple[str, ...] = ()
) -> Plan:
    """Compare the listing with what ``output`` already holds for ``model_id``.

    A tagged song is done only if each table of ``require`` (e.g. ``("timeline",)``) holds rows of it too.
    """
    cols = ["song_id", *KEY]
    errors = read_column_set(output, "errors", [*cols, "stage"], so)
    # A file whose bytes could not be read (stage "read": missing, unreachable, a connection that failed
    # mid-file) is tried again by every run; other errors are the file's own and stay until it changes.
    retry = set(errors.loc[errors["stage"] == "read", "song_id"])
    songs = read_column_set(output, "songs", cols, so)
    done = pd.concat([songs.assign(table="songs"), errors[cols].assign(table="errors")], ignore_index=True)
    done_key = done[~done["song_id"].isin(retry)]
    # songs with per-clip rows (clips, and the optional tables written before songs)
    clip_ids = set().union(
        *(read_column_set(output, t, ["song_id"], so)["song_id"] for t in ("clips", *OPTIONAL_TAG_TABLES))
    )
    if done.empty:
        return Plan(todo=files, skipped=0, prune=frozenset(clip_ids))
    complete = done_key
    for t in require:
        have = set(read_column_set(output, t, ["song_id"], so)["song_id"])
        complete = complete[(complete["table"] == "errors") | complete["song_id"].isin(have)]
    current = files[["path", "size", "mtime"]].assign(model_id=model_id)
    key = current.merge(complete[KEY].drop_duplicates(), on=KEY, how="left", indicator=True)["_merge"] == "both"
    is_done = key.to_numpy()
    todo = files[~is_done].reset_index(drop=True)
    redo = set(todo["song_id"])
    stale = set(done.loc[done["song_id"].isin(redo) | (done["model_id"] != model_id), "song_id"])
    orphans = clip_ids - set(songs["song_id"])
    return Plan(todo=todo, skipped=int(is_done.sum()), prune=frozenset(stale | orphans | (clip_ids & redo)))


def prune(output: str, song_ids: frozenset[str], so: dict[str, Any] | None) -> int:
    """Remove the rows of ``song_ids`` from every table, rewriting (or deleting) the parts that hold them."""
    if not song_ids:
        return 0
    return _remove_rows(output, lambda part, ids: ids.isin(song_ids).to_numpy(), so)


def deduplicate(output: str, files: pd.DataFrame, model_id: str, so: dict[str, Any] | None) -> int:
    """Keep one copy of each song that the songs and errors tables list under more than one part name; return
    the rows removed.

    Two copies arise when a killed run's worker outlives its driver and writes a batch after the rerun
    planned its work: the rerun does the songs again and, its batches being cut otherwise, writes them
    under other part names. The copy kept is, in this order, one whose ``path``, ``size``, ``mtime`` and
    ``model_id`` match ``files`` (the listing) and ``model_id``, a songs row over an error row, the part
    first by name; every table's rows of that song under the other part names are removed.
    """
    frames = []
    for rank, table in enumerate(("songs", "errors")):
        data = dataset(output, table, so)
        for part in data.get_fragments() if data is not None else ():
            found = part.to_table(columns=["song_id", *KEY]).to_pandas()
            frames.append(found.assign(part=os.path.basename(part.path), rank=rank))
    if not frames:
        return 0
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[rows["song_id"].duplicated(keep=False)]
    if rows.empty:
        return 0
    current = files[["path", "size", "mtime"]].assign(model_id=model_id).drop_duplicates()
    rows = rows.merge(current.assign(stale=False), on=KEY, how="left")
    rows["stale"] = rows["stale"].isna()
    keep = rows.sort_values(["song_id", "stale", "rank", "part"]).drop_duplicates("song_id")
    kept = dict(zip(keep["song_id"], keep["part"], strict=True))
    log.warning("%d song(s) were listed under more than one part; keeping one copy of each", len(kept))
    return _remove_rows(output, lambda part, ids: (ids.map(kept).fillna(part) != part).to_numpy(), so)


def _remove_rows(output: str, drop: Callable[[str, pd.Series], np.ndarray], so: dict[str, Any] | None) -> int:
    """Remove, from every part of every table, the rows where ``drop(part name, song ids)`` is true."""
    removed = 0
    for table in TABLES:
        fs, parts = _parts(output, table, so)
        for p in parts:
            with fs.open(p, "rb") as f:
                data = pq.read_table(f)
            keep = ~drop(os.path.basename(p), data.column("song_id").to_pandas())
            if keep.all():
                continue
            removed += int((~keep).sum())
            if not keep.any():
                fs.rm(p)
                continue
            buf = io.BytesIO()
            pq.write_table(data.filter(keep), buf, compression="zstd")
            storage.write_bytes_atomic(fs.unstrip_protocol(p) if storage.is_remote(output) else p, buf.getvalue(), so)
    return removed


def clear(output: str, so: dict[str, Any] | None) -> None:
    """Delete the tables of earlier runs (``--force``)."""
    for table in TABLES:
        fs, root = storage.filesystem(storage.join(output, table), so)
        if fs.exists(root):
            fs.rm(root, recursive=True)


def remove_temp_files(output: str, so: dict[str, Any] | None) -> None:
    """Delete half-written temp files a killed run left (readers never saw them: they start with a dot)."""
    for table in TABLES:
        fs, root = storage.filesystem(storage.join(output, table), so)
        if fs.exists(root):
            for p in fs.ls(root, detail=False):
                if os.path.basename(p).startswith(".tmp-"):
                    fs.rm(p)


def table_counts(output: str, so: dict[str, Any] | None) -> dict[str, int]:
    """Rows in each table of ``output`` now."""
    return {t: len(read_column_set(output, t, ["song_id"], so)) for t in TABLES}


#: The part that stands for a table with no rows (a table's only part when it has one).
EMPTY_PART = "part-empty.parquet"


def remove_empty_parts(output: str, so: dict[str, Any] | None) -> None:
    """Delete the :data:`EMPTY_PART` of every table (before a run writes rows; :func:`ensure_tables` puts
    back those still needed), so a table never mixes an empty part of an earlier model's columns with rows."""
    for table in (*TABLES, "segments"):
        fs, path = storage.filesystem(storage.join(output, table, EMPTY_PART), so)
        if fs.exists(path):
            fs.rm(path)


def ensure_tables(output: str, tables: tuple[str, ...], genres: tuple[str, ...], so: dict[str, Any] | None) -> None:
    """Give each of ``tables`` that has no part an empty one with its schema (``genres``: the probability
    columns), so that every table of a run can be read after it, e.g. ``pd.read_parquet("out/errors")``."""
    for table in tables:
        if _parts(output, table, so)[1]:
            continue
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist([], schema=schemas.arrow_schema(table, genres)), buf, compression="zstd")
        storage.write_bytes_atomic(storage.join(output, table, EMPTY_PART), buf.getvalue(), so)
