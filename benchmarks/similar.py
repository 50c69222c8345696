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

``--index`` instead compares the two approximate-index libraries on the same synthetic vectors (L2-normalized,
rounded through float16 as stored), in memory, each with HNSW at the same settings (16 links per node, 128
candidates while adding, 64 while searching, 2 threads to build, 1 to search): usearch storing float16, FAISS
``IndexHNSWSQ`` storing float16 and ``IndexHNSWFlat`` storing float32: build time, index size on disk, query
time (mean of ``--queries`` stored vectors as queries), recall@10 against exact search, and each library's
installed size (FAISS is not a dependency: ``pip install faiss-cpu`` first). Writes
benchmarks/results/similar_index.json and puts its table in similar.md.

    python benchmarks/similar.py --index --sizes 100000,200000      # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
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


def installed_mb(*dists: str) -> float:
    """The installed size of distributions (their files as the wheel lists them), MB."""
    total = 0
    for name in dists:
        dist = importlib.metadata.distribution(name)
        total += sum(os.path.getsize(dist.locate_file(f)) for f in dist.files or () if dist.locate_file(f).exists())
    return round(total / 2**20, 1)


def measure_index(n: int, dims: int, queries: int, rng: np.random.Generator, flat: bool = True) -> list[dict]:
    """usearch against FAISS, HNSW at the same settings, on ``n`` clustered vectors: one row per index kind
    (FAISS's float32 ``IndexHNSWFlat`` only with ``flat``)."""
    import faiss
    from usearch.index import Index

    ip = faiss.METRIC_INNER_PRODUCT  # of L2-normalized vectors: cosine

    centres = rng.standard_normal((64, dims)).astype(np.float32)
    x = centres[rng.integers(0, 64, n)] + 0.5 * rng.standard_normal((n, dims)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x = x.astype(np.float16).astype(np.float32)  # as stored
    q = x[rng.choice(n, queries, replace=False)]
    exact = np.argsort(-(x @ q.T), axis=0, kind="stable")[:10].T
    similar.nearest(x, q[0], 10)  # warm
    t0 = time.perf_counter()
    for v in q[:5]:
        similar.nearest(x, v, 10)  # one query as exact search answers it (the matrix in memory)
    exact_s = (time.perf_counter() - t0) / 5
    rows = []

    def row(name: str, build: float, path: Path, search, installed: float) -> dict:
        found = search(q[:1])  # warm
        t0 = time.perf_counter()
        found = [search(q[i : i + 1])[0] for i in range(queries)]
        query = (time.perf_counter() - t0) / queries
        recall = float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact, strict=True)]))
        return {
            "n": n,
            "index": name,
            "build_s": round(build, 1),
            "disk_mb": round(path.stat().st_size / 2**20, 1),
            "query_ms": round(1000 * query, 3),
            "exact_query_ms": round(1000 * exact_s, 1),
            "recall_at_10": round(recall, 4),
            "installed_mb": installed,
        }

    with tempfile.TemporaryDirectory() as tmp:
        index = Index(ndim=dims, metric="cos", dtype="f16", connectivity=16, expansion_add=128, expansion_search=64)
        t0 = time.perf_counter()
        index.add(np.arange(n, dtype=np.uint64), x, threads=2)
        build = time.perf_counter() - t0
        index.save(str(Path(tmp) / "u.usearch"))
        view = Index.restore(str(Path(tmp) / "u.usearch"), view=True)
        rows.append(
            row(
                "usearch HNSW f16",
                build,
                Path(tmp) / "u.usearch",
                lambda v: np.atleast_2d(view.search(v, 10, threads=1).keys),
                installed_mb("usearch", "numkong"),
            )
        )
        for name, make in (
            ("FAISS HNSWSQ fp16", lambda: faiss.IndexHNSWSQ(dims, faiss.ScalarQuantizer.QT_fp16, 16, ip)),
            ("FAISS HNSWFlat f32", lambda: faiss.IndexHNSWFlat(dims, 16, ip)),
        )[: 2 if flat else 1]:
            index = make()
            index.hnsw.efConstruction, index.hnsw.efSearch = 128, 64
            faiss.omp_set_num_threads(2)
            t0 = time.perf_counter()
            if not index.is_trained:
                index.train(x)
            index.add(x)
            build = time.perf_counter() - t0
            faiss.omp_set_num_threads(1)
            faiss.write_index(index, str(Path(tmp) / "f.faiss"))
            rows.append(
                row(
                    name,
                    build,
                    Path(tmp) / "f.faiss",
                    lambda v, index=index: index.search(v, 10)[1],
                    installed_mb("faiss-cpu"),
                )
            )
    return rows


