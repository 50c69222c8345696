"""What a rerun costs on an output of a catalog of millions: the work a run does on the driver, against the
size of what the output already holds.

Run from the repository root:

    python benchmarks/scale.py --songs 100000,300000,1000000      # builds what is missing under --root, then times
    python benchmarks/scale.py --songs 100000 --clips 6 --name scale-6clips
    python benchmarks/scale.py --songs 100000 --s3                 # the same output on a local S3 server (moto)

For each size it builds (once, kept under ``--root``, default ``/work/bench_scale``) a folder of tiny input files
(empty, 1,000 per folder) and an output as a real run writes it: :func:`mgr_batch.io.writer.write_tables` over
batches of 16 songs of ``--clips`` 3 s clips each, with the shipped model's id and genres, the songs matching
their input files' size and modification time. Then, each in a fresh process (the driver's peak memory read
from ``getrusage`` in that process, imports included):

- ``noop``: ``mgr-batch tag INPUTS --output OUT`` with nothing to do (no Ray started);
- ``manifest``: the same no-op with the input files named by a Parquet manifest of their paths instead;
- ``new``: the same after one new 3 s WAV lands in the inputs (Ray's start and the default model included);
- ``changed``: the same after one tagged file is replaced by a 3 s WAV (its old rows pruned);
- ``report``: ``mgr-batch report OUT``;
- ``compact``: ``mgr-batch compact OUT`` (on a copy of the output, so the other steps stay comparable).

The first rerun on an output builds its key index (``OUT/_index/``); ``warm`` times that step, and the steps
above run with the index in place, as every run after a catalog's first does.

With ``--s3``, the output (and inputs) of the first size live in a bucket of a local moto server, and the
table reports the LIST, GET, HEAD and PUT requests of each step, counted from the server's request log.

Writes benchmarks/results/<name>.json and <name>.md (``--name``, default ``scale``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BATCH = 16
PER_FOLDER = 1000

#: Runs a command of the CLI in this process and prints the driver's peak RSS (MB) as the last stderr line.
_PEAK = """
import os, resource, sys, time
t0 = time.perf_counter()
from mgr_batch.cli import main
code = main(sys.argv[1:])
cpu = resource.getrusage(resource.RUSAGE_SELF)
print("PEAK_MB", cpu.ru_maxrss / 1024, cpu.ru_utime + cpu.ru_stime, file=sys.stderr, flush=True)
sys.stdout.flush()
os._exit(code)
"""


def _input_path(inputs: Path, i: int) -> Path:
    return inputs / f"d{i // PER_FOLDER:05d}" / f"s{i:08d}.wav"


def _song_columns(n: int) -> dict[str, np.ndarray]:
    """Values for the songs-table columns a featurized batch carries (as :mod:`mgr_batch.stages.decode` gives them)."""
    from mgr_batch.io import schemas

    fill = {"float64": 0.0, "float32": 0.0, "int32": 0, "int64": 0, "bool": False, "string": ""}
    out: dict[str, np.ndarray] = {}
    for c in schemas.spec("songs")["columns"]:
        if c["type"] in fill:
            out[c["name"]] = np.full(n, fill[c["type"]], dtype=object if c["type"] == "string" else None)
    return out


def _write_batches(args: tuple[str, str, int, int, int]) -> int:
    """Write batches ``[first, last)`` of the output over the listing in ``listing`` (a Parquet file with
    ``path, song_id, size, mtime``), as one worker of the build pool."""
    import pyarrow.parquet as pq

    from mgr_batch.io.writer import write_tables
    from mgr_batch.models import checkpoint

    listing, out, first, last, clips = args
    files = pq.read_table(listing).slice(first * BATCH, (last - first) * BATCH).to_pydict()
    spec = checkpoint.load_spec(None, None)
    rng = np.random.default_rng(first)
    g = len(spec.genres)
    for b in range(last - first):
        rows = slice(b * BATCH, (b + 1) * BATCH)
        paths = files["path"][rows]
        n = len(paths)
        if not n:
            break
        batch = _song_columns(n)
        batch.update(
            path=np.array(paths, dtype=object),
            song_id=np.array(files["song_id"][rows], dtype=object),
            size=np.array(files["size"][rows], np.int64),
            mtime=np.array(files["mtime"][rows], np.float64),
            status=np.array(["ok"] * n, dtype=object),
            duration_s=np.full(n, clips * 3.0),
            analyzed_s=np.full(n, clips * 3.0),
            sample_rate=np.full(n, 44100, np.int32),
            channels=np.full(n, 2, np.int32),
            n_clips=np.full(n, clips, np.int32),
            clip_start_s=np.stack([np.arange(clips) * 3.0] * n),
            used_start_s=np.stack([np.zeros(1)] * n),
            used_end_s=np.stack([np.full(1, clips * 3.0)] * n),
            error_stage=np.array([""] * n, dtype=object),
            error_type=np.array([""] * n, dtype=object),
            error_message=np.array([""] * n, dtype=object),
            clip_probs=rng.dirichlet(np.ones(g), size=(n, clips)).astype(np.float32),
            song_probs=rng.dirichlet(np.ones(g), size=n).astype(np.float32),
        )
        write_tables(
            batch,
            output=out,
            genres=spec.genres,
            model_id=spec.model_id,
            clip_seconds=3.0,
            uncertain_below=spec.uncertain_below,
        )
    return last - first


def write_output(files: pd.DataFrame, out: Path, clips: int, workers: int = 2) -> None:
    """An output as a run writes it for the listed ``files``, in batches of 16 in listing order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    listing = out.parent / "listing.parquet"
    pq.write_table(pa.Table.from_pandas(files[["path", "song_id", "size", "mtime"]], preserve_index=False), listing)
    n_batches = -(-len(files) // BATCH)
    chunk = 200
    jobs = [(str(listing), str(out), b, min(b + chunk, n_batches), clips) for b in range(0, n_batches, chunk)]
    started = time.time()
    with mp.get_context("spawn").Pool(workers) as pool:
        done = 0
        for k in pool.imap_unordered(_write_batches, jobs):
            done += k
            if done % 5000 < chunk:
                print(f"  {done}/{n_batches} batches, {time.time() - started:.0f} s", flush=True)
    listing.unlink()


def build(root: Path, n_songs: int, clips: int, workers: int = 2) -> tuple[Path, Path]:
    """Inputs and output of ``n_songs`` songs under ``root`` (kept: a finished build is marked ``.built``)."""
    from mgr_batch.io import storage

    inputs, out = root / "inputs", root / "out"
    if (root / ".built").exists():
        return inputs, out
    shutil.rmtree(root, ignore_errors=True)
    started = time.time()
    for i in range(n_songs):
        p = _input_path(inputs, i)
        if i % PER_FOLDER == 0:
            p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()
    print(f"  {n_songs} input files in {time.time() - started:.0f} s", flush=True)
    write_output(storage.list_inputs(str(inputs)).files, out, clips, workers)
    (root / ".built").write_text(json.dumps({"songs": n_songs, "clips": clips, "seconds": time.time() - started}))
    return inputs, out


def _wav(path: Path, seconds: float = 3.0, freq: float = 440.0) -> None:
    import soundfile as sf

    t = np.arange(int(seconds * 22050)) / 22050
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 22050)


