"""End-to-end throughput of ``mgr-batch tag`` against a plain per-file loop and the decode floor.

Run from the repository root (../shared/data beside it):

    python benchmarks/throughput.py                    # 30 min catalog, memory check at 10x (300 min)
    python benchmarks/throughput.py --minutes 3 --scale 0   # a smoke run (~2 min)
    python benchmarks/throughput.py --formats ogg,opus --minutes 240 --name throughput-ogg
                                                       # the issue's catalog: 4 h of Ogg Vorbis and Opus

The catalog is real music: the tracks of ``data/long`` and the ``kind == full`` GTZAN songs, in a seeded
order, each re-encoded to one of ``--formats`` (in turn; default mp3, flac, wav) at 44.1 kHz stereo (Opus:
48 kHz, the rates it codes at), so decoding and resampling cost what they cost on a real catalog; files are
added until the catalog holds ``--minutes`` of audio (when the sources run out they come round again in
another format). Encoded files are cached under ``--cache``
(default ``~/.cache/mgr-batch-bench``), never in the repository; ``../shared`` is only read.

In one run, on the same files, it times:

- the plain loop a team would write: for each file ``librosa.load(path, sr=22050)``, back-to-back 3 s
  clips (zero-padded, as mgr-batch cuts them), ``librosa.feature.melspectrogram`` + ``power_to_db`` with
  the shipped model's FeatureConfig (ref 1, amin 1e-10, no top_db: the same features as mgr-batch), the
  shipped model once per clip, one row per song; single process, one thread;
- the decode floor: ``soundfile.read`` + channel mix + ``soxr.resample`` (HQ) and nothing else, single
  thread, and the same with FFmpeg (PyAV) decoding, per format;
- the same work split by stage with mgr-batch's own functions, single thread: read (bytes), decode,
  mono mix, resample, validate, cut, featurize, infer, write (Parquet), and the whole of ``audio.load``;
- ``mgr-batch tag`` as a subprocess (Ray start-up included) with ``--num-cpus 1`` and ``--num-cpus N``,
  each pinned to that many cores with everything it starts (``--no-pin``: free to use every core),
  plus the fixed cost of a run (a 1-file catalog), with the process tree polled for CPU time and memory
  (RSS and PSS of the driver, the Ray workers and Ray's own daemons), and Ray Data's per-operator stats
  read from the run's ``ray-data.log``;
- peak memory of the N-CPU run again on a catalog ``--scale`` times larger;
- featurization alone per minute of audio against librosa's reference: log-mel (``features.featurize``
  vs librosa per clip), the 58-value vector (``gtzan_features`` vs ``gtzan_features_reference``), the
  segmentation (``segmentation.representative`` vs a per-window ``librosa.lpc`` + time-domain SEM, the
  way the method is written, estimated from sampled pairs); and inference alone (clips/s per core).

CPU-bound timings use thread/process CPU time where they run in this process (robust to other load on a
shared machine); the tag runs are timed by wall clock (what a user waits for) and by the CPU time of their
process tree. Ratios are meaningful within one run; absolute times depend on the machine's load.

With ``--default-only`` it times only what decides the shipped default's cost: the decode floor, and
``mgr-batch tag --model default`` with ``--cpus`` CPUs (its fixed cost too), once as it is and once per
``--variant`` (flags added to it, e.g. ``--precision float32``), each ``--repeats`` times::

    python benchmarks/throughput.py --formats ogg,opus --minutes 240 --default-only \
        --variant "--precision float32" --name throughput-default-<cpu>

Writes benchmarks/results/<name>.json and <name>.md (``--name``, default ``throughput``).
"""

# ruff: noqa: E402  (the thread settings below must come before numpy and torch are imported)

from __future__ import annotations

import os

# One thread per process, as in a Ray worker with num_cpus=1: set before numpy/torch load their pools.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
_PARENT_ENV = dict(os.environ)  # what the tag subprocesses get: the user's environment, untouched
for _var in _THREAD_VARS:
    os.environ.setdefault(_var, "1")

import argparse
import copy
import hashlib
import io
import json
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import librosa
import numpy as np
import pandas as pd
import soundfile as sf
import soxr
import torch

from mgr_batch.clips import segmentation
from mgr_batch.clips import windows as clips
from mgr_batch.config import ClipConfig, InferenceConfig, SegmentationConfig
from mgr_batch.features import registry as features
from mgr_batch.features import spectral
from mgr_batch.features.classic import gtzan_features, gtzan_features_reference
from mgr_batch.io import audio, ffmpeg, storage, waveform
from mgr_batch.io.writer import write_tables
from mgr_batch.models import checkpoint
from mgr_batch.stages.decode import featurize_batch
from mgr_batch.stages.predict import CPU_BATCH_SIZE, Predictor

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
#: The model every run uses: the packaged log-mel CNN, the kind of model the plain loop runs.
MODEL = "logmel-cnn"
RESULTS = ROOT / "benchmarks" / "results"
#: Formats the catalog can be encoded to: (libsndfile format, subtype, sample rate).
ENCODINGS = {
    "mp3": ("MP3", "MPEG_LAYER_III", 44100),
    "flac": ("FLAC", "PCM_16", 44100),
    "wav": ("WAV", "PCM_16", 44100),
    "ogg": ("OGG", "VORBIS", 44100),
    "opus": ("OGG", "OPUS", 48000),  # Opus codes at 48 kHz (libsndfile: 8, 12, 16, 24 or 48 kHz)
}
FORMATS = ("mp3", "flac", "wav")
#: How often the process tree of a tag run is sampled (s).
POLL_S = 0.2
#: Songs per task of the tag runs (mgr-batch's default), also the batches of the single-thread stage split.
SONGS_PER_TASK = InferenceConfig().songs_per_task
#: Stage names, in pipeline order.
STAGES = ("list", "read", "decode", "mono", "resample", "validate", "cut", "featurize", "infer", "write")


# ---------------------------------------------------------------------------------------------- catalog


def sources(data: Path) -> pd.DataFrame:
    """Every source song: the long tracks and the full GTZAN songs (path, seconds)."""
    long = pd.read_csv(data / "long" / "manifest.csv")
    gtzan = pd.read_csv(data / "gtzan" / "manifest.csv")
    gtzan = gtzan[gtzan["kind"] == "full"]
    return pd.concat(
        [
            pd.DataFrame({"path": [str(data / "long" / p) for p in long["path"]], "seconds": long["duration_s"]}),
            pd.DataFrame({"path": [str(data / "gtzan" / p) for p in gtzan["path"]], "seconds": gtzan["duration_s"]}),
        ],
        ignore_index=True,
    )


def plan_catalog(data: Path, minutes: float, seed: int, formats=FORMATS) -> list[tuple[str, str, float]]:
    """(source path, format, seconds) of each catalog file, in a seeded order, ``minutes`` in all."""
    src = sources(data)
    order = np.random.default_rng(seed).permutation(len(src))
    plan, total, k = [], 0.0, 0
    while total < minutes * 60:
        i = order[k % len(src)]
        fmt = formats[(k + k // len(src)) % len(formats)]  # a source comes round again in another format
        plan.append((src["path"][i], fmt, float(src["seconds"][i])))
        total += float(src["seconds"][i])
        k += 1
    return plan


def encoded_name(source: str, fmt: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source).stem)[:40]
    return f"{hashlib.sha1(source.encode()).hexdigest()[:10]}-{stem}.{fmt}"


def encode(source: str, fmt: str, target: str) -> None:
    """``source`` as a stereo ``fmt`` file (44.1 kHz; Opus 48 kHz) at ``target`` (written via a temp name)."""
    y, sr = sf.read(source, dtype="float32", always_2d=True)
    container, subtype, rate = ENCODINGS[fmt]
    if sr != rate:
        y = soxr.resample(y, sr, rate, quality="VHQ")
    if y.shape[1] == 1:
        y = np.repeat(y, 2, axis=1)
    y = np.clip(y, -1.0, 1.0)
    tmp = f"{target}.tmp-{os.getpid()}.{fmt}"
    with sf.SoundFile(tmp, "w", rate, 2, subtype=subtype, format=container) as out:
        for at in range(0, len(y), 1 << 16):  # in blocks: libsndfile's Vorbis encoder crashed on a 5-minute write
            out.write(y[at : at + (1 << 16)])
    os.replace(tmp, target)


def build_catalog(data: Path, minutes: float, seed: int, cache: Path, jobs: int, formats=FORMATS) -> tuple[Path, float]:
    """A folder of hard links to cached encoded files; returns (folder, seconds of audio in it)."""
    plan = plan_catalog(data, minutes, seed, formats)
    files = cache / "files"
    files.mkdir(parents=True, exist_ok=True)
    todo = {(s, f) for s, f, _ in plan if not (files / encoded_name(s, f)).exists()}
    if todo:
        print(f"encoding {len(todo)} file(s) into {files} ...", flush=True)
        with ProcessPoolExecutor(jobs) as pool:
            list(
                pool.map(encode, *zip(*[(s, f, str(files / encoded_name(s, f))) for s, f in sorted(todo)], strict=True))
            )
    folder = (
        cache / f"catalog-{minutes:g}min-seed{seed}"
        if formats == FORMATS
        else cache / f"catalog-{minutes:g}min-seed{seed}-{'-'.join(formats)}"
    )
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    for k, (s, f, _) in enumerate(plan):
        os.link(files / encoded_name(s, f), folder / f"{k:05d}-{encoded_name(s, f)}")
    return folder, sum(sec for _, _, sec in plan)


def catalog_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.iterdir() if p.suffix.lstrip(".") in ENCODINGS)


