"""Classic 58-value GTZAN features: agreement with the published table, and fast-vs-reference speed.

Run from the repository root (../shared/data beside it):

    python benchmarks/features_classic.py                  # 6 songs per genre (60), seed 0, ~3-5 min
    python benchmarks/features_classic.py --per-genre 0    # every `kind == full` song (261), ~15-25 min

For each song (the whole decoded OGG file, about 30 s) both ``gtzan_features_reference`` (plain librosa)
and ``gtzan_features`` (the fast path) are computed and compared per feature with the published
``features_30_sec.train_valid.csv`` row: relative error |ours - published| / (|published| + eps) (median
and 95th percentile over songs, eps = 1e-3 x the median |published| of that feature, so features that sit
near zero are not divided by zero), the same error in units of the feature's spread over the published
songs, and Pearson correlation across songs. Fast vs reference is reported the same way, which separates what the OGG re-encoding and librosa versions change from what the fast
path changes. Speed is the ratio of summed per-song times of the two functions in the same run on the
same songs, single-threaded (Ray parallelizes across songs): CPU time of the calling thread (robust to
other load on a shared machine) and wall time.

Writes benchmarks/results/features_classic.json and features_classic.md.
"""

from __future__ import annotations

import os

# One thread per song, as in a Ray worker: set before numpy/torch load their thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from mgr_batch.features.classic import FEATURE_NAMES, gtzan_features, gtzan_features_reference  # noqa: E402
from mgr_batch.io import audio  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tolerances the tests hold the features to
from classic_tolerances import FRAGILE_FEATURES, PUBLISHED_TOLERANCE, SIGNED_FEATURES  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "gtzan"
RESULTS = ROOT / "benchmarks" / "results"
#: Tempo estimates within this fraction of the published one (or of 2x, 1/2x, 3x, 1/3x it) count as equal.
TEMPO_TOLERANCE = 0.04


def select_songs(data: Path, *, per_genre: int, seed: int) -> pd.DataFrame:
    """`kind == full` songs that have a published row: ``per_genre`` per genre (seeded), or all for 0."""
    manifest = pd.read_csv(data / "manifest.csv")
    published = pd.read_csv(data / "features_30_sec.train_valid.csv")
    published["song_id"] = published["filename"].str.replace(r"\.wav$", "", regex=True)
    songs = manifest[manifest["kind"] == "full"].merge(published, on="song_id", suffixes=("", "_published"))
    if per_genre > 0:
        rng = np.random.default_rng(seed)
        songs = songs.groupby("genre", group_keys=False).apply(
            lambda g: g.iloc[np.sort(rng.choice(len(g), size=min(per_genre, len(g)), replace=False))]
        )
    return songs.sort_values("song_id").reset_index(drop=True)


def timed(fn, y: np.ndarray, sr: int) -> tuple[np.ndarray, float, float]:
    """(result, thread CPU seconds, wall seconds) of one call."""
    cpu, wall = time.thread_time(), time.perf_counter()
    out = fn(y, sr=sr)
    return out, time.thread_time() - cpu, time.perf_counter() - wall


def agreement(ours: np.ndarray, truth: np.ndarray, *, table: np.ndarray) -> list[dict]:
    """Per-feature error quantiles and Pearson r of ``ours`` vs ``truth`` (songs, 58) each.

    ``table`` (rows, 58) is the whole published table, which sets each feature's scale: eps for the
    relative error (1e-3 x median |value|) and the spread over songs (std) for the standardized error.
    """
    eps = 1e-3 * np.median(np.abs(table), axis=0)
    spread = np.std(table, axis=0)
    rel = np.abs(ours - truth) / (np.abs(truth) + eps)
    std_err = np.abs(ours - truth) / np.where(spread > 0, spread, 1.0)
    rows = []
    for j, name in enumerate(FEATURE_NAMES):
        a, b = ours[:, j], truth[:, j]
        corr = float(np.corrcoef(a, b)[0, 1]) if np.std(a) > 0 and np.std(b) > 0 else float("nan")
        rows.append(
            {
                "feature": name,
                "median_rel": float(np.median(rel[:, j])),
                "p95_rel": float(np.percentile(rel[:, j], 95)),
                "max_rel": float(np.max(rel[:, j])),
                "median_std_err": float(np.median(std_err[:, j])),
                "p95_std_err": float(np.percentile(std_err[:, j], 95)),
                "corr": corr,
            }
        )
    return rows