def timed(args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> dict[str, float]:
    """One CLI command in a fresh process: wall seconds, the driver's peak RSS in MB, its CPU seconds, and the
    machine's 1-minute load average as it started (other work on a shared machine stretches the wall time)."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK, *args], capture_output=True, text=True, env=env or os.environ.copy(), cwd=cwd
    )
    wall = time.perf_counter() - started
    peak = [line.split()[1:] for line in proc.stderr.splitlines() if line.startswith("PEAK_MB")]
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {
        "wall_s": round(wall, 2),
        "peak_mb": round(float(peak[-1][0]), 1) if peak else float("nan"),
        "driver_cpu_s": round(float(peak[-1][1]), 2) if peak else float("nan"),
        "load_1m": round(load, 1),
    }


def write_rounds(name: str, record: dict, intro: str, column: tuple[str, str]) -> None:
    """RESULTS/<name>.json (``record``) and <name>.md: ``intro``, then ``record["results"]`` as a table, a row per
    round and variant (``column``: the variant's heading and key), with :func:`timed`'s figures."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    heading, key = column
    lines = [f"# {name}", "", intro, ""]
    lines += [f"| round | {heading} | wall s | driver peak MB | driver CPU s | load average (1 min) |"]
    lines += ["|---|---|---|---|---|---|"]
    lines += [
        f"| {r['round']} | {r[key]} | {r['wall_s']:.1f} | {r['peak_mb']:.0f} | {r['driver_cpu_s']:.1f} | {r['load_1m']} |"
        for r in record["results"]
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def measure(root: Path, n_songs: int, clips: int, steps: list[str]) -> dict[str, dict[str, float]]:
    inputs, out = build(root, n_songs, clips)
    tag = ["tag", str(inputs), "--output", str(out), "--json", "--no-embeddings"]
    result: dict[str, dict[str, float]] = {}
    if not (out / "_index").exists():
        result["warm"] = timed(tag)
        print(f"  warm {result['warm']}", flush=True)
    if "noop" in steps:
        result["noop"] = timed(tag)
        print(f"  noop {result['noop']}", flush=True)
    if "manifest" in steps:  # the same files named by a Parquet manifest (as an S3 Inventory export hands over)
        manifest = root / "inputs.parquet"
        paths = [str(_input_path(inputs, i)) for i in range(n_songs)]
        pd.DataFrame({"path": pd.Series(paths, dtype="string")}).to_parquet(manifest, index=False)
        result["manifest"] = timed(["tag", str(manifest), "--output", str(out), "--json", "--no-embeddings"])
        print(f"  manifest {result['manifest']}", flush=True)
    if "new" in steps:
        new = inputs / "new" / f"new-{time.time_ns()}.wav"
        new.parent.mkdir(exist_ok=True)
        _wav(new)
        result["new"] = timed(tag)
        print(f"  new {result['new']}", flush=True)
    if "changed" in steps:
        victim = _input_path(inputs, (time.time_ns() // 1000) % n_songs)
        _wav(victim, freq=float(220 + time.time_ns() % 500))
        result["changed"] = timed(tag)
        print(f"  changed {result['changed']}", flush=True)
    if "report" in steps:
        result["report"] = timed(["report", str(out)])
        print(f"  report {result['report']}", flush=True)
    if "compact" in steps:
        copy = root / "out-compact"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(out, copy)
        result["compact"] = timed(["compact", str(copy)])
        print(f"  compact {result['compact']}", flush=True)
        result["noop_compacted"] = timed(["tag", str(inputs), "--output", str(copy), "--json", "--no-embeddings"])
        print(f"  noop after compact {result['noop_compacted']}", flush=True)
        shutil.rmtree(copy, ignore_errors=True)
    return result


class MotoServer:
    """moto's S3 server on 127.0.0.1 in a subprocess, its request log in a file (one line per request)."""

    def __init__(self, root: Path) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.log = root / "moto.log"
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
            env=env,
        )
        self.options = {"endpoint_url": f"http://127.0.0.1:{self.port}", "key": "testing", "secret": "testing"}
        for _ in range(100):
            try:
                self.fs().ls("")
                break
            except OSError:
                time.sleep(0.1)

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(**self.options, skip_instance_cache=True)

    def cli(self) -> list[str]:
        return [a for k, v in self.options.items() for a in ("--storage-option", f"{k}={v}")]

    def mark(self) -> int:
        return len(self.log.read_text().splitlines())

    def requests(self, since: int) -> dict[str, int]:
        """Requests logged after line ``since``, by kind: LIST, GET, HEAD, PUT, DELETE (incl. multi-delete POSTs)."""
        counts = {"LIST": 0, "GET": 0, "HEAD": 0, "PUT": 0, "DELETE": 0}
        for line in self.log.read_text().splitlines()[since:]:
            line = re.sub(r"\x1b\[[0-9;]*m", "", line)  # the server colours some status lines
            if '"' not in line:
                continue
            method, target = (line.split('"')[1].split(" ") + ["", ""])[:2]
            if method == "GET":
                counts[
                    "LIST" if ("list-type" in target or "delimiter" in target or "prefix=" in target) else "GET"
                ] += 1
            elif method in counts:
                counts[method] += 1
            elif method == "POST" and "delete" in target:
                counts["DELETE"] += 1
        return counts

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def measure_s3(root: Path, n_songs: int, clips: int, steps: list[str]) -> dict[str, dict]:
    """The steps of :func:`measure` on a bucket of a local moto server, with each step's requests."""
    from mgr_batch.io import storage

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    server = MotoServer(root)
    try:
        fs = server.fs()
        fs.mkdir("bench")
        started = time.time()
        keys = {f"bench/inputs/d{i // PER_FOLDER:05d}/s{i:08d}.wav": b"" for i in range(n_songs)}
        items = list(keys.items())
        for k in range(0, len(items), 10_000):
            fs.pipe(dict(items[k : k + 10_000]))
        files = storage.list_inputs("s3://bench/inputs", server.options).files
        write_output(files, root / "out", clips)
        fs.put(str(root / "out") + "/", "bench/out/", recursive=True)
        print(f"  built on S3 in {time.time() - started:.0f} s", flush=True)
        tag = ["tag", "s3://bench/inputs", "--output", "s3://bench/out", "--json", "--no-embeddings", *server.cli()]
        result: dict[str, dict] = {}

        def step(name: str, args: list[str]) -> None:
            mark = server.mark()
            result[name] = {**timed(args), **server.requests(mark)}
            print(f"  {name} {result[name]}", flush=True)

        step("warm", tag)
        if "noop" in steps:
            step("noop", tag)
        if "new" in steps:
            wav = root / "new.wav"
            _wav(wav)
            fs.put(str(wav), f"bench/inputs/new/new-{time.time_ns()}.wav")
            step("new", tag)
        if "changed" in steps:
            wav = root / "changed.wav"
            _wav(wav, freq=330.0)
            fs.put(str(wav), f"bench/inputs/d00000/s{7:08d}.wav")
            step("changed", tag)
        if "report" in steps:
            step("report", ["report", "s3://bench/out", *server.cli()])
        return result
    finally:
        server.stop()
        shutil.rmtree(root / "out", ignore_errors=True)


def _cell(step: dict[str, float]) -> str:
    extra = "".join(f"; {step[k]:g}" for k in ("driver_cpu_s", "load_1m") if k in step)
    return f"{step['wall_s']:.1f} ({step['peak_mb']:.0f}{extra})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", default="100000,300000,1000000", help="comma-separated output sizes in songs")
    parser.add_argument("--clips", type=int, default=60, help="clips of 3 s per song (60: a 3-minute song)")
    parser.add_argument("--root", default="/work/bench_scale", help="where the built inputs and outputs are kept")
    parser.add_argument("--steps", default="noop,new,changed,report,compact")
    parser.add_argument("--s3", action="store_true", help="the first size on a local moto S3 server instead")
    parser.add_argument("--name", default="scale")
    args = parser.parse_args()
    steps = args.steps.split(",")
    rows = {}
    for n in (int(s) for s in args.songs.split(",")):
        print(f"{n} songs, {args.clips} clips each", flush=True)
        if args.s3:
            rows[n] = measure_s3(Path(args.root) / f"s3-{n}-{args.clips}", n, args.clips, steps)
            break
        rows[n] = measure(Path(args.root) / f"{n}-{args.clips}", n, args.clips, steps)
    record = {
        "command": "python benchmarks/scale.py " + " ".join(sys.argv[1:]),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "clips_per_song": args.clips,
        "results": {str(k): v for k, v in rows.items()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    cols = [c for c in ("warm", *steps, "noop_compacted") if any(c in r for r in rows.values())]
    lines = [
        f"# {args.name}",
        "",
        f"`{record['command']}` on {record['cpu']} ({record['cores']} cores), {args.clips} clips per song.",
        "Wall seconds (driver peak MB; driver CPU seconds; the machine's 1-minute load average as the step started),",
        "each step a fresh process.",
        "",
        "| songs | clip rows | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for n, r in rows.items():
        cells = [_cell(r[c]) if c in r else "" for c in cols]
        lines.append(f"| {n:,} | {n * args.clips:,} | " + " | ".join(cells) + " |")
    if args.s3:
        kinds = ("LIST", "GET", "HEAD", "PUT", "DELETE")
        lines += ["", "Requests to the S3 server per step:", "", "| step | " + " | ".join(kinds) + " |"]
        lines.append("|---|" + "---|" * len(kinds))
        for r in rows.values():
            for c in cols:
                if c in r:
                    lines.append(f"| {c} | " + " | ".join(str(r[c][k]) for k in kinds) + " |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
