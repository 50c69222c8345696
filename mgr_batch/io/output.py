"""The output folder across runs: what earlier runs wrote, which files are done, pruning rows to redo.

A file is done when the songs or errors table holds its song (the id of its ``path``) with the same ``size``,
``mtime`` and ``model_id`` (an error of stage ``read`` never counts: the file is tried again); anything else is
(re)done, and its old rows are pruned first so no song appears twice. Songs rows are written last in every batch
(after its clips, errors and timeline), so a songs part implies its batch's other parts; parts of a batch with no
songs part are leftovers of a killed run and are pruned on the next run. The run-time work reads only the key
columns of songs and errors parts it has not seen before (:mod:`mgr_batch.io.index`), never a clip row, so it
grows with what a run adds, not with what the output holds. A table being compacted is read as its commit
record says (see :mod:`mgr_batch.io.compaction`), so no row is counted twice while merged files and their
sources both exist.
"""

from __future__ import annotations

import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from mgr_batch.io import compaction, index, schemas, storage
from mgr_batch.io.folders import Part, version_of
from mgr_batch.io.index import DEPENDENT_TABLES, EMPTY_PART, KEY_TABLES, TABLES, Output

log = logging.getLogger(__name__)

#: What makes a file done: its song (the path's id), size and modification time, tagged by the model.
KEY = ["song_id", "size", "mtime", "model_id"]


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
    return read_table(data, columns, filter).to_pandas()


#: Parts gathered into one Arrow table at a time by :func:`read_table`.
READ_CHUNK = 1000


def read_table(
    data: pads.Dataset,
    columns: list[str] | None = None,
    filter: pc.Expression | None = None,
    *,
    with_file: bool = False,
) -> pa.Table:
    """``columns`` of the rows of ``data``'s files where ``filter`` holds (with ``with_file``, each row's file
    in a ``file`` column, dictionary-encoded: one string per file), each file read by itself in a pool of
    threads and gathered a thousand at a time: the memory of the rows, not of a dataset's metadata of every
    file (a million-song output has tens of thousands of parts)."""
    files, fs = list(data.files), data.filesystem

    def read(path: str) -> pa.Table:
        with fs.open_input_file(path) as f:
            part = pq.ParquetFile(f, pre_buffer=False)
            names = part.schema_arrow.names
            wanted = None if columns is None else [c for c in columns if c in names]
            table = part.read(columns=wanted, use_threads=False)
        table = table.filter(filter) if filter is not None else table
        if not with_file:
            return table
        return table.append_column("file", pa.DictionaryArray.from_arrays(np.zeros(table.num_rows, np.int32), [path]))

    if len(files) <= 1 and not with_file:
        return data.to_table(columns=columns, filter=filter)
    chunks = []
    with ThreadPoolExecutor(index.IO_THREADS) as pool:
        for k in range(0, len(files), READ_CHUNK):
            parts = list(pool.map(read, files[k : k + READ_CHUNK]))
            chunks.append(pa.concat_tables(parts, promote_options="default").combine_chunks())
    return pa.concat_tables(chunks, promote_options="default")


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


def plan(files: pd.DataFrame, tables: Output, model_id: str, *, require: tuple[str, ...] = ()) -> Plan:
    """Compare the listing with what ``tables`` already hold for ``model_id``; reads no clip row.

    A tagged song is done only if each table of ``require`` (e.g. ``("timeline",)``) holds rows of its batch too.
    Song ids to prune: the songs and errors rows of files to redo and of other models, and the rows of the
    parts a killed run left without their songs part (:meth:`Output.orphan_parts`, read: they are few).
    """
    keys = tables.keys
    # A file whose bytes could not be read (stage "read": missing, unreachable, a connection that failed
    # mid-file) is tried again by every run; other errors are the file's own and stay until it changes.
    retry = keys.loc[keys["stage"].eq("read") & keys["table"].eq("errors"), "song_id"]
    complete = keys[~keys["song_id"].isin(retry)] if len(retry) else keys
    for t in require:
        have, unknown = tables.batches(t)
        holds = complete["batch"].isin(have)
        if unknown or complete["batch"].isna().any():  # files merged by an older version: ask the rows
            holds |= complete["song_id"].isin(set(tables.song_ids(t, list(tables.parts[t]))))
        complete = complete[complete["table"].eq("errors") | holds]
    orphans = {t: tables.song_ids(t, names) for t, names in tables.orphan_parts().items() if names}
    orphan_ids = frozenset().union(*(set(ids) for ids in orphans.values()))
    if keys.empty:
        return Plan(todo=files, skipped=0, prune=orphan_ids)
    is_done = _is_done(files, complete[complete["model_id"].eq(model_id).to_numpy()])
    todo = files[~is_done].reset_index(drop=True)
    redo = keys["song_id"].isin(todo["song_id"]) if len(todo) else False
    stale = frozenset(keys.loc[redo | keys["model_id"].ne(model_id), "song_id"])
    return Plan(todo=todo, skipped=int(is_done.sum()), prune=stale | orphan_ids)


