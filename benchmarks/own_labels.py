"""A head from your own labels on stored vectors against the same head trained from audio, on GTZAN.

Run from the repository root (../shared/data beside it), about 15 minutes on 2 cores:

    nice -n 10 python benchmarks/own_labels.py [--work /tmp/own-labels] [--name own_labels]

With the real CLI (``python -m mgr_batch.cli``, each command its own process and embedded Ray):

- once: ``tag`` the 444 GTZAN songs with the default model (it stores each song's vector in ``embeddings/``);
- new path: ``train TAGS --labels labels.csv`` (the train list's songs only, ``path,label``), then ``retag TAGS``;
- old path: ``train GTZAN --train-list train_filtered.txt`` from audio with the default's recipe (MSD_musicnn +
  EfficientAT, mean+std song vector, standardized logistic regression), then ``tag GTZAN`` with that checkpoint.

Both heads use the default's recipe (C 0.01, calibrated). Each path relabels the whole catalog (444 songs); the
valid list's songs (other artists than the train list's) are scored: song accuracy and balanced accuracy, with n;
the two paths' labels and probabilities are compared song by song. Also scored: the ``train --labels`` head as
a user gets it without ``--model-param`` (its C chosen by grid search). Every step's wall time and CPU seconds
(the command and its Ray processes), Ray start-up included. The held-back test list is never used.
Writes benchmarks/results/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
from sklearn.metrics import balanced_accuracy_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "gtzan"
RESULTS = ROOT / "benchmarks" / "results"
#: The default model's recipe (README, "The shipped model"): the same head on both paths.
RECIPE = ["--model-param", "grid={C: [0.01]}"]
AUDIO_RECIPE = [
    "--model-type",
    "logreg",
    "--features",
    "musicnn_efficientat",
    "--model-param",
    "pooling=mean_std",
    "--model-param",
    "calibrate=true",
    *RECIPE,
]
#: Largest difference of valid-song accuracy between the paths that the check accepts.
TOLERANCE = 0.01


#: Set in each command's environment; Ray's processes inherit it, which is how its CPU time is found.
MARKER = "MGR_BATCH_OWN_LABELS_STEP"


def cpu_seconds(marker: bytes, seen: dict[int, float]) -> None:
    """Record in ``seen`` the user + system CPU seconds so far of every live process whose environment carries
    ``marker`` (the command and Ray's raylet, GCS and workers), read from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if marker not in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seen[int(pid)] = sum(int(v) for v in fields[11:13]) / tick  # its own (children are seen themselves)


def mgr(log: Path, *args: str) -> tuple[float, float]:
    """``mgr-batch ARGS`` in its own process (output appended to ``log``): its wall seconds, and the CPU seconds
    of it and its Ray processes (sampled every 0.2 s: a process's last 0.2 s before it ends is not counted)."""
    marker = f"{MARKER}={os.getpid()}-{time.time_ns()}"
    env = os.environ | {MARKER: marker.split("=", 1)[1]}
    seen: dict[int, float] = {}
    started = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ mgr-batch {' '.join(args)}\n")
        out.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "mgr_batch.cli", *args], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env
        )
        while proc.poll() is None:
            cpu_seconds(marker.encode(), seen)
            time.sleep(0.2)
    wall, cpu = time.perf_counter() - started, sum(seen.values())
    if proc.returncode != 0:
        raise SystemExit(f"mgr-batch {args[0]} failed (exit {proc.returncode}); see {log}")
    print(f"  mgr-batch {args[0]}: {wall:.1f} s wall, {cpu:.1f} CPU s", flush=True)
    return wall, cpu


def key(path: str) -> str:
    """``genre/file.ogg``: a songs row's path as the manifest names it."""
    return "/".join(str(path).replace("\\", "/").split("/")[-2:])


def songs(out: Path) -> pd.DataFrame:
    """The songs table of tag output ``out``, indexed by manifest path (``genre, p_<genre>...``)."""
    frame = ds.dataset(out / "songs", format="parquet").to_table().to_pandas()
    frame.index = frame["path"].map(key)
    return frame