# ------------------------------------------------------------------------------------- process tree


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _tree(root: int) -> list[int]:
    kids, out, todo = _children_map(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += kids.get(pid, [])
    return out


def _role(pid: int, root: int) -> str:
    if pid == root:
        return "driver"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    if cmd.startswith("ray::") or "default_worker.py" in cmd:
        return "worker"
    return "ray_daemons"  # raylet, gcs_server, agents, log monitor


class TreeMonitor:
    """Samples the process tree under ``root``: per-role peak RSS (largest process and sum) and PSS sum,
    and CPU seconds (last seen utime+stime of every process that ever lived in the tree)."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, root: int) -> None:
        self.root = root
        self.cpu: dict[int, float] = {}
        self.roles: dict[int, str] = {}
        self.peak: dict[str, float] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(POLL_S)

    def sample(self) -> None:
        sums: dict[str, float] = {}
        for pid in _tree(self.root):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    mem = {
                        k: int(v.split()[0]) * 1024
                        for k, v in (line.split(":", 1) for line in f if ":" in line and "kB" in line)
                    }
            except (OSError, ValueError, IndexError):
                continue
            role = self.roles.get(pid) or _role(pid, self.root)
            if role == "gone":
                continue
            self.roles[pid] = role
            self.cpu[pid] = (int(fields[11]) + int(fields[12])) / self.TICK
            rss, pss = mem.get("Rss", 0), mem.get("Pss", 0)
            self.peak[f"{role}_rss_max"] = max(self.peak.get(f"{role}_rss_max", 0), rss)
            sums[f"{role}_rss_sum"] = sums.get(f"{role}_rss_sum", 0) + rss
            sums[f"{role}_pss_sum"] = sums.get(f"{role}_pss_sum", 0) + pss
            sums["tree_pss_sum"] = sums.get("tree_pss_sum", 0) + pss
        for k, v in sums.items():
            self.peak[k] = max(self.peak.get(k, 0), v)
        self.samples += 1

    def cpu_by_role(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, sec in self.cpu.items():
            out[self.roles[pid]] = out.get(self.roles[pid], 0.0) + sec
        out["total"] = sum(self.cpu.values())
        return out

    def n_workers(self) -> int:
        return sum(1 for r in self.roles.values() if r == "worker")


# ------------------------------------------------------------------------------------------ tag runs

#: Runs ``mgr-batch tag`` exactly as the console script does, and prints ``ds.stats()`` (Ray Data's
#: per-operator stats of the whole graph) once the graph has run; nothing else differs.
_TAG_BOOTSTRAP = """
import sys, ray.data
_iter_rows = ray.data.Dataset.iter_rows
def iter_rows(self, *args, **kwargs):
    yield from _iter_rows(self, *args, **kwargs)
    print("MGR_BENCH_STATS_BEGIN", self.stats(), "MGR_BENCH_STATS_END", sep="\\n", flush=True)
ray.data.Dataset.iter_rows = iter_rows
from mgr_batch.cli import run
run(sys.argv[1:])
"""


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all processes, all CPUs) since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_pinned(
    cmd: list[str], *, cpus: int, cwd: Path, log_path: Path, pin: bool = True
) -> tuple[int, float, TreeMonitor]:
    """``cmd`` in a subprocess that starts an embedded Ray of its own (no RAY_ADDRESS, its own Ray temp
    dir), output to ``log_path``, its process tree polled. With ``pin`` the process and all it starts (Ray's
    daemons and workers inherit it) run on the first ``cpus`` cores only, so that a 1-CPU run is a 1-core
    run, driver and daemons included. Returns the exit code, the wall seconds and the monitor."""
    raytmp = Path(tempfile.mkdtemp(prefix="tpr-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = {k: v for k, v in _PARENT_ENV.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(raytmp)
    t0 = time.perf_counter()
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
            if pin:  # at once: the interpreter takes over a second to import its way to starting Ray
                os.sched_setaffinity(proc.pid, range(cpus))
            with TreeMonitor(proc.pid) as mon:
                rc = proc.wait()
        return rc, time.perf_counter() - t0, mon
    finally:
        shutil.rmtree(raytmp, ignore_errors=True)


def run_tag(catalog: Path, work: Path, name: str, cpus: int, extra: list[str], pin: bool = True) -> dict:
    """``mgr-batch tag catalog`` in a subprocess (:func:`run_pinned`), timed and polled."""
    out = work / f"out-{name}"
    # -v: Ray Data's own progress output, whose "execution finished in" line gives exec_s (off by default).
    cmd = [
        sys.executable,
        "-c",
        _TAG_BOOTSTRAP,
        "tag",
        str(catalog),
        "--output",
        str(out),
        "--force",
        "--num-cpus",
        str(cpus),
        "--model",
        MODEL,
        "-v",
        *extra,
    ]
    log_path = work / f"{name}.log"
    busy0 = machine_busy_s()
    rc, wall, mon = run_pinned(cmd, cpus=cpus, cwd=work, log_path=log_path, pin=pin)
    busy = machine_busy_s() - busy0
    if rc != 0:
        sys.exit(f"{name}: mgr-batch tag failed (exit {rc}); see {log_path}:\n{log_path.read_text()[-3000:]}")
    run = json.loads((out / "run.json").read_text())
    text = log_path.read_text(errors="replace")
    stats = (
        text.split("MGR_BENCH_STATS_BEGIN")[-1].split("MGR_BENCH_STATS_END")[0]
        if "MGR_BENCH_STATS_BEGIN" in text
        else ""
    )
    ops = parse_ray_data_stats(stats)
    finished = re.findall(r"execution finished in ([\d.]+) seconds", text)
    exec_s = float(finished[-1]) if finished else float("nan")
    decode_wall = sum(o.get("remote_wall_s", 0.0) for o in ops if "featurize_batch" in o["operator"])
    return {
        "name": name,
        "cpus": cpus,
        "pinned_cores": cpus if pin else None,
        "flags": extra,
        "wall_s": wall,
        "run_json_wall_s": run["wall_seconds"],
        "audio_s": run["audio_seconds"],
        "n_songs": run["n_songs"],
        "n_errors": run["n_errors"],
        "n_clips": run["n_clips"],
        "cpu_s": mon.cpu_by_role(),
        # CPU seconds other processes on the machine used meanwhile, as a share of all CPUs x wall
        "others_cpu_share": max(0.0, busy - mon.cpu_by_role()["total"]) / (wall * (os.cpu_count() or 1)),
        "memory_bytes": mon.peak,
        "n_worker_processes": mon.n_workers(),
        "ray_data_operators": ops,
        "graph_execution_s": exec_s,
        # Busy share of the decode slots while the graph ran: summed decode-task wall / (CPUs x graph wall).
        # Other load slows the tasks and the graph alike, so this shows idle slots (start-up, stragglers,
        # backpressure) rather than contention.
        "decode_slot_occupancy": decode_wall / (cpus * exec_s) if exec_s == exec_s and exec_s > 0 else float("nan"),
        "output": str(out),
    }


_OP_RE = re.compile(
    r"^Operator \d+ (?P<name>.+?): (?P<tasks>\d+) tasks executed, (?P<blocks>\d+) blocks produced in (?P<wall>[\d.]+)s"
)
_ROW_RE = re.compile(
    r"^\* (?P<what>Remote wall time|Remote cpu time|UDF time): (?P<min>[\d.]+\w*) min, (?P<max>[\d.]+\w*) max, (?P<mean>[\d.]+\w*) mean, (?P<total>[\d.]+\w*) total"
)


def _seconds(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m[1]) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m[2]] if m else float("nan")


def parse_ray_data_stats(text: str) -> list[dict]:
    """Per operator of the last logged execution: tasks, wall, and summed remote wall/CPU/UDF seconds."""
    ops: list[dict] = []
    for line in text.splitlines():
        line = line.strip()
        if m := _OP_RE.match(line):
            ops.append(
                {
                    "operator": m["name"],
                    "tasks": int(m["tasks"]),
                    "blocks": int(m["blocks"]),
                    "wall_s": float(m["wall"]),
                }
            )
        elif (m := _ROW_RE.match(line)) and ops:
            key = {"Remote wall time": "remote_wall_s", "Remote cpu time": "remote_cpu_s", "UDF time": "udf_s"}[
                m["what"]
            ]
            ops[-1][key] = _seconds(m["total"])
    return ops


# ---------------------------------------------------------------------------------- in-process timings


class Clock:
    """Accumulates CPU seconds (of this thread) and wall seconds under names."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}

    def time(self, name: str, fn, *args, **kwargs):
        c, w = time.thread_time(), time.perf_counter()
        out = fn(*args, **kwargs)
        self.cpu[name] = self.cpu.get(name, 0.0) + time.thread_time() - c
        self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - w
        return out


def plain_loop(files: list[str], model: torch.nn.Module, spec, clip_seconds: float) -> tuple[dict, dict]:
    """The loop of the issue, with the shipped model on mgr-batch's clips and features; (timings, genre per path)."""
    fc, sr = spec.features, spec.audio.sr
    genres, clock = {}, Clock()

    def one(path: str) -> str:
        y, _ = librosa.load(path, sr=sr)  # mono, soxr_hq
        song_clips, _ = clips.cut(y, sr=sr, clip_seconds=clip_seconds, hop_seconds=clip_seconds)
        probs = []
        with torch.inference_mode():
            for clip in song_clips:
                mel = librosa.feature.melspectrogram(
                    y=clip,
                    sr=sr,
                    n_fft=fc.n_fft,
                    hop_length=fc.hop_length,
                    n_mels=fc.n_mels,
                    fmin=fc.fmin,
                    fmax=fc.fmax,
                )
                db = librosa.power_to_db(mel, ref=1.0, amin=spectral.AMIN, top_db=None)
                probs.append(torch.softmax(model(torch.from_numpy(db[None])), dim=-1)[0].numpy())
        return spec.genres[int(np.mean(probs, axis=0).argmax())]

    for path in files:
        genres[path] = clock.time("plain_loop", one, path)
    return {"cpu_s": clock.cpu["plain_loop"], "wall_s": clock.wall["plain_loop"]}, genres


def _mono_resample(y: np.ndarray, sr_in: int, sr: int) -> np.ndarray:
    mono = waveform.mix_down(y) if y.ndim == 2 else y
    return soxr.resample(mono, sr_in, sr, quality="HQ")


def decode_floor(files: list[str], sr: int) -> dict:
    """soundfile + mix + soxr and nothing else; and FFmpeg (PyAV) + mix + soxr; per format, CPU seconds."""
    clock = Clock()
    for path in {Path(f).suffix: f for f in files}.values():  # warm-up, one file a format: first-call costs
        sf.read(path, dtype="float32")
        ffmpeg.load(path, sr, None, "HQ")
    for path in files:
        fmt = Path(path).suffix.lstrip(".")
        y, sr_in = clock.time(f"soundfile:{fmt}", sf.read, path, dtype="float32", always_2d=True)
        clock.time(f"soundfile:{fmt}", _mono_resample, y, sr_in, sr)
        clock.time(f"pyav:{fmt}", ffmpeg.load, path, sr, None, "HQ")
    out = {"cpu_s": {}, "wall_s": {}}
    for lib in ("soundfile", "pyav"):
        out["cpu_s"][lib] = sum(v for k, v in clock.cpu.items() if k.startswith(lib + ":"))
        out["wall_s"][lib] = sum(v for k, v in clock.wall.items() if k.startswith(lib + ":"))
    out["cpu_s_by_format"] = clock.cpu
    return out


def stage_split(
    files: list[str], catalog: Path, spec, clip_cfg: ClipConfig, songs_per_task: int, batch_size: int | None, work: Path
) -> dict:
    """Every stage of the tagging graph, single thread, with mgr-batch's own functions, in the graph's batches.

    read/decode/mono/resample/validate/cut/featurize replay ``audio.load`` + ``featurize_batch`` step by step
    (the same calls in the same blocks); ``featurize_batch`` is then also timed whole, as a check that the
    steps add up; infer is ``Predictor`` (what the decode tasks run on CPU) and write is ``write_tables`` (Parquet parts).
    """
    clock = Clock()
    listing = clock.time("list", storage.list_inputs, str(catalog), None)
    sr, audio_cfg = spec.audio.sr, spec.audio
    predictor = Predictor(MODEL, batch_size=batch_size, device="cpu")
    out_dir = work / "stage-split-out"
    shutil.rmtree(out_dir, ignore_errors=True)
    old_mix = 0.0
    paths = listing.files["path"].tolist()
    for lo in range(0, len(paths), songs_per_task):
        batch_paths = paths[lo : lo + songs_per_task]
        for path in batch_paths:
            f = clock.time("read", storage.open_input, path, None)
            data = clock.time("read", f.read)
            f.close()
            # Decode as audio.load does (FFmpeg for Ogg, else libsndfile), in its blocks.
            native_sr, blocks = clock.time("decode", _decode_blocks, data, audio_cfg.max_duration)
            stream = soxr.ResampleStream(native_sr, sr, 1, dtype="float32", quality=audio_cfg.resample_quality)
            chunks = []
            while (x := clock.time("decode", next, blocks, None)) is not None:
                c = time.thread_time()
                x.mean(axis=1, dtype=np.float32)  # what the mix cost before waveform.mix_down
                old_mix += time.thread_time() - c
                mono = clock.time("mono", waveform.mix_down, x)
                chunks.append(clock.time("resample", stream.resample_chunk, mono))
            chunks.append(clock.time("resample", stream.resample_chunk, np.zeros(0, np.float32), last=True))
            y = clock.time("resample", np.concatenate, chunks)
            clock.time("validate", audio.validate, y, silence_threshold=audio_cfg.silence_threshold)
            song_clips, _, _ = clock.time("cut", _select, y, sr, clip_cfg)
            clock.time("featurize", features.featurize, song_clips, sr=sr, cfg=spec.features)
        rows = listing.files[listing.files["path"].isin(batch_paths)]
        batch = {c: rows[c].to_numpy() for c in ("path", "song_id", "size", "mtime")}
        featurized = clock.time(
            "featurize_batch (whole, check)",
            featurize_batch,
            batch,
            audio=audio_cfg,
            clip_cfg=clip_cfg,
            feature_cfg=spec.features,
        )
        _infer_and_write(clock, predictor, featurized, spec, clip_cfg, out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    return {"cpu_s": clock.cpu, "wall_s": clock.wall, "mono_before_mix_down_cpu_s": old_mix}


def _infer_and_write(
    clock: Clock, predictor: Predictor, featurized: dict, spec, clip_cfg: ClipConfig, out: Path
) -> None:
    """The graph's last two steps on one featurized batch, timed as ``infer`` and ``write``."""
    predicted = clock.time("infer", predictor, featurized)
    clock.time(
        "write",
        write_tables,
        predicted,
        output=str(out),
        genres=spec.genres,
        model_id=spec.model_id,
        clip_seconds=clip_cfg.clip_seconds,
    )


def stage_work(catalog: Path, model: str, songs_per_task: int, work: Path) -> dict:
    """The tagging graph's work for ``model`` without Ray, single thread: ``featurize_batch`` (the model's
    precision setting as ``tag`` runs it), ``Predictor`` and ``write_tables`` on each batch of the listing.
    What a tag run's decode tasks do, so their CPU time in a real run can be set against it."""
    _, spec = checkpoint.load(model)
    inference = InferenceConfig()
    clip_cfg = ClipConfig(clip_seconds=spec.clips.clip_seconds)
    listing = storage.list_inputs(str(catalog), None).files
    predictor = Predictor(model, device="cpu", precision=inference.precision)
    out_dir = work / f"stage-work-{model}"
    shutil.rmtree(out_dir, ignore_errors=True)
    clock = Clock()
    for lo in range(0, len(listing), songs_per_task):
        rows = listing.iloc[lo : lo + songs_per_task]
        batch = {c: rows[c].to_numpy() for c in ("path", "song_id", "size", "mtime")}
        featurized = clock.time(
            "featurize_batch",
            featurize_batch,
            batch,
            audio=spec.audio,
            clip_cfg=clip_cfg,
            feature_cfg=spec.features,
            precision=inference.precision,
        )
        _infer_and_write(clock, predictor, featurized, spec, clip_cfg, out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    return {"cpu_s": clock.cpu, "total_cpu_s": sum(clock.cpu.values()), "precision": inference.precision}


def _decode_blocks(data: bytes, max_duration: float):
    """(native rate, generator of (frames, channels) float32 blocks) of ``data``, decoded as ``audio.load``
    decodes it: the same library, the same block size, the same cap."""
    if data[: len(audio.OGG_MAGIC)] == audio.OGG_MAGIC:
        container = av.open(io.BytesIO(data), metadata_errors="replace")
        stream = container.streams.audio[0]
        native_sr, limit = stream.rate, int(max_duration * stream.rate)

        def blocks():
            yield from ffmpeg.pyav_blocks(container.decode(stream), native_sr, stream.codec_context.layout, limit)
            container.close()

        return native_sr, blocks()
    snd = sf.SoundFile(io.BytesIO(data))
    native_sr = snd.samplerate
    limit, block = min(snd.frames, int(max_duration * native_sr)), int(waveform.BLOCK_SECONDS * native_sr)

    def soundfile_blocks():
        done = 0
        with snd:
            while done < limit:
                x = snd.read(min(block, limit - done), dtype="float32", always_2d=True)
                if not len(x):
                    break
                yield x
                done += len(x)

    return native_sr, soundfile_blocks()


def _select(y: np.ndarray, sr: int, clip_cfg: ClipConfig):
    from mgr_batch.clips.crops import select_clips

    return select_clips(y, sr=sr, cfg=clip_cfg)


# ------------------------------------------------------------------------------------- micro benchmarks


def _cpu(fn, *args, repeats: int = 1, **kwargs) -> float:
    """Least thread CPU seconds of ``repeats`` calls (after none: the callers warm up themselves)."""
    best = float("inf")
    for _ in range(repeats):
        c = time.thread_time()
        fn(*args, **kwargs)
        best = min(best, time.thread_time() - c)
    return best


def micro_logmel(y: np.ndarray, sr: int, fc) -> dict:
    song_clips, _ = clips.cut(y, sr=sr, clip_seconds=3.0, hop_seconds=3.0)

    def ref():
        for clip in song_clips:
            librosa.power_to_db(
                librosa.feature.melspectrogram(
                    y=clip,
                    sr=sr,
                    n_fft=fc.n_fft,
                    hop_length=fc.hop_length,
                    n_mels=fc.n_mels,
                    fmin=fc.fmin,
                    fmax=fc.fmax,
                ),
                ref=1.0,
                amin=spectral.AMIN,
                top_db=None,
            )

    def ours():
        features.featurize(song_clips, sr=sr, cfg=fc)

    ref(), ours()  # warm-up (librosa's lazy imports, mel basis caches)
    minutes = len(song_clips) * 3.0 / 60
    a, b = _cpu(ref, repeats=2) / minutes, _cpu(ours, repeats=2) / minutes
    return {"minutes": minutes, "reference_s_per_min": a, "mgr_batch_s_per_min": b, "speedup": a / b}


def micro_classic(data: Path, n_songs: int, sr: int) -> dict:
    manifest = pd.read_csv(data / "gtzan" / "manifest.csv")
    full = manifest[manifest["kind"] == "full"].sort_values("song_id").iloc[:: max(1, 261 // max(n_songs, 1))][:n_songs]
    ys = [audio.load(str(data / "gtzan" / p), sr=sr).y for p in full["path"]]
    gtzan_features(ys[0], sr=sr), gtzan_features_reference(ys[0], sr=sr)  # warm-up (numba compiles)
    minutes = sum(len(y) for y in ys) / sr / 60
    ref = sum(_cpu(gtzan_features_reference, y, sr=sr) for y in ys) / minutes
    ours = sum(_cpu(gtzan_features, y, sr=sr) for y in ys) / minutes
    return {
        "songs": len(ys),
        "minutes": minutes,
        "reference_s_per_min": ref,
        "mgr_batch_s_per_min": ours,
        "speedup": ref / ours,
    }


def _reference_segmentation_s(
    y: np.ndarray, sr: int, cfg: SegmentationConfig, n_pairs: int, seed: int
) -> tuple[float, int]:
    """The method as written, with librosa: resample, frame, ``librosa.lpc`` per window, and for every
    ordered pair the residual of window j through window i's inverse filter (``scipy.signal.lfilter``)
    and its autocorrelation; the pair cost is measured on ``n_pairs`` random pairs and scaled to all."""
    from scipy.signal import lfilter

    c0 = time.thread_time()
    ya = librosa.resample(y, orig_sr=sr, target_sr=cfg.sr, res_type="soxr_hq").astype(np.float64)
    win = int(round(cfg.window_seconds * cfg.sr))
    frames = librosa.util.frame(ya, frame_length=win, hop_length=win, axis=0)
    lpcs = [librosa.lpc(f, order=cfg.order) for f in frames]
    sigma2 = [float(np.mean(lfilter(a, [1.0], f) ** 2)) for a, f in zip(lpcs, frames, strict=True)]
    fit_s = time.thread_time() - c0
    rng = np.random.default_rng(seed)
    pairs = rng.integers(0, len(frames), size=(n_pairs, 2))
    c1 = time.thread_time()
    for i, j in pairs:
        e = lfilter(lpcs[i], [1.0], frames[j])
        r = np.array([e[: len(e) - k] @ e[k:] for k in range(cfg.max_lag + 1)]) / len(e)
        _ = (sigma2[i] / r[0] - 1) ** 2 + 2 * np.sum((r[1:] / r[0]) ** 2)
    per_pair = (time.thread_time() - c1) / n_pairs
    return fit_s + per_pair * len(frames) ** 2, len(frames)


def micro_segmentation(y: np.ndarray, sr: int) -> dict:
    cfg = SegmentationConfig()
    segmentation.representative(y[: 60 * sr], sr=sr, cfg=cfg)  # warm-up
    minutes = len(y) / sr / 60
    ours = _cpu(segmentation.representative, y, sr=sr, cfg=cfg, repeats=2)
    clustering = ours - _cpu(segmentation.sem_matrix, y, sr=sr, cfg=cfg, repeats=2)
    ref, n = _reference_segmentation_s(y, sr, cfg, n_pairs=300, seed=0)
    ref += max(clustering, 0.0)  # the same clustering step on top
    return {
        "minutes": minutes,
        "windows": n,
        "reference_s_per_min": ref / minutes,
        "mgr_batch_s_per_min": ours / minutes,
        "speedup": ref / ours,
        "reference": "librosa.resample + librosa.lpc per window + lfilter SEM per pair (300 pairs timed, scaled to all) + the same clustering",
    }


def micro_inference(x: np.ndarray) -> dict:
    """Clips per CPU second, one thread, of the shipped model on real log-mel clips ``x``."""
    model, _ = checkpoint.load(MODEL)
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    xt = torch.from_numpy(np.ascontiguousarray(x))
    out = {}

    def run(m, bs):
        with torch.inference_mode():
            for lo in range(0, len(xt), bs):
                m(xt[lo : lo + bs])

    for name, m in (("eager", model), ("channels_last", fast)):
        for bs in (1, 8, 64):
            run(m, bs)  # warm-up
            out[f"{name}, batch {bs}"] = len(xt) / _cpu(run, m, bs, repeats=2)
    with torch.inference_mode():
        diff = float((fast(xt[:64]) - model(xt[:64])).abs().max())
    return {"clips": len(xt), "clips_per_cpu_s": out, "channels_last_max_abs_logit_diff": diff}


# ------------------------------------------------------------------------------------------------- main


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def link_catalog(files: list[str], folder: Path, copies: int) -> Path:
    """``copies`` hard links of each file under ``folder`` (distinct paths, so distinct songs to mgr-batch)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for k in range(copies):
        for f in files:
            os.link(f, folder / f"r{k:02d}-{Path(f).name}")
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--minutes", type=float, default=30.0, help="audio in the catalog (default 30)")
    ap.add_argument("--scale", type=int, default=10, help="memory check on a catalog this many times larger (0: skip)")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the multi-CPU tag run (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "mgr-batch-bench")
    ap.add_argument("--classic-songs", type=int, default=6, help="GTZAN songs for the 58-value vector timing")
    ap.add_argument("--seg-minutes", type=float, default=5.0, help="song length for the segmentation timing")
    ap.add_argument(
        "--variant",
        action="append",
        default=None,
        help="extra flags for one more --cpus tag run (repeatable), e.g. '--batch-size 8'",
    )
    ap.add_argument("--repeats", type=int, default=1, help="tries of each tag run on the catalog; the fastest is kept")
    ap.add_argument(
        "--also-model",
        action="append",
        default=[],
        help=f"another model for the 1-CPU and --cpus tag runs and their fixed cost (repeatable; the plain loop, the "
        f"scaled runs and the variants use {MODEL}), e.g. 'default', the shipped default",
    )
    ap.add_argument(
        "--formats",
        default=",".join(FORMATS),
        help=f"catalog formats, in turn (default {','.join(FORMATS)}; also {','.join(sorted(set(ENCODINGS) - set(FORMATS)))})",
    )
    ap.add_argument("--name", default="throughput", help="result file names: <name>.json and <name>.md")
    ap.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let each tag run use every core (default: pinned to as many cores as it gets CPUs)",
    )
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument(
        "--default-only",
        action="store_true",
        help="only the decode floor and the shipped default (as it is and with each --variant's flags)",
    )
    args = ap.parse_args(argv)
    formats = tuple(args.formats.split(","))
    if not formats or set(formats) - set(ENCODINGS):
        ap.error(f"--formats: choose from {', '.join(ENCODINGS)}")
    variants = args.variant or []
    if args.pin and (os.cpu_count() or 1) < args.cpus:
        ap.error(f"--cpus {args.cpus} is more than this machine's {os.cpu_count()} cores: pass --no-pin")
    if os.path.commonpath([str(args.cache.resolve()), str(ROOT)]) == str(ROOT):
        sys.exit("--cache must lie outside the repository")
    started = time.perf_counter()
    rerun = "python benchmarks/throughput.py " + shlex.join(argv if argv is not None else sys.argv[1:])

    catalog, audio_s = build_catalog(
        args.data, args.minutes, args.seed, args.cache, jobs=os.cpu_count() or 1, formats=formats
    )
    files = catalog_files(catalog)
    fmt_counts = pd.Series([Path(f).suffix for f in files]).value_counts().to_dict()
    print(f"catalog {catalog}: {len(files)} files, {audio_s / 60:.1f} min ({fmt_counts})", flush=True)
    work = Path(tempfile.mkdtemp(prefix="mgr-batch-throughput-"))
    if args.default_only:
        return default_only(args, catalog, files, audio_s, fmt_counts, work, rerun)
    model, spec = checkpoint.load(MODEL)
    clip_cfg = ClipConfig(clip_seconds=spec.clips.clip_seconds)
    result: dict = {
        "rerun": rerun,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "librosa": librosa.__version__,
            "soundfile": sf.__version__,
            "libsndfile": sf.__libsndfile_version__,
            "soxr": soxr.__version__,
            "av": av.__version__,
        },
        "catalog": {
            "files": len(files),
            "audio_s": audio_s,
            "formats": fmt_counts,
            "seed": args.seed,
            "sample_rates": {f: ENCODINGS[f][2] for f in formats},
            "channels": 2,
        },
        "model_id": spec.model_id,
        "pinned": args.pin,
        "load_average": {"start": loadavg()},
    }

    # In-process, single thread: the plain loop, the decode floor, the stage split.
    print("plain loop ...", flush=True)
    plain_loop(files[:1], model, spec, clip_cfg.clip_seconds)  # warm-up: librosa's lazy imports and caches
    result["plain_loop"], plain_genres = plain_loop(files, model, spec, clip_cfg.clip_seconds)
    print(f"  {result['plain_loop']}", flush=True)
    print("decode floor ...", flush=True)
    result["decode_floor"] = decode_floor(files, spec.audio.sr)
    print(f"  {result['decode_floor']['cpu_s']}", flush=True)
    print("stage split ...", flush=True)
    result["stage_split"] = stage_split(files, catalog, spec, clip_cfg, SONGS_PER_TASK, None, work)
    result["stage_work"] = {}
    for m in args.also_model:
        print(f"stage work of {m}, one thread ...", flush=True)
        result["stage_work"][m] = stage_work(catalog, m, SONGS_PER_TASK, work)
        print(f"  {result['stage_work'][m]['total_cpu_s']:.1f} CPU-s", flush=True)
    result["load_average"]["after_in_process"] = loadavg()

    # Featurization and inference alone.
    print("featurization and inference alone ...", flush=True)
    sr = spec.audio.sr
    parts, need = [], max(args.seg_minutes * 60, 256 * 3.0) * sr  # a song for segmentation, 256 clips for inference
    for f in files * 20:
        parts.append(audio.load(f, sr=sr).y)
        if sum(map(len, parts)) >= need:
            break
    y_all = np.concatenate(parts)
    y = y_all[: int(args.seg_minutes * 60 * sr)]
    result["micro"] = {
        "logmel": micro_logmel(y, sr, spec.features),
        "gtzan_58": micro_classic(args.data, args.classic_songs, sr),
        "segmentation": micro_segmentation(y, sr),
    }
    song_clips, _ = clips.cut(y_all, sr=sr, clip_seconds=3.0, hop_seconds=3.0)
    result["micro"]["inference"] = micro_inference(features.featurize(song_clips[:256], sr=sr, cfg=spec.features))
    print(f"  {json.dumps(result['micro'], default=str)[:600]}", flush=True)

    # mgr-batch tag, as a subprocess, Ray start-up included.
    fixed_catalog = link_catalog(sorted(files, key=os.path.getsize)[:1], work / "catalog-1file", 1)
    runs = {}
    for name, cat, cpus, extra in [
        ("fixed_1cpu", fixed_catalog, 1, []),
        (f"fixed_{args.cpus}cpu", fixed_catalog, args.cpus, []),
        ("tag_1cpu", catalog, 1, []),
        (f"tag_{args.cpus}cpu", catalog, args.cpus, []),
        *[(f"tag_{args.cpus}cpu_variant{i}", catalog, args.cpus, v.split()) for i, v in enumerate(variants)],
        *[
            (f"{kind}_{cpus}cpu@{m}", cat, cpus, ["--model", m])  # a later --model wins over run_tag's own
            for m in args.also_model
            for kind, cat in (("fixed", fixed_catalog), ("tag", catalog))
            for cpus in (1, args.cpus)
        ],
    ]:
        tries = []
        for k in range(args.repeats):
            print(f"{name}: mgr-batch tag --num-cpus {cpus} {' '.join(extra)} ({k + 1}/{args.repeats}) ...", flush=True)
            la = loadavg()
            tries.append(run_tag(cat, work, name, cpus, extra, args.pin))
            tries[-1]["load_average"] = [la, loadavg()]
            print(f"  wall {tries[-1]['wall_s']:.1f} s, tree CPU {tries[-1]['cpu_s']['total']:.1f} s", flush=True)
        runs[name] = min(tries, key=lambda t: t["wall_s"])  # the least disturbed try
        runs[name]["walls_s"] = [t["wall_s"] for t in tries]
    if args.scale > 1:
        big = link_catalog(files, work / f"catalog-x{args.scale}", args.scale)
        scaled = [(f"tag_{cpus}cpu_x{args.scale}", cpus, []) for cpus in (args.cpus, 1)]  # memory at scale, and
        scaled += [
            (f"tag_{args.cpus}cpu_variant{i}_x{args.scale}", args.cpus, v.split())  # 1 -> N scaling where
            for i, v in enumerate(variants)
        ]  # start-up weighs little; each variant at scale too
        for name, cpus, extra in scaled:
            print(f"{name}: {args.scale}x the catalog {' '.join(extra)} ...", flush=True)
            la = loadavg()
            runs[name] = run_tag(big, work, name, cpus, extra, args.pin)
            runs[name]["load_average"] = [la, loadavg()]
            print(f"  wall {runs[name]['wall_s']:.1f} s, tree CPU {runs[name]['cpu_s']['total']:.1f} s", flush=True)
    result["tag_runs"] = runs

    # Same predictions as the plain loop?
    songs = pd.read_parquet(Path(runs[f"tag_{args.cpus}cpu"]["output"]) / "songs", columns=["path", "genre"])
    agree = [plain_genres.get(p) == g for p, g in zip(songs["path"], songs["genre"], strict=True)]
    result["agreement_with_plain_loop"] = {
        "songs": len(agree),
        "same_genre": float(np.mean(agree)) if agree else float("nan"),
    }
    result["summary"] = summarize(result, args.cpus, args.scale)
    result["load_average"]["end"] = loadavg()
    result["benchmark_wall_s"] = time.perf_counter() - started
    shutil.rmtree(work, ignore_errors=True)

    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    (args.results / f"{args.name}.md").write_text(markdown(result, args.cpus, args.scale))
    print((args.results / f"{args.name}.md").read_text())
    return 0


def default_only(
    args, catalog: Path, files: list[str], audio_s: float, fmt_counts: dict, work: Path, rerun: str
) -> int:
    """``--default-only``: the decode floor, then the shipped default with ``args.cpus`` CPUs as it is and with
    each ``--variant``, against the floor in core-seconds (wall x CPUs) and CPU seconds; writes the results."""
    from machine import cpu_features, cpu_name  # benchmarks/machine.py, beside this script

    from mgr_batch.models import precision

    _, spec = checkpoint.load("default")
    n = args.cpus
    result: dict = {
        "rerun": rerun,
        "machine": {
            "cpu": cpu_name(),
            "cpu_features": cpu_features(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "auto_precision": precision.resolve("auto", "cpu"),
        },
        "catalog": {"files": len(files), "audio_s": audio_s, "formats": fmt_counts},
        "load_average": {"start": loadavg()},
    }
    print("decode floor ...", flush=True)
    result["decode_floor"] = decode_floor(files, spec.audio.sr)
    floor_c, floor_w = result["decode_floor"]["cpu_s"]["soundfile"], result["decode_floor"]["wall_s"]["soundfile"]
    fixed_catalog = link_catalog(sorted(files, key=os.path.getsize)[:1], work / "catalog-1file", 1)
    runs: dict = {}
    settings = [("default", [])] + [(f"variant{i}", v.split()) for i, v in enumerate(args.variant or [])]
    for k in range(args.repeats):  # settings interleaved, so that a busy moment does not land on one alone
        for label, flags in settings:
            for kind, cat in (("fixed", fixed_catalog), ("tag", catalog)):
                name = f"{kind}_{n}cpu@{label}"
                print(f"{name}: mgr-batch tag --model default {' '.join(flags)} ({k + 1}/{args.repeats}) ...")
                la = loadavg()
                run = run_tag(cat, work, name, n, ["--model", "default", *flags], args.pin)
                run["load_average"] = [la, loadavg()]
                print(f"  wall {run['wall_s']:.1f} s, tree CPU {run['cpu_s']['total']:.1f} s", flush=True)
                if name not in runs or run["wall_s"] < runs[name]["wall_s"]:  # the least disturbed try
                    runs[name] = run | {"walls_s": runs.get(name, {}).get("walls_s", [])}
                runs[name]["walls_s"] = runs[name]["walls_s"] + [run["wall_s"]]
    rows = []
    for label, flags in settings:
        tag, fixed = runs[f"tag_{n}cpu@{label}"], runs[f"fixed_{n}cpu@{label}"]
        rows.append(
            {
                "flags": " ".join(flags) or "(as shipped)",
                "wall_s": tag["wall_s"],
                "walls_s": tag["walls_s"],
                "tree_cpu_s": tag["cpu_s"]["total"],
                "core_s_over_floor_wall": n * tag["wall_s"] / floor_w,
                "cpu_s_over_floor_cpu": tag["cpu_s"]["total"] / floor_c,
                "fixed_wall_s": fixed["wall_s"],
                "marginal_core_s_over_floor_wall": n * (tag["wall_s"] - fixed["wall_s"]) / floor_w,
                "others_cpu_share": tag["others_cpu_share"],
                "n_songs": tag["n_songs"],
                "n_errors": tag["n_errors"],
            }
        )
    result["runs"] = runs
    result["rows"] = rows
    result["load_average"]["end"] = loadavg()
    m = result["machine"]
    lines = [
        "# The shipped default against the decode floor",
        "",
        f"Rerun: `{rerun}`  ",
        f"CPU: {m['cpu']} ({m['cpu_features']}), {m['cpus']} CPUs; `--precision auto` resolves to "
        f"{m['auto_precision']} here; torch {m['torch']}; load average {result['load_average']['start']:.1f} at "
        f"start, {result['load_average']['end']:.1f} at the end.  ",
        f"Catalog: {len(files)} files, {audio_s / 60:.1f} min of real music ({fmt_counts}). Decode floor "
        f"(soundfile + mix + soxr HQ, one thread): {floor_w:.1f} s wall, {floor_c:.1f} CPU-s.",
        "",
        f"Each run: `mgr-batch tag --model default --num-cpus {n}`, pinned to {n} cores, Ray's start included; "
        f"the fastest of {args.repeats} tries. Core-seconds = wall x {n}.",
        "",
        "| flags | wall (s) | core-s / floor | CPU-s / floor | without the fixed cost (core-s / floor) | "
        "other processes' CPU share |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['flags']} | {r['wall_s']:.1f} ({', '.join(f'{w:.1f}' for w in r['walls_s'])}) | "
            f"{r['core_s_over_floor_wall']:.2f}x | {r['cpu_s_over_floor_cpu']:.2f}x | "
            f"{r['marginal_core_s_over_floor_wall']:.2f}x (fixed {r['fixed_wall_s']:.1f} s) | "
            f"{r['others_cpu_share']:.0%} |"
            for r in rows
        ),
        "",
    ]
    shutil.rmtree(work, ignore_errors=True)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    (args.results / f"{args.name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def summarize(r: dict, cpus: int, scale: int) -> dict:
    """The figures the issue asks for, from one run's measurements (ratios within the run)."""
    a = r["catalog"]["audio_s"]
    plain_c, plain_w = r["plain_loop"]["cpu_s"], r["plain_loop"]["wall_s"]
    floor_c, floor_w = r["decode_floor"]["cpu_s"]["soundfile"], r["decode_floor"]["wall_s"]["soundfile"]
    runs = r["tag_runs"]
    s: dict = {"audio_minutes": a / 60}
    s["plain_loop"] = {"x_realtime_per_core_cpu": a / plain_c, "x_realtime_per_core_wall": a / plain_w}
    s["decode_floor"] = {
        "x_realtime_per_core_cpu": a / floor_c,
        "x_realtime_per_core_wall": a / floor_w,
        "pyav_x_realtime_per_core_cpu": a / r["decode_floor"]["cpu_s"]["pyav"],
    }
    for name, run in runs.items():
        if name.startswith("fixed"):
            continue
        n, wall, cpu = run["cpus"], run["wall_s"], run["cpu_s"]["total"]
        flags = run["flags"]
        model = name.partition("@")[2] or (flags[flags.index("--model") + 1] if "--model" in flags else "")
        fixed = runs.get(f"fixed_{n}cpu@{model}", runs[f"fixed_{n}cpu"])  # a variant's own model's, when measured
        core_s = n * wall
        s[name] = {
            "cpus": n,
            "model": model or MODEL,
            "flags": " ".join(run["flags"]),
            "wall_s": wall,
            "core_s": core_s,
            "tree_cpu_s": cpu,
            "x_realtime_per_core_wall": a * scale_of(name, scale) / core_s,
            "x_realtime_per_core_cpu": a * scale_of(name, scale) / cpu,
            "vs_plain_loop_per_core_wall": (plain_w * scale_of(name, scale)) / core_s,
            "vs_plain_loop_per_core_cpu": (plain_c * scale_of(name, scale)) / cpu,
            "core_s_over_floor_wall": core_s / (floor_w * scale_of(name, scale)),
            "cpu_s_over_floor_cpu": cpu / (floor_c * scale_of(name, scale)),
            "fixed_run_wall_s": fixed["wall_s"],
            "fixed_run_cpu_s": fixed["cpu_s"]["total"],
            "marginal_core_s_over_floor_wall": n * (wall - fixed["wall_s"]) / (floor_w * scale_of(name, scale)),
            "marginal_cpu_s_over_floor_cpu": (cpu - fixed["cpu_s"]["total"]) / (floor_c * scale_of(name, scale)),
            "marginal_vs_plain_loop_per_core_wall": plain_w * scale_of(name, scale) / (n * (wall - fixed["wall_s"])),
        }
    one, many = runs["tag_1cpu"], runs[f"tag_{cpus}cpu"]
    f1, fn = runs["fixed_1cpu"]["wall_s"], runs[f"fixed_{cpus}cpu"]["wall_s"]
    s["scaling_efficiency"] = {
        "with_startup": one["wall_s"] / (cpus * many["wall_s"]),
        "without_fixed_cost": (one["wall_s"] - f1) / (cpus * (many["wall_s"] - fn)),
        "graph_only": one["graph_execution_s"] / (cpus * many["graph_execution_s"]),
        "decode_slot_occupancy_1cpu": one["decode_slot_occupancy"],
        f"decode_slot_occupancy_{cpus}cpu": many["decode_slot_occupancy"],
    }
    if scale > 1:
        big = runs[f"tag_{cpus}cpu_x{scale}"]
        extra_audio = a * (scale - 1)
        d_wall, d_cpu = big["wall_s"] - many["wall_s"], big["cpu_s"]["total"] - many["cpu_s"]["total"]
        s["steady_state"] = {  # the extra (scale - 1) catalogs: no start-up in it, only per-song work
            "audio_s": extra_audio,
            "core_s": cpus * d_wall,
            "cpu_s": d_cpu,
            "x_realtime_per_core_wall": extra_audio / (cpus * d_wall),
            "x_realtime_per_core_cpu": extra_audio / d_cpu,
            "vs_plain_loop_per_core_wall": plain_w * (scale - 1) / (cpus * d_wall),
            "vs_plain_loop_per_core_cpu": plain_c * (scale - 1) / d_cpu,
            "over_floor_wall": cpus * d_wall / (floor_w * (scale - 1)),
            "over_floor_cpu": d_cpu / (floor_c * (scale - 1)),
        }
        big1 = runs[f"tag_1cpu_x{scale}"]
        s["scaling_efficiency"]["at_scale"] = big1["wall_s"] / (cpus * big["wall_s"])
        s["scaling_efficiency"]["at_scale_steady_state"] = (big1["wall_s"] - one["wall_s"]) / (cpus * d_wall)
        m1, m10 = many["memory_bytes"], big["memory_bytes"]
        s["memory"] = {
            k: {"x1": m1.get(k, 0), f"x{scale}": m10.get(k, 0), "ratio": m10.get(k, 0) / max(m1.get(k, 0), 1)}
            for k in sorted(set(m1) | set(m10))
        }
    split = r["stage_split"]["cpu_s"]
    total = sum(split.get(k, 0.0) for k in STAGES)
    s["stage_split"] = {
        k: {
            "cpu_s": split.get(k, 0.0),
            "s_per_audio_min": split.get(k, 0.0) / (a / 60),
            "share": split.get(k, 0.0) / total,
        }
        for k in STAGES
    }
    s["stage_split_total_cpu_s"] = total
    s["stage_split_vs_plain_loop_per_core_cpu"] = plain_c / total
    s["stage_split_over_floor_cpu"] = total / floor_c
    return s


def scale_of(name: str, scale: int) -> int:
    return scale if name.endswith(f"_x{scale}") else 1


def _mib(b: float) -> str:
    return f"{b / 2**20:.0f}"


def _inside(run: dict, cpus: int, model: str) -> list[str]:
    """Where the CPU time of one tag run went: Ray Data's tasks, the rest of the workers, driver, daemons."""
    ops = {o["operator"]: o for o in run["ray_data_operators"]}
    cpu = run["cpu_s"]
    op_cpu = sum(o.get("remote_cpu_s", 0) for o in ops.values())
    lines = [
        f"Inside the {cpus}-CPU `mgr-batch tag --model {model}` run (process-tree CPU and Ray Data's `ds.stats()`), "
        "CPU seconds:",
        "",
        "| part | CPU s | share |",
        "|---|---|---|",
    ]
    for k, v in ops.items():
        if v.get("remote_cpu_s") is not None:
            lines.append(
                f"| Ray Data task/actor `{k}` ({v['tasks']} tasks) | {v['remote_cpu_s']:.1f} | {100 * v['remote_cpu_s'] / cpu['total']:.0f}% |"
            )
    lines += [
        f"| worker processes outside tasks (start-up imports, Ray worker loop) | {cpu.get('worker', 0) - op_cpu:.1f} | {100 * (cpu.get('worker', 0) - op_cpu) / cpu['total']:.0f}% |",
        f"| driver (CLI, imports, listing, Ray Data executor) | {cpu.get('driver', 0):.1f} | {100 * cpu.get('driver', 0) / cpu['total']:.0f}% |",
        f"| Ray daemons (raylet, GCS, agents, dashboard) | {cpu.get('ray_daemons', 0):.1f} | {100 * cpu.get('ray_daemons', 0) / cpu['total']:.0f}% |",
        f"| total | {cpu['total']:.1f} | 100% |",
        "",
    ]
    return lines


def markdown(r: dict, cpus: int, scale: int) -> str:
    s, runs = r["summary"], r["tag_runs"]
    floor_cpu = r["decode_floor"]["cpu_s"]["soundfile"]
    a_min = s["audio_minutes"]
    fmts = ", ".join(f"{v} {k.lstrip('.')}" for k, v in sorted(r["catalog"]["formats"].items()))
    rates = " and ".join(
        sorted({f"{sr / 1000:g} kHz" for sr in r["catalog"].get("sample_rates", {"": 44100}).values()})
    )
    la = r["load_average"]
    lines = [
        "# Throughput: `mgr-batch tag` against a plain loop and the decode floor",
        "",
        f"Rerun: `{r['rerun'].strip()}`  ",
        f"Machine: {r['machine']['cpus']} CPUs, {r['machine']['platform']}; load average {la['start']:.1f} at start, "
        f"{la['end']:.1f} at the end (the CPUs are shared with other work: quote ratios, not absolute times).  ",
        f"Catalog: {r['catalog']['files']} files, {a_min:.1f} min of real music (the `long/` tracks and GTZAN songs, "
        f"re-encoded in stereo at {rates}: {fmts}); model `{r['model_id']}`, 3 s clips.",
        "",
        "x real time per core = seconds of audio per second of one core. *wall*: core-seconds = wall time x CPUs "
        "of the run (Ray start-up, Python imports and idle cores included); *CPU*: CPU seconds actually used "
        "(by the process tree for `mgr-batch tag`), which other load on the machine disturbs less. "
        + (
            "Each `tag` run is pinned to as many cores as it has CPUs (its driver, Ray's daemons and workers "
            "together), so a 1-CPU run is a 1-core run."
            if r.get("pinned")
            else "The `tag` runs are not pinned: a 1-CPU run's driver and Ray daemons may use the other cores."
        ),
        "",
        "| run | CPUs | wall (s) | x real time per core (wall / CPU) | vs plain loop per core (wall / CPU) | core-s / decode floor (wall / CPU) | same without the fixed cost (wall / CPU) | load avg (start-end), CPU used by other processes |",
        "|---|---|---|---|---|---|---|---|",
        f"| plain loop (librosa.load + librosa mel + model per clip) | 1 | {r['plain_loop']['wall_s']:.1f} | "
        f"{s['plain_loop']['x_realtime_per_core_wall']:.0f} / {s['plain_loop']['x_realtime_per_core_cpu']:.0f} | 1.00 | "
        f"{r['plain_loop']['wall_s'] / r['decode_floor']['wall_s']['soundfile']:.2f} / {r['plain_loop']['cpu_s'] / r['decode_floor']['cpu_s']['soundfile']:.2f} | | {la['start']:.1f} |",
        f"| decode floor (soundfile + mix + soxr HQ) | 1 | {r['decode_floor']['wall_s']['soundfile']:.1f} | "
        f"{s['decode_floor']['x_realtime_per_core_wall']:.0f} / {s['decode_floor']['x_realtime_per_core_cpu']:.0f} | | 1.00 | | |",
        f"| decode with FFmpeg (PyAV) + mix + soxr HQ | 1 | {r['decode_floor']['wall_s']['pyav']:.1f} | "
        f"- / {s['decode_floor']['pyav_x_realtime_per_core_cpu']:.0f} | | - / {r['decode_floor']['cpu_s']['pyav'] / r['decode_floor']['cpu_s']['soundfile']:.2f} | | {la['after_in_process']:.1f} |",
    ]
    for name, row in s.items():
        if not name.startswith("tag_"):
            continue
        label = f"`mgr-batch tag` {row['flags']}".strip() + (
            f" ({scale}x catalog)" if name.endswith(f"_x{scale}") else ""
        )
        lines.append(
            f"| {label} | {row['cpus']} | {row['wall_s']:.1f} | {row['x_realtime_per_core_wall']:.0f} / {row['x_realtime_per_core_cpu']:.0f} | "
            f"{row['vs_plain_loop_per_core_wall']:.2f} / {row['vs_plain_loop_per_core_cpu']:.2f} | "
            f"{row['core_s_over_floor_wall']:.2f} / {row['cpu_s_over_floor_cpu']:.2f} | "
            f"{row['marginal_core_s_over_floor_wall']:.2f} / {row['marginal_cpu_s_over_floor_cpu']:.2f} | "
            f"{runs[name]['load_average'][0]:.1f}-{runs[name]['load_average'][1]:.1f}, others {100 * runs[name]['others_cpu_share']:.0f}% |"
        )
    if "steady_state" in s:
        st = s["steady_state"]
        lines.append(
            f"| `mgr-batch tag`, steady state: the {scale}x run minus the 1x run ({st['audio_s'] / 60:.0f} min, no start-up) | {cpus} | "
            f"{st['core_s'] / cpus:.1f} | {st['x_realtime_per_core_wall']:.0f} / {st['x_realtime_per_core_cpu']:.0f} | "
            f"{st['vs_plain_loop_per_core_wall']:.2f} / {st['vs_plain_loop_per_core_cpu']:.2f} | "
            f"{st['over_floor_wall']:.2f} / {st['over_floor_cpu']:.2f} | | |"
        )
    f1, fn = runs["fixed_1cpu"], runs[f"fixed_{cpus}cpu"]
    one, many = runs["tag_1cpu"], runs[f"tag_{cpus}cpu"]
    se = s["scaling_efficiency"]
    lines += [
        "",
        f"Fixed cost of a run (a 1-file catalog: interpreter and imports, Ray start-up and shutdown, worker start-up): "
        f"{f1['wall_s']:.1f} s wall / {f1['cpu_s']['total']:.1f} CPU-s with 1 CPU, {fn['wall_s']:.1f} s / {fn['cpu_s']['total']:.1f} CPU-s "
        f'with {cpus}. "Without the fixed cost" subtracts it.  ',
        *(
            f"Fixed cost with `--model {k.partition('@')[2]}` ({runs[k]['cpus']} CPU(s)): {runs[k]['wall_s']:.1f} s wall / "
            f"{runs[k]['cpu_s']['total']:.1f} CPU-s.  "
            for k in runs
            if k.startswith("fixed_") and "@" in k
        ),
        f"Scaling 1 -> {cpus} CPUs (wall): efficiency {100 * se['with_startup']:.0f}% with start-up, "
        f"{100 * se['without_fixed_cost']:.0f}% without the fixed cost, {100 * se['graph_only']:.0f}% for the Ray Data graph alone "
        f"({one['graph_execution_s']:.1f} s vs {many['graph_execution_s']:.1f} s). Decode slots were busy "
        f"{100 * se['decode_slot_occupancy_1cpu']:.0f}% of the graph's time with 1 CPU and "
        f"{100 * se[f'decode_slot_occupancy_{cpus}cpu']:.0f}% with {cpus} (summed task wall / (CPUs x graph wall), "
        "which other load on the machine does not bias).  ",
        *(
            [
                f"On the {scale}x catalog: scaling efficiency 1 -> {cpus} CPUs {100 * se['at_scale']:.0f}% with start-up, "
                f"{100 * se['at_scale_steady_state']:.0f}% in the steady state (the {scale}x run minus the 1x run at each CPU count).  "
            ]
            if "at_scale" in se
            else []
        ),
        f"Plain loop and `mgr-batch tag` ({cpus} CPUs) give the same song genre for "
        f"{100 * r['agreement_with_plain_loop']['same_genre']:.1f}% of {r['agreement_with_plain_loop']['songs']} songs.",
        "",
        "## Where the time goes",
        "",
        f"Single thread, mgr-batch's own functions in the graph's batches ({SONGS_PER_TASK} songs per batch, {CPU_BATCH_SIZE} clips per "
        "forward pass, the model's weights channels-last as the Predictor holds them on CPU), "
        "CPU seconds:",
        "",
        "| stage | CPU s | s per audio minute | share |",
        "|---|---|---|---|",
    ]
    for k, v in s["stage_split"].items():
        lines.append(f"| {k} | {v['cpu_s']:.2f} | {v['s_per_audio_min']:.4f} | {100 * v['share']:.1f}% |")
    ss = r["stage_split"]["cpu_s"]
    lines += [
        f"| total | {s['stage_split_total_cpu_s']:.2f} | {s['stage_split_total_cpu_s'] / a_min:.4f} | 100% |",
        "",
        f"This work alone, without Ray, is {s['stage_split_vs_plain_loop_per_core_cpu']:.2f}x the plain loop per core and "
        f"{s['stage_split_over_floor_cpu']:.2f}x the decode floor.",
        "",
        f"Check: `featurize_batch` timed whole took {ss['featurize_batch (whole, check)']:.2f} CPU-s against "
        f"{sum(ss.get(k, 0) for k in STAGES[1:8]):.2f} for its steps. The mono mix took "
        f"{r['stage_split']['mono_before_mix_down_cpu_s']:.2f} CPU-s with numpy's `mean(axis=1)` before `audio.mix_down`.",
        "",
    ]
    for m, w in r.get("stage_work", {}).items():
        one_m, many_m = runs[f"tag_1cpu@{m}"], runs[f"tag_{cpus}cpu@{m}"]
        task = [sum(o.get("remote_cpu_s", 0) for o in x["ray_data_operators"]) for x in (one_m, many_m)]
        lines += [
            f"`--model {m}`: its stage work alone (`featurize_batch`, `Predictor`, `write_tables` on each batch, one "
            f"thread, no Ray, precision {w['precision']}) took {w['total_cpu_s']:.1f} CPU-s "
            f"({w['total_cpu_s'] / floor_cpu:.2f}x the decode floor). In the tag runs its tasks took "
            f"{task[0]:.1f} CPU-s with 1 CPU and {task[1]:.1f} with {cpus} ({task[0] / w['total_cpu_s']:.2f}x and "
            f"{task[1] / w['total_cpu_s']:.2f}x the stage work), the whole process tree {one_m['cpu_s']['total']:.1f} and "
            f"{many_m['cpu_s']['total']:.1f} CPU-s, and the runs {one_m['wall_s']:.1f} s x 1 and {many_m['wall_s']:.1f} s x "
            f"{cpus} core-seconds ({one_m['wall_s'] / w['total_cpu_s']:.2f}x and {cpus * many_m['wall_s'] / w['total_cpu_s']:.2f}x the stage work).",
            "",
        ]
    for name in [f"tag_{cpus}cpu", *(k for k in runs if k.startswith(f"tag_{cpus}cpu@"))]:
        lines += _inside(runs[name], cpus, name.partition("@")[2] or MODEL)
    lines += [
        "## Featurization and inference alone (one thread, CPU time)",
        "",
        "| what | minutes of audio | reference (s per audio minute) | mgr-batch (s per audio minute) | speed-up |",
        "|---|---|---|---|---|",
    ]
    names = {
        "logmel": "log-mel (librosa melspectrogram + power_to_db per clip vs `features.featurize`)",
        "gtzan_58": "58-value vector (`gtzan_features_reference` vs `gtzan_features`)",
        "segmentation": "segmentation (librosa.lpc + lfilter SEM per pair vs `segmentation.representative`)",
    }
    for k, label in names.items():
        m = r["micro"][k]
        lines.append(
            f"| {label} | {m['minutes']:.1f} | {m['reference_s_per_min']:.3f} | {m['mgr_batch_s_per_min']:.4f} | {m['speedup']:.1f}x |"
        )
    inf = r["micro"]["inference"]
    lines += [
        "",
        f"Inference, shipped CNN on {inf['clips']} real 3 s clips, clips per CPU-second (one thread):",
        "",
        "| model layout | batch 1 | batch 8 | batch 64 |",
        "|---|---|---|---|",
    ]
    for layout in ("eager", "channels_last"):
        c = inf["clips_per_cpu_s"]
        lines.append(
            f"| {layout} | {c[f'{layout}, batch 1']:.0f} | {c[f'{layout}, batch 8']:.0f} | {c[f'{layout}, batch 64']:.0f} |"
        )
    lines += ["", f"channels_last changes logits by at most {inf['channels_last_max_abs_logit_diff']:.1e}.", ""]
    if "memory" in s:
        mem = s["memory"]
        lines += [
            f"## Peak memory, {a_min:.0f} min vs {scale}x ({a_min * scale:.0f} min) catalog, {cpus} CPUs",
            "",
            "RSS counts shared pages (Ray's object store, shared libraries) in every process that maps them; PSS "
            "splits them, so PSS sums add up.",
            "",
            f"| measure | 1x (MiB) | {scale}x (MiB) | ratio |",
            "|---|---|---|---|",
        ]
        for k in ("driver_rss_max", "worker_rss_max", "worker_pss_sum", "ray_daemons_pss_sum", "tree_pss_sum"):
            if k in mem:
                lines.append(f"| {k} | {_mib(mem[k]['x1'])} | {_mib(mem[k][f'x{scale}'])} | {mem[k]['ratio']:.2f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
