"""CPU cost of EfficientAT mn04_as per minute of audio on one thread: its front end and its network, beside
MSD_musicnn's network, for 10 s and 3 s windows, in one run.

Run from the repository root (results are noisy on a shared machine: compare the ratios of one run):

    python benchmarks/efficientat_cost.py --minutes 2 --out benchmarks/results/efficientat_cost.md

The audio is synthetic (tones and noise at 32 kHz; the cost does not depend on the content). Per window
length: process CPU seconds of ``efficientat_logmel`` and of the network (batches of 8, as the feature kind
runs it) in three layouts: as built, channels-last, and channels-last with BatchNorms folded into the
convolutions (what ``Predictor`` does on CPU); the best of ``--repeats`` runs of each.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from mgr_batch.features import musicnn as fm
from mgr_batch.models.common import fold_batch_norm
from mgr_batch.models.efficientat import SR, efficientat_logmel, pretrained_network

BATCH = 8


def audio(minutes: float, *, sr: int, seed: int = 0) -> np.ndarray:
    t = np.arange(int(minutes * 60 * sr)) / sr
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 440 * t * (1 + 0.1 * np.sin(t))) + 0.05 * rng.standard_normal(len(t))).astype(
        np.float32
    )


def windows(y: np.ndarray, *, sr: int, seconds: float) -> np.ndarray:
    n = int(round(seconds * sr))
    return y[: len(y) // n * n].reshape(-1, n)


def cpu_seconds(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def run_batches(net, x: np.ndarray, *, unsqueeze: bool) -> None:
    with torch.inference_mode():
        for lo in range(0, len(x), BATCH):
            xb = torch.from_numpy(x[lo : lo + BATCH])
            net(xb[:, None] if unsqueeze else xb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="minutes of audio per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the table here (markdown)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    y32, y16 = audio(args.minutes, sr=SR), audio(args.minutes, sr=16000)
    plain = pretrained_network()
    last = pretrained_network().to(memory_format=torch.channels_last)
    folded = fold_batch_norm(pretrained_network()).to(memory_format=torch.channels_last)
    msd = fm.pretrained_network()
    rows = []
    for seconds in (10.0, 3.0):
        clips = windows(y32, sr=SR, seconds=seconds)
        minutes = clips.size / SR / 60
        x = efficientat_logmel(clips, sr=SR)
        per_min = {"front end": cpu_seconds(lambda c=clips: efficientat_logmel(c, sr=SR), args.repeats) / minutes}
        for name, net in (
            ("network", plain),
            ("network, channels-last", last),
            ("network, channels-last, BN folded", folded),
        ):
            run_batches(net, x[:BATCH], unsqueeze=True)  # warm-up
            per_min[name] = cpu_seconds(lambda n=net, x=x: run_batches(n, x, unsqueeze=True), args.repeats) / minutes
        clips16 = windows(y16, sr=16000, seconds=seconds)
        x16 = fm.musicnn_input(clips16, sr=16000)
        run_batches(msd.embed, x16[:BATCH], unsqueeze=False)
        per_min["MSD_musicnn network (same windows, 16 kHz)"] = cpu_seconds(
            lambda x16=x16: run_batches(msd.embed, x16, unsqueeze=False), args.repeats
        ) / (clips16.size / 16000 / 60)
        rows.append((seconds, per_min))
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if line.startswith("Model name")
        ),
        platform.processor(),
    )
    lines = [
        f"EfficientAT mn04_as, CPU seconds per minute of audio, 1 torch thread, batches of {BATCH}, best of "
        f"{args.repeats} runs over {args.minutes:g} min; CPU: {cpu} ({os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.0f} at the end); torch {torch.__version__}",
        "",
        "| step | " + " | ".join(f"{s:g} s windows" for s, _ in rows) + " |",
        "|---|" + "---|" * len(rows),
    ]
    for key in rows[0][1]:
        lines.append(f"| {key} | " + " | ".join(f"{r[key]:.3f}" for _, r in rows) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