def main_index(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    rows = [
        r for n in args.sizes.split(",") for r in measure_index(int(n), args.dims, args.queries, rng, not args.no_flat)
    ]
    command = f"python benchmarks/similar.py {' '.join(sys.argv[1:])}"
    earlier = RESULTS / "similar_index.json"
    result = json.loads(earlier.read_text()) if earlier.exists() else {"commands": [], "rows": []}
    done = {(r["n"], r["index"]) for r in rows}  # an earlier run's rows of other sizes kept
    result["rows"] = sorted(
        [r for r in result.get("rows", []) if (r["n"], r["index"]) not in done] + rows, key=lambda r: r["n"]
    )
    result["commands"] = [c for c in result.get("commands", []) if c != command] + [command]
    result["cpu"] = cpu_name()
    rows = result["rows"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "similar_index.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        ", ".join(f"`{c}`" for c in result["commands"]) + f" on {result['cpu']} (shared, 2 cores): HNSW, "
        "16 links, 128/64 candidates adding/searching, built on 2 threads, searched on 1; query time the mean "
        f"of {args.queries} single queries; recall@10 against exact search of the same float16-rounded vectors.",
        "",
        "| vectors | index | build, s | on disk, MB | query, ms | exact numpy, ms | recall@10 | installed, MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['n']:,} | {r['index']} | {r['build_s']} | {r['disk_mb']} | {r['query_ms']} | {r['exact_query_ms']} | "
        f"{r['recall_at_10']:.3f} | {r['installed_mb']} |"
        for r in rows
    ]
    print("\n".join(lines))
    heading = "## Approximate index: usearch against FAISS"
    text = (RESULTS / "similar.md").read_text() if (RESULTS / "similar.md").exists() else ""
    before, _, after = text.partition(heading)
    rest = after[after.find("\n## ") :] if "\n## " in after else ""
    (RESULTS / "similar.md").write_text(before.rstrip() + f"\n\n{heading}\n\n" + "\n".join(lines) + "\n" + rest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000,100000,200000")
    parser.add_argument("--dims", type=int, default=1168)
    parser.add_argument("--rows-per-part", type=int, default=1000)
    parser.add_argument("--small-parts", action="store_true", help="also 100k vectors in parts of 16 rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--index", action="store_true", help="compare usearch and FAISS instead (see above)")
    parser.add_argument("--queries", type=int, default=100, help="with --index: stored vectors used as queries")
    parser.add_argument("--no-flat", action="store_true", help="with --index: leave out FAISS's float32 index")
    args = parser.parse_args()
    if args.index:
        main_index(args)
        return
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
        f"to about {int(1 / per_vector / 1000) * 1000:,} vectors on this machine, where `similar` goes through "
        "its approximate index instead (below). Building the copy is the Parquet read of the list column.",
    ]
    earlier = (RESULTS / "similar.md").read_text() if (RESULTS / "similar.md").exists() else ""
    kept = earlier[earlier.find("\n## ") :] if "\n## " in earlier else ""  # the --index sections
    (RESULTS / "similar.md").write_text("\n".join(lines) + "\n" + kept)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
