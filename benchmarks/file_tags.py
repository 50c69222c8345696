"""What reading a file's own tags costs the decoder, and whether they match what the catalog says.

Run from the repository root:

    python benchmarks/file_tags.py                # 12 files of 30 s per format, 5 interleaved rounds (~1 min)
    python benchmarks/file_tags.py --files 6 --rounds 3

Two measurements:

- ``overhead``: untagged files (written here: WAV, FLAC, MP3 decoded by libsndfile; Ogg Vorbis by FFmpeg),
  each decoded by :func:`mgr_batch.io.audio.load` with the tag reading as shipped and with it replaced by a
  no-op, in interleaved rounds (the median per file of each); and the tag reading alone on an open file
  (``tags.soundfile_tags``, ``tags.pyav_tags``), timed over many calls, which is the cost itself: the decode times
  move more between rounds than the tags cost.
- ``agreement``: the 26 tracks of ``../shared/data/long``, whose manifest lists the title, artist, album and
  genre their files carry: the tags ``load`` gives each against the manifest's.

Writes benchmarks/results/file_tags.json and file_tags.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name  # noqa: E402

from mgr_batch.io import audio  # noqa: E402
from mgr_batch.io import tags as file_tags  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
LONG = ROOT.parent / "shared" / "data" / "long"
FORMATS = {".wav": "PCM_16", ".flac": "PCM_16", ".mp3": "MPEG_LAYER_III", ".ogg": "VORBIS"}


def write_catalog(folder: Path, n: int) -> list[Path]:
    """``n`` untagged 30 s stereo 44.1 kHz files per format (noise over a chirp, so no encoder is idle)."""
    rng = np.random.default_rng(0)
    sr, seconds = 44100, 30.0
    t = np.arange(int(sr * seconds)) / sr
    paths = []
    for i in range(n):
        y = 0.2 * np.sin(2 * np.pi * (200 + 20 * i) * t * (1 + t / seconds)) + 0.05 * rng.standard_normal(len(t))
        stereo = np.stack([y, y[::-1]], axis=1).astype(np.float32)
        for ext, subtype in FORMATS.items():
            path = folder / f"song{i:03d}{ext}"
            sf.write(str(path), stereo, sr, subtype=subtype)
            paths.append(path)
    return paths


def overhead(paths: list[Path], rounds: int) -> dict:
    shipped = (file_tags.soundfile_tags, file_tags.pyav_tags)
    off = (lambda f: ({}, False), lambda container, stream: {})
    times: dict[str, dict[str, list[float]]] = {ext: {"with": [], "without": []} for ext in FORMATS}
    for r in range(rounds):
        for mode in ("with", "without") if r % 2 == 0 else ("without", "with"):
            file_tags.soundfile_tags, file_tags.pyav_tags = shipped if mode == "with" else off
            try:
                for path in paths:
                    t0 = time.perf_counter()
                    audio.load(str(path), sr=22050)
                    times[path.suffix][mode].append(time.perf_counter() - t0)
            finally:
                file_tags.soundfile_tags, file_tags.pyav_tags = shipped
    result = {}
    for ext, by in times.items():
        sample = next(p for p in paths if p.suffix == ext)
        result[ext] = {
            "decode_ms_with_tags": 1000 * statistics.median(by["with"]),
            "decode_ms_without": 1000 * statistics.median(by["without"]),
            "tag_read_us": 1e6 * tag_read_seconds(sample),
        }
        result[ext]["tag_share_of_decode"] = result[ext]["tag_read_us"] / 1000 / result[ext]["decode_ms_without"]
    return result


def tag_read_seconds(path: Path, calls: int = 2000) -> float:
    """Seconds one call of the tag reading takes on an open file, as the decoder that opens it calls it."""
    if path.suffix == ".ogg":
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            t0 = time.perf_counter()
            for _ in range(calls):
                file_tags.pyav_tags(container, stream)
            return (time.perf_counter() - t0) / calls
    with sf.SoundFile(str(path)) as f:
        t0 = time.perf_counter()
        for _ in range(calls):
            file_tags.soundfile_tags(f)
        return (time.perf_counter() - t0) / calls


def agreement() -> dict:
    rows = list(csv.DictReader(open(LONG / "manifest.csv", newline="")))
    found, disagree = 0, []
    for row in rows:
        tags = audio.load(str(LONG / row["path"]), sr=22050, max_duration=1.0, silence_threshold=0.0).tags
        expected = {k: row[k].strip() for k in file_tags.TAG_NAMES if row[k].strip()}
        found += bool(tags)
        if tags != expected:
            disagree.append({"path": row["path"], "load": tags, "manifest": expected})
    return {"files": len(rows), "with_tags": found, "disagree": disagree}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=12, help="untagged files per format")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_catalog(Path(tmp), args.files)
        cost = overhead(paths, args.rounds)
    agree = agreement() if (LONG / "manifest.csv").exists() else None
    result = {"cpu": cpu_name(), "files_per_format": args.files, "rounds": args.rounds, "overhead": cost}
    result["agreement"] = agree
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "file_tags.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Reading a file's own tags during decode",
        "",
        f"`python benchmarks/file_tags.py --files {args.files} --rounds {args.rounds}` on {result['cpu']} "
        "(a shared 2-core machine: the decode medians move by a few percent between rounds).",
        "",
        "Untagged 30 s stereo 44.1 kHz files, decoded to 22050 Hz mono by `mgr_batch.io.audio.load`: the median "
        "per file with the tag reading and with it replaced by a no-op, and the tag reading alone on an open file.",
        "",
        "| format | decoder | decode ms, with tags | without | tag reading alone, µs | share of the decode |",
        "|---|---|---|---|---|---|",
    ]
    for ext, c in cost.items():
        decoder = "FFmpeg" if ext == ".ogg" else "libsndfile"
        lines.append(
            f"| {ext} | {decoder} | {c['decode_ms_with_tags']:.1f} | {c['decode_ms_without']:.1f} | "
            f"{c['tag_read_us']:.1f} | {100 * c['tag_share_of_decode']:.3f}% |"
        )
    if agree is not None:
        lines += [
            "",
            f"`../shared/data/long`: {agree['files']} files, {agree['with_tags']} with at least one of genre, "
            f"artist, album, title; {len(agree['disagree'])} whose tags differ from the manifest's.",
        ]
        lines += [f"- {d['path']}: load {d['load']}, manifest {d['manifest']}" for d in agree["disagree"]]
    (RESULTS / "file_tags.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