def score(frame: pd.DataFrame, manifest: pd.DataFrame, split: str) -> dict:
    """Song accuracy and balanced accuracy (mean per-genre recall over the genres present) of ``split``'s songs."""
    rows = manifest[manifest["split"] == split]
    missing = sorted(set(rows["path"]) - set(frame.index))
    if missing:
        raise SystemExit(f"{len(missing)} {split} songs missing from the songs table, e.g. {missing[:3]}")
    y, pred = rows["label"].to_numpy(), frame.loc[rows["path"], "genre"].to_numpy()
    full = rows["kind"].to_numpy() == "full"
    with warnings.catch_warnings():  # the valid list lacks some genres (hiphop, reggae): recall over those present
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        balanced = float(balanced_accuracy_score(y, pred))
    return {
        "n": int(len(rows)),
        "song_accuracy": float((pred == y).mean()),
        "song_balanced_accuracy": balanced,
        "n_full": int(full.sum()),
        "song_accuracy_full": float((pred[full] == y[full]).mean()),
        "n_excerpt": int((~full).sum()),
        "song_accuracy_excerpt": float((pred[~full] == y[~full]).mean()),
    }


def untempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities (n, n_genres) before a head's temperature scaling (``softmax(z / T)`` back to ``softmax(z)``)."""
    q = np.clip(probs, 1e-30, None) ** temperature
    return q / q.sum(axis=1, keepdims=True)


def compare(a: pd.DataFrame, b: pd.DataFrame, paths: list[str], temperatures: tuple[float, float]) -> dict:
    """Song by song, two songs tables of the same genres: same label share, largest probability difference (as
    written, and before each head's temperature: the heads themselves, without their calibration)."""
    cols = sorted(c for c in a.columns if c.startswith("p_"))
    if cols != sorted(c for c in b.columns if c.startswith("p_")):
        raise SystemExit(
            f"the two heads' genres differ: {cols} vs {sorted(c for c in b.columns if c.startswith('p_'))}"
        )
    pa_, pb = a.loc[paths, cols].to_numpy(np.float64), b.loc[paths, cols].to_numpy(np.float64)
    diff = np.abs(pa_ - pb).max(axis=1)
    raw = np.abs(untempered(pa_, temperatures[0]) - untempered(pb, temperatures[1])).max(axis=1)
    worst = int(diff.argmax())
    return {
        "n": len(paths),
        "same_label": float((a.loc[paths, "genre"].to_numpy() == b.loc[paths, "genre"].to_numpy()).mean()),
        "max_probability_difference": float(diff.max()),
        "median_probability_difference": float(np.median(diff)),
        "worst_song": paths[worst],
        "max_probability_difference_untempered": float(raw.max()),
        "same_uncertain": float((a.loc[paths, "uncertain"].to_numpy() == b.loc[paths, "uncertain"].to_numpy()).mean()),
    }


def head_info(ckpt: Path) -> dict:
    """What a checkpoint records of its head: id, C, songs, temperature and threshold."""
    cfg = json.loads((ckpt / "config.json").read_text())
    cal = cfg.get("calibration") or {}
    return {
        "model_id": cfg["model_id"],
        "best_params": cfg["train"].get("best_params"),
        "n_train_songs": cfg["train"]["n_songs"]["train"],
        "temperature": cal.get("temperature"),
        "uncertain_below": cal.get("uncertain_below"),
    }


def source_digests() -> dict[str, str]:
    """A digest of each of the package's source files as it is on disk (others may edit the working tree)."""
    return {
        path.relative_to(ROOT).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        for path in sorted((ROOT / "mgr_batch").rglob("*.py"))
    }


