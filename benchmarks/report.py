"""Cost of ``mgr-batch report`` (and ``compact``) on a generated 100,000-song output, local and on s3://.

Run from the repository root:

    python benchmarks/report.py --songs 100000 --out benchmarks/results/report.md

The output is generated with the package's own writer (``mgr_batch.io.writer.write_tables``, the function a
tagging run calls per batch; no audio, no model): songs of 30 s to 5 min with 3 s clips, random clip
probabilities, 1% error rows, ``--songs-per-part`` songs per part as a run's batches. Each measured step runs
in a fresh subprocess, which reports its wall seconds and peak resident memory (ru_maxrss): the report on
the uncompacted output, a plain pandas read of the whole songs table for comparison, ``compact``, the report
on the compacted output, and the report on a copy on a real S3 server (moto) on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mgr_batch.config import GTZAN_GENRES
from mgr_batch.io.storage import song_id_for
from mgr_batch.io.writer import write_tables

MODEL_ID = "bench-000000000000"

# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec.
STEP = """
import json, re, sys, time
t = time.perf_counter()
{body}
hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print(json.dumps({{"seconds": time.perf_counter() - t, "peak_mb": hwm / 1024}}))
"""
REPORT = "from mgr_batch.evaluation.run_report import build; build(sys.argv[1], json.loads(sys.argv[2]))"
PANDAS = "import pandas as pd; pd.read_parquet(sys.argv[1] + '/songs')"
COMPACT = "from mgr_batch.io.compaction import compact; compact(sys.argv[1], json.loads(sys.argv[2]))"


def generate(out: Path, n_songs: int, per_part: int, seed: int = 0) -> dict[str, int]:
    """Write ``n_songs`` files' rows (1% errors) under ``out`` with :func:`write_tables`; returns the row counts."""
    rng = np.random.default_rng(seed)
    genres = GTZAN_GENRES
    counts = {"songs": 0, "errors": 0, "clips": 0}
    for start in range(0, n_songs, per_part):
        n = min(per_part, n_songs - start)
        paths = np.array(
            [
                f"/catalog/{('rock', 'jazz', 'misc')[i % 3]}/album{i % 997}/song{i:07d}.mp3"
                for i in range(start, start + n)
            ]
        )
        ok = rng.random(n) > 0.01
        duration = np.where(ok, rng.uniform(30, 300, n), 0.0)
        n_clips = np.where(ok, np.floor(duration / 3.0).astype(int), 0)
        batch = {
            "path": paths,
            "song_id": np.array([song_id_for(p) for p in paths]),
            "size": rng.integers(1_000_000, 10_000_000, n),
            "mtime": np.full(n, 1.7e9),
            "status": np.where(ok, "ok", "error"),
            "duration_s": duration,
            "analyzed_s": duration,
            "sample_rate": np.full(n, 44100, np.int32),
            "channels": np.full(n, 2, np.int32),
            "n_clips": n_clips.astype(np.int32),
            "used_start_s": np.array([np.zeros(1) for _ in range(n)] + [None], dtype=object)[:-1],
            "used_end_s": np.array([np.array([d]) for d in duration] + [None], dtype=object)[:-1],
            "clip_start_s": np.array([np.arange(k) * 3.0 for k in n_clips] + [None], dtype=object)[:-1],
            "clip_probs": np.array(
                [rng.dirichlet(np.full(len(genres), 0.3), size=k).astype(np.float32) for k in n_clips] + [None],
                dtype=object,
            )[:-1],
            "error_stage": np.where(ok, "", "decode"),
            "error_type": np.where(ok, "", np.where(rng.random(n) < 0.5, "AudioDecodeError", "SilentAudioError")),
            "error_message": np.where(ok, "", "generated"),
        }
        write_tables(batch, output=str(out), genres=genres, model_id=MODEL_ID, clip_seconds=3.0)
        counts["songs"] += int(ok.sum())
        counts["errors"] += int((~ok).sum())
        counts["clips"] += int(n_clips.sum())
    return counts


