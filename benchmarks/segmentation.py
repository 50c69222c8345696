"""Benchmark of the representative-segment selection: cost per song, and boundary precision/recall.

Cost: songs of 3, 5 and 10 minutes made by concatenating (looping) the real tracks of ``data/long``, decoded
to 22050 Hz mono as the pipeline does, timed through ``segmentation.representative`` (median of repeats), with
the direct time-domain SEM (lfilter per pair) timed on 500 pairs and extrapolated to all pairs for comparison.

Boundaries: synthetic long songs, each 4 to 6 whole 30 s GTZAN excerpts (``kind == full``) of different
genres, seeded; a predicted boundary is a hit when it lies within ``TOLERANCE_S`` of a true junction (one-to-one
matching, as mir_eval's ``detection``). Reported for the default config and for variants.

    python benchmarks/segmentation.py [--data ../shared/data] [--songs 20] [--seed 1] [--repeats 3]

Writes ``benchmarks/results/segmentation.json`` and ``benchmarks/results/segmentation.md``.
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
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.signal import lfilter

from mgr_batch.clips import segmentation
from mgr_batch.config import to_dict
from mgr_batch.io import audio

SR = 22050  # the pipeline's decoding rate (AudioConfig.sr)
LENGTHS_MIN = (3, 5, 10)
TOLERANCE_S = 3.0
HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
#: Config variants scored on the boundary task (the default first).
VARIANTS = {
    "default": {},
    "study (scale=1, no merging)": dict(scale=1.0, min_segment_seconds=0.0),
    "default, no merging": dict(min_segment_seconds=0.0),
    "default, scale=1": dict(scale=1.0),
    "default, 1 s windows": dict(window_seconds=1.0),
    "default, hop 1 s (overlap)": dict(hop_seconds=1.0),
    "default, longest_run": dict(representative="longest_run"),
    "default, k = true number of parts": dict(n_clusters=-1),  # -1: filled in per song
}


def long_song(data: Path, minutes: float, rng: np.random.Generator) -> np.ndarray:
    """``minutes`` of real music: the long tracks in a seeded order, looped until long enough."""
    manifest = pd.read_csv(data / "long" / "manifest.csv")
    paths = [data / "long" / p for p in rng.permutation(manifest["path"].to_numpy())]
    need, parts, have = int(minutes * 60 * SR), [], 0
    i = 0
    while have < need:
        y = audio.load(str(paths[i % len(paths)]), sr=SR, max_duration=minutes * 60).y
        parts.append(y)
        have += len(y)
        i += 1
    return np.concatenate(parts)[:need]


def direct_pair_seconds(y: np.ndarray, cfg: segmentation.SegmentationConfig, n_pairs: int, seed: int) -> float:
    """Seconds per pair of the time-domain SEM (lfilter + autocorrelation per pair), from ``n_pairs`` pairs."""
    ya, asr = segmentation.analysis_signal(y, SR, cfg)
    frames, _ = segmentation._frames(ya, asr, cfg)
    a, sigma2 = segmentation.ar_fit(frames, cfg.order)
    rng = np.random.default_rng(seed)
    pairs = rng.integers(0, len(frames), size=(n_pairs, 2))
    t0 = time.perf_counter()
    for i, j in pairs:
        e = lfilter(a[i], [1.0], frames[j])
        r = np.array([e[: len(e) - k] @ e[k:] for k in range(cfg.max_lag + 1)]) / len(e)
        _ = (sigma2[i] / r[0] - 1) ** 2 + 2 * np.sum((r[1:] / r[0]) ** 2)
    return (time.perf_counter() - t0) / n_pairs


def measure_cost(data: Path, repeats: int, seed: int) -> list[dict]:
    cfg = segmentation.SegmentationConfig()
    rows, per_pair = [], None
    for minutes in LENGTHS_MIN:
        y = long_song(data, minutes, np.random.default_rng(seed + minutes))
        totals, sems = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            segmentation.sem_matrix(y, sr=SR, cfg=cfg)
            t1 = time.perf_counter()
            result = segmentation.representative(y, sr=SR, cfg=cfg)
            t2 = time.perf_counter()
            sems.append(t1 - t0)
            totals.append(t2 - t1)
        n = len(result.starts_s)
        if per_pair is None:  # one estimate for all lengths: the cost of a pair does not depend on the song
            per_pair = direct_pair_seconds(y, cfg, 500, seed)
        total = float(np.median(totals))
        rows.append(
            dict(
                minutes=minutes,
                n_windows=n,
                total_s=total,
                sem_s=float(np.median(sems)),
                cluster_s=max(0.0, total - float(np.median(sems))),
                realtime_factor=minutes * 60 / total,
                direct_sem_estimate_s=per_pair * n * n,
                n_clusters=result.n_clusters,
                n_segments=len(result.segments),
                representative_s=float(sum(hi - lo for lo, hi in result.spans)),
            )
        )
        print(
            f"cost {minutes:>2} min: {n} windows, {total:.2f} s ({rows[-1]['realtime_factor']:.0f}x real time)",
            flush=True,
        )
    return rows


def concatenated_songs(data: Path, n_songs: int, seed: int) -> list[dict]:
    """``n_songs`` songs of 4 to 6 whole GTZAN excerpts of different genres each, with their junctions (s)."""
    manifest = pd.read_csv(data / "gtzan" / "manifest.csv")
    full = manifest[manifest["kind"] == "full"]
    genres = sorted(full["genre"].unique())
    rng = np.random.default_rng(seed)
    songs, cache = [], {}
    for index in range(n_songs):
        chosen = rng.choice(genres, size=int(rng.integers(4, 7)), replace=False)
        paths = [str(rng.choice(full.loc[full["genre"] == g, "path"].to_numpy())) for g in chosen]
        parts = []
        for p in paths:
            if p not in cache:
                cache[p] = audio.load(str(data / "gtzan" / p), sr=SR).y
            parts.append(cache[p])
        junctions = np.cumsum([len(p) for p in parts])[:-1] / SR
        songs.append(
            dict(
                index=index, paths=paths, genres=[str(g) for g in chosen], y=np.concatenate(parts), junctions=junctions
            )
        )
    return songs


def hits(predicted: np.ndarray, truth: np.ndarray, tolerance: float) -> int:
    """Largest one-to-one matching of predicted to true boundaries within ``tolerance`` seconds."""
    if len(predicted) == 0 or len(truth) == 0:
        return 0
    close = np.abs(np.subtract.outer(predicted, truth)) <= tolerance
    rows, cols = linear_sum_assignment(close, maximize=True)
    return int(close[rows, cols].sum())


def purity(spans: list[tuple[float, float]], junctions: np.ndarray, duration: float) -> float:
    """Share of the representative spans' time that lies in the one excerpt they overlap most."""
    edges = np.concatenate([[0.0], junctions, [duration]])
    overlap = np.zeros(len(edges) - 1)
    for lo, hi in spans:
        overlap += np.clip(np.minimum(hi, edges[1:]) - np.maximum(lo, edges[:-1]), 0.0, None)
    return float(overlap.max() / overlap.sum()) if overlap.sum() > 0 else 0.0


