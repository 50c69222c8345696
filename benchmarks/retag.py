"""How long does ``mgr-batch retag`` take over a catalog's stored vectors? Wall and core-seconds, no audio.

    nice -n 10 python benchmarks/retag.py [--songs 1000000] [--work /tmp/retag-bench] [--out benchmarks/results/retag.md]

Synthesizes a tag output of ``--songs`` songs (songs parts and embeddings parts of 10,000 songs each, as ``tag``
writes them, the vectors random float16 of the shipped default's 1,168 values and its feature id), then runs
``mgr-batch retag`` on it with the shipped default head, on an embedded local Ray with every CPU. Core-seconds
are the CPU time of the driver and of Ray's processes (raylet, GCS, workers) during the retag.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PART_SONGS = 10_000


def synthesize(out: Path, n: int) -> float:
    """A tag output of ``n`` songs with stored vectors of the default's kind; returns its embeddings' bytes."""
    from mgr_batch.io import schemas
    from mgr_batch.io.writer import META_KINDS, _write_parts, part_name, vector_array
    from mgr_batch.models import checkpoint
    from mgr_batch.stages.vectors import stored_kind

    spec = checkpoint.load_spec(None)
    kind = stored_kind(spec)
    dims = 1168
    rng = np.random.default_rng(0)
    meta = schemas.part_metadata(spec.model_id, spec.genres)
    songs_schema = schemas.arrow_schema("songs", spec.genres)
    for lo in range(0, n, PART_SONGS):
        k = min(PART_SONGS, n - lo)
        ids = np.array([f"{i:016x}" for i in range(lo, lo + k)])
        paths = [f"/catalog/{i // 1000:04d}/{i:08d}.ogg" for i in range(lo, lo + k)]
        vectors = np.abs(rng.normal(size=(k, dims))).astype(np.float16)
        cols = {
            "song_id": ids,
            "path": paths,
            "feature_id": [kind.feature_id] * k,
            "feature": [kind.description] * k,
            "dims": np.full(k, dims, np.int32),
            "n_clips": np.full(k, 10, np.int32),
        }
        emb_schema = schemas.arrow_schema("embeddings")
        emb = pa.Table.from_arrays(
            [
                vector_array(vectors, np.full(k, dims)) if f.name == "vector" else pa.array(cols[f.name], f.type)
                for f in emb_schema
            ],
            schema=emb_schema,
        ).replace_schema_metadata({META_KINDS: json.dumps({kind.feature_id: kind.to_json()}).encode()})
        base = {
            "song_id": ids,
            "path": paths,
            "size": np.full(k, 5_000_000, np.int64),
            "mtime": np.full(k, 1.7e9),
            "duration_s": np.full(k, 30.0),
            "analyzed_s": np.full(k, 30.0),
            "truncated": np.zeros(k, bool),
            "sample_rate": np.full(k, 44100, np.int32),
            "channels": np.full(k, 2, np.int32),
            "decode_notes": [""] * k,
            "n_clips": np.full(k, 10, np.int32),
            "genre": [spec.genres[0]] * k,
            "confidence": np.full(k, 0.5, np.float32),
            "certainty": np.full(k, 0.1, np.float32),
            "top3": [list(spec.genres[:3])] * k,
            "model_id": [spec.model_id] * k,
        }
        base |= {f"p_{g}": np.full(k, 0.1, np.float32) for g in spec.genres}
        arrays = []
        for f in songs_schema:
            if f.name in base:
                arrays.append(pa.array(base[f.name], f.type))
            elif f.nullable:
                arrays.append(pa.nulls(k, f.type))
            else:
                arrays.append(pa.array([[]] * k, f.type) if pa.types.is_list(f.type) else pa.nulls(k, f.type))
        songs = pa.Table.from_arrays(arrays, schema=songs_schema)
        _write_parts({"embeddings": emb, "songs": songs}, str(out), part_name(ids), None, meta)
    return sum(p.stat().st_size for p in (out / "embeddings").glob("*.parquet"))


#: Set in this process's environment before Ray starts: Ray's processes inherit it, which is how they are found.
MARKER = "MGR_BATCH_RETAG_BENCH"


def session_cpu_seconds() -> float:
    """User + system CPU seconds of every live process whose environment carries :data:`MARKER` (this driver,
    Ray's raylet and workers), read from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    marker = f"{MARKER}={os.environ[MARKER]}".encode()
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if marker not in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15]) / tick  # its own, and its reaped children's
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--songs", type=int, default=1_000_000)
    ap.add_argument("--work", default="/tmp/retag-bench")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "retag.md"))
    args = ap.parse_args()
    work = Path(args.work)
    tagged = work / f"tags-{args.songs}"
    if not (tagged / "songs").is_dir():
        t = time.time()
        nbytes = synthesize(tagged, args.songs)
        print(f"synthesized {args.songs} songs in {time.time() - t:.0f} s", flush=True)
    else:
        nbytes = sum(p.stat().st_size for p in (tagged / "embeddings").glob("*.parquet"))
    import ray

    from mgr_batch.cli import main as cli

    os.environ[MARKER] = str(os.getpid())
    cpu0, t0 = session_cpu_seconds(), time.time()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    rc = cli(["retag", str(tagged), "--model", "default", "-o", str(work / "retagged")])
    wall, cpu = time.time() - t0, session_cpu_seconds() - cpu0
    ray.shutdown()
    assert rc == 0
    n = sum(pq.ParquetFile(p).metadata.num_rows for p in (work / "retagged" / "songs").glob("*.parquet"))
    assert n == args.songs, n
    lines = [
        "# Re-tagging stored vectors (`mgr-batch retag`)",
        "",
        f"Regenerate: `nice -n 10 python benchmarks/retag.py --songs {args.songs}` (synthesized tag output: random "
        "float16 vectors of the default's 1,168 values and feature id, songs and embeddings parts of 10,000 songs).",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared with other work).",
        "",
        "| songs | embeddings on disk | wall (Ray start included) | core-seconds | songs per core-second |",
        "|---|---|---|---|---|",
        f"| {n:,} | {nbytes / 2**30:.2f} GiB ({nbytes / n:.0f} B/song) | {wall:.0f} s | {cpu:.0f} | {n / cpu:,.0f} |",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