def tempo_match(ours: np.ndarray, truth: np.ndarray, song_ids: list[str]) -> dict:
    """Fractions of songs whose tempo equals the published one, also up to octave (2x, 3x) errors; the misses."""
    ratio = ours / truth
    exact = np.abs(ratio - 1) <= TEMPO_TOLERANCE
    octave = np.any([np.abs(ratio / m - 1) <= TEMPO_TOLERANCE for m in (1, 2, 0.5, 3, 1 / 3)], axis=0)
    return {
        "exact": float(exact.mean()),
        "up_to_octave": float(octave.mean()),
        "misses": [
            {"song_id": s, "ours": float(o), "published": float(t)}
            for s, o, t, e in zip(song_ids, ours, truth, exact, strict=True)
            if not e
        ],
    }


def passes(row: dict) -> bool:
    """Whether one feature's agreement row meets its :data:`PUBLISHED_TOLERANCE`."""
    tol = PUBLISHED_TOLERANCE[row["feature"]]
    rel_ok = tol.median_rel is None or row["median_rel"] < tol.median_rel
    return rel_ok and row["corr"] > tol.corr and row["median_std_err"] < tol.median_std


def markdown(result: dict) -> str:
    ref, fast, fvr = (
        result["agreement"][k] for k in ("reference_vs_published", "fast_vs_published", "fast_vs_reference")
    )
    speed = result["speed"]
    lines = [
        "# Classic GTZAN features: agreement and speed",
        "",
        f"{result['n_songs']} songs ({result['selection']}), whole decoded OGG files (~30 s). Rerun: `{result['command']}`",
        "",
        f"Speed, fast vs reference, single thread: **{speed['ratio_cpu']:.1f}x** by CPU time "
        f"({speed['reference_cpu_s_per_song']:.2f} s vs {speed['fast_cpu_s_per_song']:.2f} s per song), "
        f"{speed['ratio_wall']:.1f}x by wall time (shared machine: wall time includes other load).",
        "",
        "Relative error = |ours - published| / (|published| + 1e-3 x median |published|); standardized error = "
        "|ours - published| / (std of the feature over the 640 published songs). Tolerance per feature: median "
        "relative error < 5%, Pearson r > 0.95 and median standardized error < 0.15, except signed features (no relative bound) "
        "and the fragile ones (bounds in the tolerance column, reasons below).",
        "",
        f"Tempo equal to published (within {TEMPO_TOLERANCE:.0%}): reference {result['tempo']['reference']['exact']:.0%}, "
        f"fast {result['tempo']['fast']['exact']:.0%}; up to octave errors: reference "
        f"{result['tempo']['reference']['up_to_octave']:.0%}, fast {result['tempo']['fast']['up_to_octave']:.0%}. "
        "Misses (fast): "
        + (
            ", ".join(
                f"{m['song_id']} ({m['ours']:.1f} vs {m['published']:.1f} BPM)"
                for m in result["tempo"]["fast"]["misses"]
            )
            or "none"
        )
        + ".",
        "",
        "| feature | ref: median rel | ref: p95 rel | ref: median std | ref: r | fast: median rel | fast: p95 rel "
        "| fast: median std | fast: r | fast vs ref: max rel | tolerance (rel, r) | passes (ref / fast) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r, f, d in zip(ref, fast, fvr, strict=True):
        tol = PUBLISHED_TOLERANCE[r["feature"]]
        bound = f"{'-' if tol.median_rel is None else f'{tol.median_rel:.0%}'}, {tol.corr}"
        lines.append(
            f"| {r['feature']} | {r['median_rel']:.2e} | {r['p95_rel']:.2e} | {r['median_std_err']:.3f} | {r['corr']:.4f} "
            f"| {f['median_rel']:.2e} | {f['p95_rel']:.2e} | {f['median_std_err']:.3f} | {f['corr']:.4f} | {d['max_rel']:.1e} "
            f"| {bound}{' (fragile)' if r['feature'] in FRAGILE_FEATURES else ''} | {'yes' if passes(r) else '**no**'} / {'yes' if passes(f) else '**no**'} |"
        )
    lines += ["", "Features with their own bounds:", ""]
    reasons: dict[str, list[str]] = {}
    for name in SIGNED_FEATURES + FRAGILE_FEATURES:
        reasons.setdefault(PUBLISHED_TOLERANCE[name].reason, []).append(name)
    lines += [f"- {', '.join(names)}: {reason}." for reason, names in reasons.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--per-genre", type=int, default=6, help="songs per genre (seeded); 0 = every full song")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    command = (
        "python benchmarks/features_classic.py"
        + (f" --per-genre {args.per_genre}" if args.per_genre != 6 else "")
        + (f" --seed {args.seed}" if args.seed else "")
    )
    print(f"rerun with: {command}", flush=True)

    songs = select_songs(args.data, per_genre=args.per_genre, seed=args.seed)
    published = songs[list(FEATURE_NAMES)].to_numpy(np.float64)
    table = pd.read_csv(args.data / "features_30_sec.train_valid.csv")[list(FEATURE_NAMES)].to_numpy(np.float64)
    # Untimed warm-up: numba compilation (or cache load), filter banks, FFT plans.
    warm = audio.load(str(args.data / songs["path"][0])).y[: 5 * 22050]
    gtzan_features(warm)
    gtzan_features_reference(warm)

    ref_rows, fast_rows, times = [], [], []
    start = time.perf_counter()
    for i, song in songs.iterrows():
        decoded = audio.load(str(args.data / song["path"]), sr=22050)
        ref, ref_cpu, ref_wall = timed(gtzan_features_reference, decoded.y, decoded.sr)
        fast, fast_cpu, fast_wall = timed(gtzan_features, decoded.y, decoded.sr)
        ref_rows.append(ref)
        fast_rows.append(fast)
        times.append((ref_cpu, ref_wall, fast_cpu, fast_wall))
        print(
            f"[{i + 1}/{len(songs)}] {song['song_id']}: reference {ref_cpu:.2f} s, fast {fast_cpu:.2f} s (CPU); "
            f"elapsed {time.perf_counter() - start:.0f} s",
            flush=True,
        )
    ref_x, fast_x, t = np.array(ref_rows), np.array(fast_rows), np.array(times)
    tempo_col = FEATURE_NAMES.index("tempo")

    result = {
        "command": command,
        "selection": f"kind == full songs with a published row, {args.per_genre} per genre, seed {args.seed}"
        if args.per_genre > 0
        else "every kind == full song with a published row",
        "n_songs": len(songs),
        "songs": songs["song_id"].tolist(),
        "environment": {
            "python": platform.python_version(),
            "librosa": librosa.__version__,
            "numpy": np.__version__,
            "torch": torch.__version__,
            "threads": 1,
        },
        "tolerance": {name: dataclasses.asdict(tol) for name, tol in PUBLISHED_TOLERANCE.items()},
        "speed": {
            "reference_cpu_s_per_song": float(t[:, 0].mean()),
            "fast_cpu_s_per_song": float(t[:, 2].mean()),
            "reference_wall_s_per_song": float(t[:, 1].mean()),
            "fast_wall_s_per_song": float(t[:, 3].mean()),
            "ratio_cpu": float(t[:, 0].sum() / t[:, 2].sum()),
            "ratio_wall": float(t[:, 1].sum() / t[:, 3].sum()),
            "ratio_cpu_per_song_min": float((t[:, 0] / t[:, 2]).min()),
            "ratio_cpu_per_song_median": float(np.median(t[:, 0] / t[:, 2])),
        },
        "agreement": {
            "reference_vs_published": agreement(ref_x, published, table=table),
            "fast_vs_published": agreement(fast_x, published, table=table),
            "fast_vs_reference": agreement(fast_x, ref_x, table=table),
        },
        "tempo": {
            "reference": tempo_match(ref_x[:, tempo_col], published[:, tempo_col], songs["song_id"].tolist()),
            "fast": tempo_match(fast_x[:, tempo_col], published[:, tempo_col], songs["song_id"].tolist()),
        },
        "failing_features": [r["feature"] for r in agreement(fast_x, published, table=table) if not passes(r)],
        "values": {
            "song_id": songs["song_id"].tolist(),
            "published": published.tolist(),
            "reference": ref_x.tolist(),
            "fast": fast_x.tolist(),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "features_classic.json").write_text(json.dumps(result, indent=1))
    (args.out / "features_classic.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {args.out / 'features_classic.json'} and .md; rerun with: {command}")
    return 0 if not result["failing_features"] else 1


if __name__ == "__main__":
    sys.exit(main())