def score_boundaries(songs: list[dict]) -> tuple[dict, list[dict]]:
    summary, per_song = {}, []
    for name, overrides in VARIANTS.items():
        n_hit = n_pred = n_true = 0
        ks, purities, seconds = [], [], []
        for song in songs:
            kw = dict(overrides)
            if kw.get("n_clusters") == -1:
                kw["n_clusters"] = len(song["junctions"]) + 1
            cfg = segmentation.SegmentationConfig(**kw)
            t0 = time.perf_counter()
            result = segmentation.representative(song["y"], sr=SR, cfg=cfg)
            seconds.append(time.perf_counter() - t0)
            predicted = np.array([lo for lo, _, _ in result.segments[1:]])
            h = hits(predicted, song["junctions"], TOLERANCE_S)
            n_hit, n_pred, n_true = n_hit + h, n_pred + len(predicted), n_true + len(song["junctions"])
            ks.append(result.n_clusters)
            purities.append(purity(result.spans, song["junctions"], result.duration))
            if name == "default":
                per_song.append(
                    dict(
                        index=song["index"],
                        genres=song["genres"],
                        paths=song["paths"],
                        junctions_s=[round(float(j), 2) for j in song["junctions"]],
                        predicted_s=[round(float(p), 2) for p in predicted],
                        hits=h,
                        n_clusters=result.n_clusters,
                        representative_spans_s=result.spans,
                        representative_purity=purities[-1],
                    )
                )
        precision = n_hit / n_pred if n_pred else 0.0
        recall = n_hit / n_true if n_true else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        summary[name] = dict(
            overrides=overrides,
            precision=precision,
            recall=recall,
            f1=f1,
            n_hits=n_hit,
            n_predicted=n_pred,
            n_true=n_true,
            mean_k=float(np.mean(ks)),
            mean_true_parts=float(np.mean([len(s["junctions"]) + 1 for s in songs])),
            mean_representative_purity=float(np.mean(purities)),
            mean_song_s=float(np.mean(seconds)),
        )
        print(f"boundaries {name}: P={precision:.2f} R={recall:.2f} F={f1:.2f}", flush=True)
    return summary, per_song


