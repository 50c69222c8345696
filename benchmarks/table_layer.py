"""What a plain glob reader sees of a table after one song is redone, in mgr-batch's own layout and in Delta Lake
(delta-rs), the table format the decision record (docs/design/table-layer.md) weighs against it.

Run from the repository root (needs ``pip install deltalake duckdb``; neither is a dependency of mgr-batch):

    python benchmarks/table_layer.py

Each layout gets 100 batches of 16 songs, then one song's rows are replaced (as a rerun does for a changed
file). Reported: the rows a DuckDB ``read_parquet('<table>/*.parquet')`` counts, against the songs the table
holds, and the files in the folder. Writes benchmarks/results/table_layer.{json,md}.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BATCHES, SONGS = 100, 16


def batch(b: int) -> pa.Table:
    ids = [f"{b:08x}{i:08x}" for i in range(SONGS)]
    return pa.table({"song_id": ids, "genre": ["rock"] * SONGS, "confidence": [0.5] * SONGS})


def glob_count(folder: Path) -> int:
    return duckdb.sql(f"select count(*) from read_parquet('{folder}/*.parquet')").fetchall()[0][0]


def ours(root: Path) -> dict:
    """One part per batch; redoing a song rewrites its batch's part in place (io.index.Output.remove_rows)."""
    folder = root / "songs"
    folder.mkdir(parents=True)
    started = time.perf_counter()
    for b in range(BATCHES):
        pq.write_table(batch(b), folder / f"part-{b:05d}.parquet")
    part = folder / "part-00007.parquet"
    kept = pq.read_table(part).filter(pc.field("song_id") != f"{7:08x}{3:08x}")
    pq.write_table(kept, part)
    redone = batch(7).filter(pc.field("song_id") == f"{7:08x}{3:08x}").set_column(2, "confidence", pa.array([0.9]))
    pq.write_table(redone, folder / "part-redo.parquet")
    return {
        "seconds": time.perf_counter() - started,
        "glob_rows": glob_count(folder),
        "files": len(list(folder.iterdir())),
    }


def delta(root: Path) -> dict:
    """One append (commit) per batch; redoing a song is a delete and an append, as a Delta merge would do."""
    from deltalake import DeltaTable, write_deltalake

    folder = root / "songs"
    started = time.perf_counter()
    for b in range(BATCHES):
        write_deltalake(str(folder), batch(b), mode="append")
    table = DeltaTable(str(folder))
    table.delete(f"song_id = '{7:08x}{3:08x}'")
    redone = batch(7).filter(pc.field("song_id") == f"{7:08x}{3:08x}")
    write_deltalake(str(folder), redone, mode="append")
    seconds = time.perf_counter() - started
    table = DeltaTable(str(folder))
    return {
        "seconds": seconds,
        "glob_rows": glob_count(folder),
        "delta_rows": table.to_pyarrow_table().num_rows,
        "files": len(list(folder.glob("*.parquet"))),
        "log_entries": len(list((folder / "_delta_log").glob("*.json"))),
    }


def main() -> None:
    import deltalake

    with tempfile.TemporaryDirectory() as tmp:
        result = {"ours": ours(Path(tmp) / "ours"), "delta": delta(Path(tmp) / "delta")}
    record = {
        "command": "python benchmarks/table_layer.py",
        "cpu": cpu_name(),
        "deltalake": deltalake.__version__,
        "duckdb": duckdb.__version__,
        "songs": BATCHES * SONGS,
        **result,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "table_layer.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# table_layer",
        "",
        f"`{record['command']}` on {record['cpu']}; deltalake {record['deltalake']}, duckdb {record['duckdb']}.",
        f"{record['songs']} songs in {BATCHES} batches, then one song redone. A plain glob read counts:",
        "",
        "| layout | glob rows | songs held | Parquet files | write seconds |",
        "|---|---|---|---|---|",
        f"| mgr-batch parts | {result['ours']['glob_rows']} | {record['songs']} | {result['ours']['files']} | "
        f"{result['ours']['seconds']:.2f} |",
        f"| Delta Lake (delta-rs) | {result['delta']['glob_rows']} | {result['delta']['delta_rows']} | "
        f"{result['delta']['files']} ({result['delta']['log_entries']} log entries) | {result['delta']['seconds']:.2f} |",
    ]
    (RESULTS / "table_layer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
