"""The default's networks on CPU: each lever's cost and the default's agreement with float32.

Run from the repository root (../shared/data beside it):

    python benchmarks/precision.py            # GTZAN train+valid (444 songs) and the 26 long tracks (~15 min)
    python benchmarks/precision.py --songs 40 --no-long   # a quick look

For each song (GTZAN train and valid lists only, then ``long/``), decoded at the default's 32 kHz and cut
into its 3 s clips, it computes the default's stack (MSD_musicnn penultimate + EfficientAT embedding) in
float32 and in bfloat16 (:mod:`mgr_batch.models.precision`), timing each network (its front end included) by
thread CPU time on one thread, and scores both with the default model's head: per data set, the share of
songs given the same genre and the largest difference of a song probability. On every ``--lever-every``-th
song it also times the levers one by one: MSD_musicnn with every front-end filter convolved, dead ones
included (``musicnn.DEAD_FILTER = 0``), and with live filters only, in float32 and in bfloat16; and
EfficientAT in torch (the unfolded network the stack used before ONNX Runtime). Writes benchmarks/results/precision.json and precision.md.
"""

# ruff: noqa: E402  (one thread, set before numpy and torch load their pools)

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from machine import cpu_features, cpu_name  # benchmarks/machine.py, beside this script

from mgr_batch.clips import windows
from mgr_batch.features import stacked as fs
from mgr_batch.io import audio
from mgr_batch.models import checkpoint, precision
from mgr_batch.models import musicnn as mm

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
GTZAN = ROOT.parent / "shared" / "data" / "gtzan"
LONG = ROOT.parent / "shared" / "data" / "long"
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


def torch_efficientat_seconds(clips: np.ndarray, *, sr: int) -> float:
    """Thread CPU seconds of EfficientAT's embedding of ``clips`` in torch (front end included), as before."""
    from mgr_batch.features.efficientat import efficientat_input
    from mgr_batch.models.efficientat import pretrained_network

    net = _torch_efficientat(pretrained_network)
    t = time.thread_time()
    x = torch.from_numpy(efficientat_input(clips, sr=sr))
    with torch.inference_mode():
        for lo in range(0, len(x), 8):
            net(x[lo : lo + 8, None])
    return time.thread_time() - t


@functools.cache
def _torch_efficientat(build):
    return build()