def markdown(result: dict) -> str:
    lines = ["# Representative-segment selection (AR/SEM + spectral clustering)", ""]
    lines += [f"Rerun: `{result['command']}`  ", f"Machine: {result['machine']}", ""]
    lines += ["## Cost per song (default config, input 22050 Hz mono)", ""]
    lines += [
        "| song | windows | total (s) | SEM matrix (s) | clustering (s) | x real time | direct SEM, estimated (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["cost"]:
        lines.append(
            f"| {r['minutes']} min | {r['n_windows']} | {r['total_s']:.2f} | {r['sem_s']:.2f} | {r['cluster_s']:.2f} "
            f"| {r['realtime_factor']:.0f} | {r['direct_sem_estimate_s']:.0f} |"
        )
    b = result["boundaries"]
    first = next(iter(b.values()))
    lines += [
        "",
        f"## Boundaries within ±{TOLERANCE_S:g} s ({result['n_songs']} songs of 4 to 6 GTZAN excerpts, "
        f"{first['n_true']} true boundaries, seed {result['seed']})",
        "",
    ]
    lines += [
        "| config | precision | recall | F1 | predicted | mean k (true parts) | representative purity | s/song |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in b.items():
        lines.append(
            f"| {name} | {s['precision']:.2f} | {s['recall']:.2f} | {s['f1']:.2f} | {s['n_predicted']} "
            f"| {s['mean_k']:.1f} ({s['mean_true_parts']:.1f}) | {s['mean_representative_purity']:.2f} | {s['mean_song_s']:.2f} |"
        )
    lines += [
        "",
        "Representative purity: share of the representative spans lying in the one excerpt they overlap most.",
        "The defaults were tuned on 12 songs drawn with seed 0; these songs are drawn with another seed.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--songs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    command = "python benchmarks/segmentation.py " + " ".join(
        f"--{k} {v}" for k, v in (("songs", args.songs), ("seed", args.seed), ("repeats", args.repeats))
    )
    started = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cost = measure_cost(args.data, args.repeats, args.seed)
    songs = concatenated_songs(args.data, args.songs, args.seed)
    boundaries, per_song = score_boundaries(songs)
    result = dict(
        command=command,
        seed=args.seed,
        n_songs=len(songs),
        tolerance_s=TOLERANCE_S,
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} at start, Python {platform.python_version()}",
        config=to_dict(segmentation.SegmentationConfig()),
        cost=cost,
        boundaries=boundaries,
        songs=per_song,
        runtime_s=time.perf_counter() - started,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "segmentation.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    (args.out / "segmentation.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {args.out / 'segmentation.json'} and {args.out / 'segmentation.md'} in {result['runtime_s']:.0f} s")
    print(f"rerun: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
