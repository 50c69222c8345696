"""How long ``mgr-batch similar`` takes to answer, by catalog size and by how the embeddings table is laid out.

Run from the repository root:

    python benchmarks/similar.py                              # 10k, 50k, 100k, 200k vectors (~3 min, ~2 GB disk)
    python benchmarks/similar.py --sizes 100000 --repeats 5

Each size is a synthetic tag output whose ``embeddings/`` table holds N random vectors of ``--dims`` values
(the default's 1,168), in the table's own schema (its vector type: float16 or float32), written as parts of
``--rows-per-part`` rows (1,000 by default; a tag run writes one part per batch of --songs-per-task songs,
``mgr-batch compact`` merges them into files of up to a million rows) and, with ``--small-parts``, also as
parts of 16 rows, as an uncompacted run of the default batch size leaves them. Timed, from a warm page cache
(the median of ``--repeats`` calls after one untimed): building the search copy beside the tables
(:func:`mgr_batch.io.similar.refresh`: reading the vectors from Parquet, as the end of a ``tag`` run does),
then :func:`mgr_batch.io.similar.similar` for one song, k=10, whole (checking the copy is current, reading its
songs, memory-mapping its matrix, the search); and the search alone on a matrix in memory
(:func:`mgr_batch.io.similar.nearest`). The answer is checked against a float64 numpy search.

Writes benchmarks/results/similar.json and similar.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name  # noqa: E402

from mgr_batch.io import schemas, similar  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def embeddings_table(vectors: np.ndarray, start: int) -> pa.Table:
    """Rows ``start`` .. of a synthetic embeddings table in its schema (every column, the vector's own type)."""
    n, dims = vectors.shape
    schema = schemas.arrow_schema("embeddings")
    ids = [f"{i:016x}" for i in range(start, start + n)]
    values = {
        "song_id": ids,
        "path": [f"/music/song{i:07d}.mp3" for i in range(start, start + n)],
        "feature_id": ["0123456789ab"] * n,
        "feature": ["synthetic"] * n,
        "model_id": ["synthetic"] * n,
        "layer": ["synthetic"] * n,
        "dims": np.full(n, dims, np.int32),
        "n_clips": np.full(n, 10, np.int32),
    }
    arrays = []
    for field in schema:
        if field.name == "vector":
            item = field.type.value_type
            offsets = pa.array(np.arange(n + 1, dtype=np.int32) * dims)
            flat = pa.array(vectors.reshape(-1).astype(item.to_pandas_dtype()), item)
            arrays.append(pa.ListArray.from_arrays(offsets, flat))
        else:
            arrays.append(pa.array(values[field.name], field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_output(folder: Path, vectors: np.ndarray, rows_per_part: int) -> Path:
    (folder / "embeddings").mkdir(parents=True)
    (folder / "songs").mkdir()
    for lo in range(0, len(vectors), rows_per_part):
        part = embeddings_table(vectors[lo : lo + rows_per_part], lo)
        pq.write_table(part, folder / "embeddings" / f"part-{lo:09d}.parquet")
    return folder


def timed(call, repeats: int) -> tuple[float, object]:
    result = call()  # warm: the page cache, imports
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def measure(n: int, dims: int, rows_per_part: int, repeats: int, rng: np.random.Generator) -> dict:
    # Clustered like real embeddings (songs near a few dozen centres), not uniform noise.
    centres = rng.standard_normal((64, dims)).astype(np.float32)
    vectors = centres[rng.integers(0, 64, n)] + 0.5 * rng.standard_normal((n, dims)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        out = write_output(Path(tmp) / "out", vectors, rows_per_part)
        size = sum(p.stat().st_size for p in (out / "embeddings").iterdir())
        song = f"{n // 2:016x}"
        t0 = time.perf_counter()
        similar.refresh(str(out))  # what the end of a tag run does (or the first query after it)
        build = time.perf_counter() - t0
        whole, found = timed(lambda: similar.similar(str(out), song=song, k=10), repeats)
    stored = vectors.astype(schemas.arrow_schema("embeddings").field("vector").type.value_type.to_pandas_dtype())
    matrix = stored.astype(np.float32)
    search, _ = timed(lambda: similar.nearest(matrix, matrix[n // 2], 10, exclude=np.array([n // 2])), repeats)
    m = stored.astype(np.float64)
    sims = m @ m[n // 2] / (np.linalg.norm(m, axis=1) * np.linalg.norm(m[n // 2]))
    sims[n // 2] = -np.inf
    want = [f"{i:016x}" for i in np.argsort(-sims, kind="stable")[:10]]
    return {
        "n": n,
        "dims": dims,
        "rows_per_part": rows_per_part,
        "parts": -(-n // rows_per_part),
        "table_mb": round(size / 2**20, 1),
        "build_copy_s": round(build, 3),
        "similar_s": round(whole, 4),
        "search_only_s": round(search, 4),
        "same_answer_as_float64": [f["song_id"] for f in found] == want,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000,100000,200000")
    parser.add_argument("--dims", type=int, default=1168)
    parser.add_argument("--rows-per-part", type=int, default=1000)
    parser.add_argument("--small-parts", action="store_true", help="also 100k vectors in parts of 16 rows")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = [measure(int(n), args.dims, args.rows_per_part, args.repeats, rng) for n in args.sizes.split(",")]
    if args.small_parts:
        rows.append(measure(100_000, args.dims, 16, args.repeats, rng))
    vector_type = str(schemas.arrow_schema("embeddings").field("vector").type.value_type)
    result = {"cpu": cpu_name(), "vector_type": vector_type, "repeats": args.repeats, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "similar.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# `mgr-batch similar`: exact search time by catalog size",
        "",
        f"`python benchmarks/similar.py {' '.join(sys.argv[1:])}`".replace(" `", "`") + f" on {result['cpu']} "
        f"(a shared 2-core machine), vectors of {args.dims} values stored as {vector_type}: building the search "
        f"copy from the Parquet parts once (the end of a tag run), then, from a warm page cache, median of "
        f"{args.repeats} calls: the whole query and the search alone on a matrix in memory.",
        "",
        "| vectors | parts (rows each) | table MB | build copy, s | similar, s | search alone, s | answer = float64 |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['n']:,} | {r['parts']:,} ({r['rows_per_part']:,}) | {r['table_mb']} | {r['build_copy_s']:.1f} | "
        f"{r['similar_s']:.3f} | "
        f"{r['search_only_s']:.3f} | {'yes' if r['same_answer_as_float64'] else 'NO'} |"
        for r in rows
    ]
    big = max(rows, key=lambda r: r["n"])
    per_vector = big["similar_s"] / big["n"]
    lines += [
        "",
        f"The query grows linearly, {1e6 * per_vector:.1f} µs per stored vector at {big['n']:,}: under a second up "
        f"to about {int(1 / per_vector / 1000) * 1000:,} vectors on this machine, where an approximate index "
        "(usearch, FAISS) would take over. Building the copy is the Parquet read of the list column.",
    ]
    (RESULTS / "similar.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