def songs(args) -> list[tuple[str, Path]]:
    """``(data set, path)`` of the songs to use."""
    manifest = pd.read_csv(GTZAN / "manifest.csv")
    manifest = manifest[manifest["split"].isin(["train", "valid"])].sample(frac=1, random_state=0)
    if args.songs:
        manifest = manifest.head(args.songs)
    out = [("gtzan", GTZAN / p) for p in manifest["path"]]
    if args.long:
        out += [("long", p) for p in sorted(LONG.glob("*/*.ogg"))]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--songs", type=int, default=0, help="GTZAN songs to use (default 0: all of train and valid)")
    ap.add_argument("--long", action=argparse.BooleanOptionalAction, default=True, help="the 26 long tracks too")
    ap.add_argument("--lever-every", type=int, default=4, help="time the single levers on every n-th song")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    model, spec = checkpoint.load("default")
    parts, sr = fs.parts(spec.features), spec.audio.sr
    cpu = {m: dict.fromkeys(dict.fromkeys(n for n, _ in parts), 0.0) for m in ("float32", "bfloat16")}
    lever = {
        "MSD_musicnn float32, every filter convolved": 0.0,
        "MSD_musicnn float32, live filters only": 0.0,
        "MSD_musicnn bfloat16, live filters only": 0.0,
        "efficientat torch": 0.0,
        "efficientat onnxruntime": 0.0,
    }
    rows, audio_s, lever_s = [], {"gtzan": 0.0, "long": 0.0}, 0.0
    warm = np.zeros((2, int(spec.clips.clip_seconds * sr)), np.float32)  # networks and sessions built untimed
    for mode in cpu:
        timed_layers(warm, sr=sr, parts=parts, mode=mode)
    torch_efficientat_seconds(warm, sr=sr)
    for i, (dataset, path) in enumerate(songs(args)):
        y = audio.load(str(path), sr=sr, max_duration=spec.audio.max_duration).y
        audio_s[dataset] += len(y) / sr
        clips, _ = windows.cut(y, sr=sr, clip_seconds=spec.clips.clip_seconds, hop_seconds=spec.clips.clip_seconds)
        probs = {}
        for mode in cpu:
            x, seconds = timed_layers(clips, sr=sr, parts=parts, mode=mode)
            for n, s in seconds.items():
                cpu[mode][n] += s
            probs[mode] = model.predict_song_proba(x[:, :, None])
        if i % args.lever_every == 0:
            lever_s += len(y) / sr
            for name, mode, dead in (
                ("MSD_musicnn float32, every filter convolved", "float32", 0.0),
                ("MSD_musicnn float32, live filters only", "float32", mm.DEAD_FILTER),
                ("MSD_musicnn bfloat16, live filters only", "bfloat16", mm.DEAD_FILTER),
            ):
                saved, mm.DEAD_FILTER = mm.DEAD_FILTER, dead
                try:
                    lever[name] += timed_layers(clips, sr=sr, parts=parts[:1], mode=mode)[1]["MSD_musicnn"]
                finally:
                    mm.DEAD_FILTER = saved
            lever["efficientat onnxruntime"] += timed_layers(clips, sr=sr, parts=parts[1:], mode="float32")[1][
                "efficientat"
            ]
            lever["efficientat torch"] += torch_efficientat_seconds(clips, sr=sr)
        full, half = probs["float32"], probs["bfloat16"]
        rows.append(
            (
                dataset,
                str(path),
                int(np.argmax(full)),
                int(np.argmax(half)),
                float(np.abs(full - half).max()),
                len(clips),
            )
        )
    df = pd.DataFrame(rows, columns=["dataset", "path", "genre_float32", "genre_bfloat16", "max_prob_diff", "clips"])
    minutes = sum(audio_s.values()) / 60
    agreement = {}
    for dataset, d in df.groupby("dataset"):
        agreement[dataset] = {
            "songs": len(d),
            "same_genre": int((d["genre_float32"] == d["genre_bfloat16"]).sum()),
            "max_song_prob_diff": float(d["max_prob_diff"].max()),
            "p99_song_prob_diff": float(d["max_prob_diff"].quantile(0.99)),
            "differing_songs": d.loc[d["genre_float32"] != d["genre_bfloat16"], "path"].tolist(),
            "audio_minutes": audio_s[dataset] / 60,
        }
    result = {
        "rerun": "python benchmarks/precision.py" + (" " + " ".join(argv) if argv else ""),
        "cpu": cpu_name(),
        "cpu_features": cpu_features(),
        "auto_resolves_to": precision.resolve("auto", "cpu"),
        "torch": torch.__version__,
        "clips": int(df["clips"].sum()),
        "audio_minutes": minutes,
        "agreement": agreement,
        "cpu_s_per_audio_minute": {m: {n: s / minutes for n, s in c.items()} for m, c in cpu.items()},
        "lever_minutes": lever_s / 60,
        "lever_cpu_s_per_audio_minute": {k: v / (lever_s / 60) for k, v in lever.items()},
    }
    per = result["cpu_s_per_audio_minute"]
    total = {m: sum(v.values()) for m, v in per.items()}
    lines = [
        "# The default's networks on CPU: cost of each lever, and agreement with float32 (one thread)",
        "",
        f"Rerun: `{result['rerun']}`  ",
        f"CPU: {result['cpu']} ({result['cpu_features']}); `--precision auto` resolves to "
        f"{result['auto_resolves_to']} here; torch {result['torch']}. {result['clips']} clips, {minutes:.1f} min "
        f"of audio at {sr} Hz: "
        + ", ".join(f"{a['songs']} {k} songs ({a['audio_minutes']:.1f} min)" for k, a in agreement.items())
        + ".",
        "",
        "| network (with its log-mel and resampling) | float32 CPU-s / audio min | bfloat16 | ratio |",
        "|---|---|---|---|",
    ]
    for n in per["float32"]:
        lines.append(
            f"| {n} | {per['float32'][n]:.3f} | {per['bfloat16'][n]:.3f} | {per['bfloat16'][n] / per['float32'][n]:.2f} |"
        )
    lines += [
        f"| both | {total['float32']:.3f} | {total['bfloat16']:.3f} | {total['bfloat16'] / total['float32']:.2f} |",
        "",
        "EfficientAT runs in float32 through ONNX Runtime in both columns.",
        "",
        f"Each lever alone, on every {args.lever_every}th song ({result['lever_minutes']:.1f} min of audio), "
        "CPU-s per audio minute:",
        "",
        "| what | CPU-s / audio min |",
        "|---|---|",
        *(f"| {k} | {v:.3f} |" for k, v in result["lever_cpu_s_per_audio_minute"].items()),
        "",
        "The default model, song level, bfloat16 against float32:",
        "",
        "| songs | same genre | largest song probability difference | 99th percentile |",
        "|---|---|---|---|",
        *(
            f"| {k} | {a['same_genre']} of {a['songs']} | {a['max_song_prob_diff']:.3f} | {a['p99_song_prob_diff']:.3f} |"
            for k, a in agreement.items()
        ),
        "",
    ]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "precision.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "precision.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