def code_state(digests: dict[str, str]) -> dict:
    """The commit, the files that differ from it, and one digest of the package's source."""
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--short", "mgr_batch"], capture_output=True, text=True).stdout.split()
    return {
        "commit": commit,
        "uncommitted": sorted(x for x in dirty if "/" in x),
        "source_sha256": hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:16],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--work", default="/tmp/own-labels", help="scratch folder, emptied first")
    ap.add_argument("--name", default="own_labels")
    args = ap.parse_args()
    data, work = Path(args.data).resolve(), Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = work / "log.txt"
    manifest = pd.read_csv(data / "manifest.csv")
    if set(manifest["split"]) - {"train", "valid"}:
        raise SystemExit("the manifest holds songs of a split other than train and valid")
    load0, digests0 = os.getloadavg()[0], source_digests()
    code0 = code_state(digests0)
    from mgr_batch.models.precision import resolve

    precision = resolve("auto")  # what the default's --precision auto gives MSD_musicnn on this CPU
    steps: dict[str, tuple[float, float]] = {}

    print("once: tag the catalog with the default model (stored vectors)", flush=True)
    tags = work / "tags"
    steps["tag_default"] = mgr(log, "tag", str(data), "--output", str(tags))

    print("new path: train --labels (train list only), retag", flush=True)
    labels = work / "labels.csv"
    manifest.loc[manifest["split"] == "train", ["path", "label"]].to_csv(labels, index=False)
    head_new = work / "head-labels"
    steps["new_train"] = mgr(log, "train", str(tags), "--labels", str(labels), "--output", str(head_new), *RECIPE)
    retag = work / "retag"
    steps["new_retag"] = mgr(log, "retag", str(tags), "--model", str(head_new), "--output", str(retag))

    print("the same without --model-param (C by grid search)", flush=True)
    head_grid = work / "head-labels-grid"
    steps["new_train_grid"] = mgr(log, "train", str(tags), "--labels", str(labels), "--output", str(head_grid))
    retag_grid = work / "retag-grid"
    steps["new_retag_grid"] = mgr(log, "retag", str(tags), "--model", str(head_grid), "--output", str(retag_grid))

    print("old path: train from audio (train list only), tag", flush=True)
    head_old = work / "head-audio"
    train_list = data / "train_filtered.txt"
    steps["old_train"] = mgr(
        log, "train", str(data), "--output", str(head_old), *AUDIO_RECIPE, "--train-list", str(train_list),
        "--num-workers", "1", "--cpus-per-worker", str(os.cpu_count()),
    )  # fmt: skip
    tag_old = work / "tag-audio"
    steps["old_tag"] = mgr(log, "tag", str(data), "--model", str(head_old), "--output", str(tag_old))

    wall_new, cpu_new = (sum(steps[k][i] for k in ("new_train", "new_retag")) for i in (0, 1))
    wall_old, cpu_old = (sum(steps[k][i] for k in ("old_train", "old_tag")) for i in (0, 1))
    new, grid, old = songs(retag), songs(retag_grid), songs(tag_old)
    valid = manifest.loc[manifest["split"] == "valid", "path"].tolist()
    scores = {
        "new": score(new, manifest, "valid"),
        "old": score(old, manifest, "valid"),
        "new_grid": score(grid, manifest, "valid"),
    }
    diff = scores["new"]["song_accuracy"] - scores["old"]["song_accuracy"]
    result = {
        "command": f"nice -n 10 python benchmarks/own_labels.py --name {args.name}",
        "cpu": cpu_name(),
        "code": code0,
        "changed_during_run": sorted(k for k, v in source_digests().items() if digests0.get(k) != v),
        "musicnn_precision": precision,
        "cpus": os.cpu_count(),
        "load_average": {"start": round(load0, 2), "end": round(os.getloadavg()[0], 2)},
        "songs": {"catalog": len(manifest), "train": int((manifest["split"] == "train").sum()), "valid": len(valid)},
        "wall_seconds": {k: round(w, 1) for k, (w, _) in steps.items()},
        "cpu_seconds": {k: round(c, 1) for k, (_, c) in steps.items()},
        "new_path": {"wall_seconds": round(wall_new, 1), "cpu_seconds": round(cpu_new, 1)},
        "old_path": {"wall_seconds": round(wall_old, 1), "cpu_seconds": round(cpu_old, 1)},
        "heads": {"new": head_info(head_new), "old": head_info(head_old), "new_grid": head_info(head_grid)},
        "valid": scores,
        "accuracy_difference": diff,
        "balanced_accuracy_difference": scores["new"]["song_balanced_accuracy"]
        - scores["old"]["song_balanced_accuracy"],
        "within_tolerance": bool(abs(diff) <= TOLERANCE),
    }
    temps = (result["heads"]["new"]["temperature"], result["heads"]["old"]["temperature"])
    result["agreement_valid"] = compare(new, old, valid, temps)
    result["agreement_catalog"] = compare(new, old, manifest["path"].tolist(), temps)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(report(result))
    print(report(result))
    if result["changed_during_run"]:
        print(f"warning: package files changed during the run: {', '.join(result['changed_during_run'])}")
    if not result["within_tolerance"]:
        raise SystemExit(f"valid accuracy differs by {diff:+.3f} between the paths (tolerance {TOLERANCE})")