def _is_done(files: pd.DataFrame, done: pd.DataFrame) -> np.ndarray:
    """Whether each listed file (a row of ``files``) has a row of ``done`` with its ``song_id``, ``size`` and
    ``mtime``: a hash lookup of each id in Arrow, then the few files whose id is there with another size or
    mtime (a changed file, or an id with more than one row) compared with each of its rows."""
    ids = pa.array(files["song_id"], pa.string())
    at = pc.fill_null(pc.index_in(ids, value_set=pa.array(done["song_id"], pa.string())), -1).to_numpy()
    found = at >= 0
    first = at[found]
    is_done = np.zeros(len(files), bool)
    is_done[found] = (done["size"].to_numpy()[first] == files["size"].to_numpy()[found]) & (
        done["mtime"].to_numpy()[first] == files["mtime"].to_numpy()[found]
    )
    other = found & ~is_done
    if other.any():
        rows = done[done["song_id"].isin(files["song_id"][other])]
        held = set(zip(rows["song_id"], rows["size"], rows["mtime"], strict=True))
        listed = files.loc[other, ["song_id", "size", "mtime"]].itertuples(index=False, name=None)
        is_done[other] = [row in held for row in listed]
    return is_done


def prune(tables: Output, song_ids: frozenset[str]) -> int:
    """Remove the rows of ``song_ids`` from every table; returns the rows removed.

    Only the parts that can hold them are read and rewritten (or deleted when emptied): the songs and errors
    parts that list them, the parts of their batches in the other tables, and the parts a killed run left.
    The other tables go first and the songs table last, so that a prune a kill interrupts leaves songs rows
    (which the next run prunes again), never clips without their song.
    """
    if not song_ids:
        return 0
    keys = tables.keys[tables.keys["song_id"].isin(song_ids)]
    return _remove(tables, [(keys, song_ids)])


def _remove(
    tables: Output,
    removals: list[tuple[pd.DataFrame, set[str] | frozenset[str]]],
    keep_parts: frozenset[tuple[str, str]] = frozenset(),
) -> int:
    """Remove each removal's ids (with the key rows that locate them) from the parts those rows name, from the
    other tables' parts of their batches (but ``keep_parts``) and from the orphan parts; other tables first."""
    removed = 0
    orphans = tables.orphan_parts()
    for table in (*DEPENDENT_TABLES, "errors", "songs"):
        todo: dict[str, set[str]] = {}
        for keys, ids in removals:
            if table in KEY_TABLES:
                names = set(keys.loc[keys["table"].eq(table), "part"])
            else:
                names = set(tables.files_holding(table, _batches_of_rows(tables, keys))) | set(orphans[table])
                names -= {n for t, n in keep_parts if t == table}
            for name in names:
                todo.setdefault(name, set()).update(ids)
        for name, ids in sorted(todo.items()):
            if name in tables.parts[table]:
                removed += tables.remove_rows(table, name, ids)
    return removed


def _batches_of_rows(tables: Output, keys: pd.DataFrame) -> set[str]:
    """The batches of key rows: their own where known, else every batch of the files they lie in."""
    found = set(keys["batch"].dropna())
    for table, part in keys.loc[keys["batch"].isna(), ["table", "part"]].drop_duplicates().itertuples(index=False):
        batches = tables.parts[table][part].batches if part in tables.parts[table] else None
        found |= set(batches or ()) if batches is not None else set(tables.batches("songs")[0])
    return found


def deduplicate(tables: Output, files: pd.DataFrame, model_id: str) -> int:
    """Keep one copy of each song that the songs and errors tables list under more than one part name; return
    the rows removed.

    Two copies arise when a killed run's worker outlives its driver and writes a batch after the rerun
    planned its work: the rerun does the songs again and, its batches being cut otherwise, writes them
    under other part names. The copy kept is, in this order, one whose ``song_id``, ``size``, ``mtime`` and
    ``model_id`` match ``files`` (the listing) and ``model_id``, a songs row over an error row, the part
    first by name; the other copies' rows in every table are removed (in the other tables, from the parts of
    their batches that do not also hold the kept copy's).
    """
    keys = tables.keys
    ids = pa.array(keys["song_id"], pa.string())
    counts = pc.value_counts(ids)  # in Arrow: a million ids hashed without a Python object each
    listed_twice = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    if not len(listed_twice):
        return 0
    rows = keys[pc.is_in(ids, value_set=listed_twice).to_numpy(zero_copy_only=False)]
    current = files[["song_id", "size", "mtime"]].assign(model_id=model_id).drop_duplicates()
    rows = rows.merge(current.assign(stale=False), on=KEY, how="left")
    rows["stale"] = rows["stale"].isna()
    rows["rank"] = rows["table"].map({"songs": 0, "errors": 1})
    ordered = rows.sort_values(["song_id", "stale", "rank", "part"])
    kept = ordered.drop_duplicates("song_id")
    dropped = ordered[~ordered.index.isin(kept.index)]
    log.warning("%d song(s) were listed under more than one part; keeping one copy of each", len(kept))
    kept_batch = dict(zip(kept["song_id"], kept["batch"], strict=True))
    removals = [(group, set(group["song_id"])) for _, group in dropped.groupby(["table", "part"])]
    # A dependent part that holds the kept copy's batch too keeps the song's rows: only other batches lose them.
    kept_batches = {b for b in kept_batch.values() if isinstance(b, str)}
    keep = frozenset((t, n) for t in DEPENDENT_TABLES for n in tables.files_holding(t, kept_batches) if kept_batches)
    return _remove(tables, removals, keep)