def step(body: str, *args: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-c", STEP.format(body=body), *args], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def s3_copy(local: Path, n_files_hint: int) -> tuple[str, dict[str, str], object]:
    """Start moto's S3 server on 127.0.0.1 and upload ``local`` to it; returns the URL, options and server."""
    import s3fs
    from moto.server import ThreadedMotoServer

    for var, value in (
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(var, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"endpoint_url": f"http://{host}:{port}", "key": "bench", "secret": "bench"}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("bench")
    fs.put(str(local) + "/", "bench/tags/", recursive=True)
    return "s3://bench/tags", options, server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--songs", type=int, default=100_000)
    ap.add_argument("--songs-per-part", type=int, default=64)
    ap.add_argument("--out", default="benchmarks/results/report.md")
    ap.add_argument("--no-s3", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        out = work / "tags"
        t = time.perf_counter()
        counts = generate(out, args.songs, args.songs_per_part)
        gen_s = time.perf_counter() - t
        parts = {d.name: len(list(d.glob("*.parquet"))) for d in out.iterdir() if d.is_dir()}
        mb = sum(f.stat().st_size for f in out.rglob("*.parquet")) / 2**20
        print(f"generated {counts} in {gen_s:.0f} s: {parts} parts, {mb:.0f} MB", flush=True)
        results = {"songs": args.songs, "rows": counts, "parts": parts, "parquet_mb": round(mb, 1)}
        if not args.no_s3:
            url, options, server = s3_copy(out, sum(parts.values()))
            results["report_s3"] = step(REPORT, url, json.dumps(options))
            server.stop()
            print("s3", results["report_s3"], flush=True)
        results["report_local"] = step(REPORT, str(out), "{}")
        print("local", results["report_local"], flush=True)
        results["pandas_read_songs"] = step(PANDAS, str(out))
        results["compact"] = step(COMPACT, str(out), "{}")
        results["parts_after_compact"] = {
            d.name: len(list(d.glob("*.parquet"))) for d in out.iterdir() if d.is_dir() and d.name != "report"
        }
        results["report_local_compacted"] = step(REPORT, str(out), "{}")
        print(results, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=2))
    Path(args.out).write_text(markdown(results))
    print(f"wrote {args.out}")


def markdown(r: dict) -> str:
    def row(name: str, key: str) -> str:
        m = r.get(key)
        return f"| {name} | {m['seconds']:.1f} | {m['peak_mb']:.0f} |" if m else f"| {name} | not run | |"

    base = r["report_local"]
    lines = [
        "# Run report and compaction on a generated catalog",
        "",
        f"`python benchmarks/report.py --songs {r['songs']}`: {r['rows']['songs']} songs, {r['rows']['errors']} error rows, "
        f"{r['rows']['clips']} clips, written with the package's own writer as a run writes them "
        f"({r['parts']} parts, {r['parquet_mb']} MB of Parquet). Each step ran in a fresh process (wall seconds, peak RSS); "
        "one run, on the shared 2-core development machine, so compare the ratios, not the seconds.",
        "",
        "| step | seconds | peak MB |",
        "|---|---|---|",
        row("`report` (local, uncompacted)", "report_local"),
        row("pandas: the whole songs table, every column (for comparison)", "pandas_read_songs"),
        row("`compact` (local)", "compact"),
        row("`report` (local, compacted)", "report_local_compacted"),
        row("`report` (s3://, moto on 127.0.0.1, uncompacted)", "report_s3"),
        "",
        f"Parts after compaction: {r['parts_after_compact']}.",
        "",
        f"Compacted over uncompacted report time: {r['report_local_compacted']['seconds'] / base['seconds']:.2f}x; "
        f"the report's peak memory over a plain full read of songs: {base['peak_mb'] / r['pandas_read_songs']['peak_mb']:.2f}x.",
    ]
    if r.get("report_s3"):
        lines.append(f"s3:// over local report time: {r['report_s3']['seconds'] / base['seconds']:.2f}x.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