def report(r: dict) -> str:
    s, w, c, v = r["songs"], r["wall_seconds"], r["cpu_seconds"], r["valid"]

    def step(name: str, k: str) -> str:
        return f"| {name} | {w[k]:.1f} | {c[k]:.1f} |"

    def total(name: str, k: str) -> str:
        return f"| **{name}** | **{r[k]['wall_seconds']:.1f}** | **{r[k]['cpu_seconds']:.1f}** |"

    def row(name: str, k: str) -> str:
        x = v[k]
        return (
            f"| {name} | {x['n']} | {x['song_accuracy']:.3f} | {x['song_balanced_accuracy']:.3f} | "
            f"{x['song_accuracy_full']:.3f} ({x['n_full']}) / {x['song_accuracy_excerpt']:.3f} ({x['n_excerpt']}) |"
        )

    ag, agc = r["agreement_valid"], r["agreement_catalog"]
    h = r["heads"]
    return "\n".join(
        [
            "# Own labels on stored vectors against the same head trained from audio (GTZAN)",
            "",
            f"Rerun: `{r['command']}` (about 15 minutes on 2 cores).  ",
            f"Machine: {r['cpu']}, {r['cpus']} CPUs, shared with other work (load average {r['load_average']['start']}"
            f" at start, {r['load_average']['end']} at the end; this run at nice 10): the times are this day's, "
            "their ratio is the point.  ",
            f"Code: commit {r['code']['commit']}"
            + (f" with uncommitted edits to {', '.join(r['code']['uncommitted'])}" if r["code"]["uncommitted"] else "")
            + f" (package source digest {r['code']['source_sha256']}); changed on disk during the run: "
            + (", ".join(r["changed_during_run"]) or "nothing")
            + f". MSD_musicnn in {r['musicnn_precision']} (`--precision auto` on this CPU).",
            "",
            f"The {s['catalog']} GTZAN songs with audio are tagged once with the default model. Both heads are the "
            f"default's recipe (MSD_musicnn + EfficientAT, mean+std song vector of 1,168 values, standardized "
            f"logistic regression, C 0.01, calibrated), fitted on the {s['train']} songs of the train list only: "
            "the new path from the stored vectors (`train TAGS --labels labels.csv`, then `retag`), the old path from "
            "audio (`train GTZAN --train-list train_filtered.txt`, then `tag` from audio). Each path relabels all "
            f"{s['catalog']} songs; the {s['valid']} songs of the valid list (artists the train list does not have) "
            "are scored.",
            "",
            "| head | valid songs | accuracy | balanced accuracy | accuracy: full 30 s (n) / 2-3 s excerpts (n) |",
            "|---|---|---|---|---|",
            row("new: `train --labels` on stored vectors, `retag`", "new"),
            row("old: `train` from audio, `tag` from audio", "old"),
            row(
                f"`train --labels` without `--model-param` (C by grid search: {h['new_grid']['best_params']}), `retag`",
                "new_grid",
            ),
            "",
            f"Accuracy difference (new - old): {r['accuracy_difference']:+.3f} (balanced "
            f"{r['balanced_accuracy_difference']:+.3f}); within {TOLERANCE}: **{'yes' if r['within_tolerance'] else 'no'}**.",
            f"Same label on {100 * ag['same_label']:.1f}% of the {ag['n']} valid songs ({100 * agc['same_label']:.1f}% of "
            f"all {agc['n']}); largest probability difference {ag['max_probability_difference']:.4f} on the valid "
            f"songs, {agc['max_probability_difference']:.4f} on all (median {agc['median_probability_difference']:.5f}; "
            f"`uncertain` the same on {100 * agc['same_uncertain']:.1f}%).",
            f"Before temperature scaling the two heads' probabilities differ by at most "
            f"{agc['max_probability_difference_untempered']:.5f}. The calibration differs because each path fits "
            f"it on out-of-fold probabilities of its own folds (temperature {h['new']['temperature']:.3f} new, "
            f"{h['old']['temperature']:.3f} old; `uncertain` below certainty {h['new']['uncertain_below']:.3f} new, "
            f"{h['old']['uncertain_below']:.3f} old)"
            + (
                "; and `train` from audio fits on float32 embeddings whatever the CPU while `tag`, and so the stored "
                "vectors, ran MSD_musicnn in bfloat16 here: the new head is fitted on the vectors it is applied to, "
                "the old one is not."
                if r["musicnn_precision"] == "bfloat16"
                else "."
            ),
            "",
            "| step | wall s | CPU s (the command and its Ray processes) |",
            "|---|---|---|",
            step("once: `tag` the catalog with the default model (writes the stored vectors)", "tag_default"),
            step("new: `train TAGS --labels labels.csv`", "new_train"),
            step("new: `retag TAGS --model HEAD`", "new_retag"),
            total("new path", "new_path"),
            step("old: `train GTZAN --train-list ...` from audio", "old_train"),
            step("old: `tag GTZAN --model HEAD` from audio", "old_tag"),
            total("old path", "old_path"),
            step("`train --labels` without `--model-param`", "new_train_grid"),
            step("`retag` with that head", "new_retag_grid"),
            "",
            "Each command is its own process with its own Ray (start-up and shut-down included in both columns). "
            "CPU seconds are sampled every 0.2 s from /proc (each process's last 0.2 s is missed), and other "
            "work on the machine disturbs them less than the wall times.",
            "",
        ]
    )


if __name__ == "__main__":
    main()