def open_for_run(output: str, so: dict[str, Any] | None) -> Output:
    """The output as a tag run starts on it: a killed compaction finished or rolled back, then each table
    listed once and only the parts new to the index read."""
    compaction.repair(output, so)
    return Output.open(output, so)


def start_run(
    tables: Output, files: pd.DataFrame, model_id: str, *, require: tuple[str, ...] = ()
) -> tuple[Output, Plan]:
    """What a tag run does before it tags, on the output :func:`open_for_run` gave: temp files and a killed
    run's late copies removed, the plan made and its stale rows pruned, and the empty parts dropped when the run
    will write rows."""
    tables.remove_temp_files()
    deduplicate(tables, files, model_id)
    todo = plan(files, tables, model_id, require=require)
    pruned = prune(tables, todo.prune)
    if len(todo.todo):  # the run writes rows; a run with nothing to do leaves the empty parts (no DELETE, no PUT)
        remove_empty_parts(tables)
    log.info(
        "%d file(s) to tag with %s (%d done, %d stale rows pruned)", len(todo.todo), model_id, todo.skipped, pruned
    )
    return tables, todo


def end_run(
    tables: Output, files: pd.DataFrame, model_id: str, names: tuple[str, ...], genres: tuple[str, ...], *, wrote: bool
) -> dict[str, int]:
    """What a tag run does after it tagged (``wrote``): the tables listed again (the run's parts, and a killed
    run's batch that landed while it did the same songs, deduplicated), each of ``names`` given an empty part
    if it has none, and the index saved; returns the rows each table now holds."""
    if wrote:
        tables.refresh()
        deduplicate(tables, files, model_id)
    ensure_tables(tables.uri, names, genres, tables.so, tables)
    tables.save()
    return tables.counts()


def clear(output: str, so: dict[str, Any] | None) -> None:
    """Delete the tables of earlier runs and the index (``--force``)."""
    for table in TABLES:
        fs, root = storage.filesystem(storage.join(output, table), so)
        if fs.exists(root):
            fs.rm(root, recursive=True)
    index.clear(output, so)


def remove_empty_parts(tables: Output) -> None:
    """Delete the :data:`EMPTY_PART` of every table (before a run writes rows; :func:`ensure_tables` puts
    back those still needed), so a table never mixes an empty part of an earlier model's columns with rows."""
    for table in TABLES:
        if EMPTY_PART in tables.parts[table]:
            t = tables.tables[table]
            t.fs.rm(t.path(EMPTY_PART))
            del tables.parts[table][EMPTY_PART]
            t.versions.pop(EMPTY_PART, None)


def ensure_tables(
    output: str,
    names: tuple[str, ...],
    genres: tuple[str, ...],
    so: dict[str, Any] | None,
    tables: Output | None = None,
) -> None:
    """Give each table of ``names`` that has no part an empty one with its schema (``genres``: the probability
    columns), so that every table of a run can be read after it, e.g. ``pd.read_parquet("out/errors")``.
    With ``tables`` (the run's :class:`Output`), its listing says which have parts and it learns the new ones."""
    for table in names:
        if tables.parts[table] if tables is not None else _parts(output, table, so)[1]:
            continue
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist([], schema=schemas.arrow_schema(table, genres)), buf, compression="zstd")
        storage.write_bytes_atomic(storage.join(output, table, EMPTY_PART), buf.getvalue(), so)
        if tables is not None:
            fs, path = storage.filesystem(storage.join(output, table, EMPTY_PART), so)
            tables.parts[table][EMPTY_PART] = Part(EMPTY_PART, version_of(fs.info(path)), 0, frozenset())


def table_counts(output: str, so: dict[str, Any] | None) -> dict[str, int]:
    """Rows in each table of ``output`` now (from the index and the footers of parts it does not know)."""
    return Output.open(output, so).counts()
