"""bfloat16 against float32 for the shipped default's networks: CPU cost per network, and agreement of the default.

Run from the repository root (../shared/data beside it):

    python benchmarks/precision.py            # every GTZAN train and valid song (~4 min on one thread)
    python benchmarks/precision.py --songs 40 # a quick look

For each GTZAN song we have (train and valid lists only), decoded at the default's 32 kHz and cut into its
3 s clips, it computes the default's stack (MSD_musicnn penultimate + EfficientAT embedding) in float32 and
in bfloat16 (:mod:`mgr_batch.models.precision`), timing each network's forward passes by thread CPU time on
one thread, and scores both with the default model's head: the share of songs given the same genre and the
largest difference of a song probability. Writes benchmarks/results/precision.json and precision.md.
"""

# ruff: noqa: E402  (one thread, set before numpy and torch load their pools)

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from machine import cpu_name  # benchmarks/machine.py, beside this script

from mgr_batch.clips import windows
from mgr_batch.features import stacked as fs
from mgr_batch.io import audio
from mgr_batch.models import checkpoint, precision

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
GTZAN = ROOT.parent / "shared" / "data" / "gtzan"
RESULTS = ROOT / "benchmarks" / "results"


def timed_layers(clips: np.ndarray, *, sr: int, parts, mode: str) -> tuple[np.ndarray, dict[str, float]]:
    """The stack of ``clips`` in ``mode`` and the thread CPU seconds of each network (front end included)."""
    seconds, pieces = {}, {}
    with precision.networks(mode):
        for network in dict.fromkeys(n for n, _ in parts):
            layers = tuple(layer for n, layer in parts if n == network)
            t = time.thread_time()
            pieces[network] = fs.network_layers(clips, sr=sr, network=network, layers=layers)
            seconds[network] = time.thread_time() - t
    return np.concatenate([pieces[n][layer] for n, layer in parts], axis=1), seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--songs", type=int, default=0, help="songs to use (default 0: all of train and valid)")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    model, spec = checkpoint.load("default")
    parts, sr = fs.parts(spec.features), spec.audio.sr
    manifest = pd.read_csv(GTZAN / "manifest.csv")
    manifest = manifest[manifest["split"].isin(["train", "valid"])].sample(frac=1, random_state=0)
    if args.songs:
        manifest = manifest.head(args.songs)
    cpu = {m: dict.fromkeys(dict.fromkeys(n for n, _ in parts), 0.0) for m in ("float32", "bfloat16")}
    rows, audio_s = [], 0.0
    for path in manifest["path"]:
        y = audio.load(str(GTZAN / path), sr=sr).y
        audio_s += len(y) / sr
        clips, _ = windows.cut(y, sr=sr, clip_seconds=spec.clips.clip_seconds, hop_seconds=spec.clips.clip_seconds)
        probs = {}
        for mode in cpu:
            x, seconds = timed_layers(clips, sr=sr, parts=parts, mode=mode)
            for n, s in seconds.items():
                cpu[mode][n] += s
            probs[mode] = model.predict_song_proba(x[:, :, None])
        full, half = probs["float32"], probs["bfloat16"]
        rows.append((path, int(np.argmax(full)), int(np.argmax(half)), float(np.abs(full - half).max()), len(clips)))
    df = pd.DataFrame(rows, columns=["path", "genre_float32", "genre_bfloat16", "max_prob_diff", "clips"])
    minutes = audio_s / 60
    result = {
        "rerun": "python benchmarks/precision.py" + (f" --songs {args.songs}" if args.songs else ""),
        "cpu": cpu_name(),
        "native_bfloat16": precision.native_bfloat16(),
        "torch": torch.__version__,
        "songs": len(df),
        "clips": int(df["clips"].sum()),
        "audio_minutes": minutes,
        "same_genre": float((df["genre_float32"] == df["genre_bfloat16"]).mean()),
        "max_song_prob_diff": float(df["max_prob_diff"].max()),
        "p99_song_prob_diff": float(df["max_prob_diff"].quantile(0.99)),
        "cpu_s_per_audio_minute": {m: {n: s / minutes for n, s in c.items()} for m, c in cpu.items()},
        "differing_songs": df.loc[df["genre_float32"] != df["genre_bfloat16"], "path"].tolist(),
    }
    per = result["cpu_s_per_audio_minute"]
    lines = [
        "# bfloat16 against float32: the default's networks (one CPU thread)",
        "",
        f"Rerun: `{result['rerun']}`  ",
        f"CPU: {result['cpu']} (native bfloat16, AMX: {'yes' if result['native_bfloat16'] else 'no'}), torch "
        f"{result['torch']}. {result['songs']} GTZAN train and valid songs, {result['clips']} clips, "
        f"{minutes:.1f} min of audio at {sr} Hz.",
        "",
        "| network (with its log-mel and resampling) | float32 CPU-s / audio min | bfloat16 | ratio |",
        "|---|---|---|---|",
    ]
    for n in per["float32"]:
        lines.append(
            f"| {n} | {per['float32'][n]:.3f} | {per['bfloat16'][n]:.3f} | {per['bfloat16'][n] / per['float32'][n]:.2f} |"
        )
    total = {m: sum(v.values()) for m, v in per.items()}
    lines += [
        f"| both | {total['float32']:.3f} | {total['bfloat16']:.3f} | {total['bfloat16'] / total['float32']:.2f} |",
        "",
        f"Default model, song level: same genre for {result['same_genre']:.1%} of {result['songs']} songs; song "
        f"probabilities differ by at most {result['max_song_prob_diff']:.3f} (99th percentile "
        f"{result['p99_song_prob_diff']:.3f}).",
        "",
    ]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "precision.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "precision.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
