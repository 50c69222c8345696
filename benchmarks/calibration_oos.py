"""The shipped recipe's accuracy and calibration measured on songs they were not fitted on: nested CV.

Run from the repository root (../shared/data beside it):

    nice -n 10 python benchmarks/calibration_oos.py [--cache /tmp/mgr_calibration_oos]

Training fits the temperature and the ``uncertain`` threshold on out-of-fold song probabilities of the
training songs, and records the ECE, flagged share and accuracy of the rest on those same rows: in-sample for
the temperature and threshold, so the 95% holds by construction. Here both are chosen inside each outer fold,
exactly as training chooses them (:func:`mgr_batch.evaluation.calibration.fit_calibration`: 5 inner folds of whole
songs, stratified by genre, seed 0), and scored on the outer fold's songs, which neither the head, the
temperature nor the threshold saw. Two heads:

- ``fixed``: the shipped recipe as shipped (MSD_musicnn penultimate + EfficientAT embedding, mean+std of the
  clip embeddings per song, logreg C 0.01): what calibration alone gives out of sample.
- ``nested``: the recipe itself also chosen inside each outer fold (best inner 5-fold mean of accuracy and
  balanced accuracy) from :data:`GRID`, a small grid standing for the ~100-recipe selection of
  ``benchmarks/recipes.py`` (its two best feature sets x song-level pooling x C 0.01 / 0.1): the headline
  accuracy without the selection's optimism.

Outer protocols over the 444 labelled GTZAN songs (train + valid of the artist-filtered split):
``cv5``, 5 folds by song stratified by genre, seed 0 (the folds of ``docs/accuracy.md`` and of the shipped
model's calibration; an artist's songs can sit in two folds), and ``artist``, fit on the train list (316),
score the valid list (128): no artist on both sides (the reverse direction cannot be calibrated: valid
has at most one song of three genres). Figures are pooled over each protocol's scored songs, and by song
``kind`` (``full`` 30 s songs, ``excerpt`` 2-3 s cuts). Embeddings come from ``benchmarks/recipes.py``'s
extraction (the package's own decode and ``stacked_embedding``, 3 s clips at 32 kHz), cached under
``--cache``. Writes ``benchmarks/results/calibration_oos.{json,md}``. Never reads the held-back test songs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import machine  # noqa: E402
import recipes  # noqa: E402

from mgr_batch.evaluation import calibration as cal  # noqa: E402
from mgr_batch.models.classic import ClassicModel, pool_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CHECKPOINT = ROOT / "mgr_batch" / "assets" / "default_model" / "config.json"
NETWORKS = ("MSD_musicnn", "efficientat")
#: The shipped recipe (mgr_batch/assets/default_model/config.json): features, pooling, C.
SHIPPED = ("MSD_musicnn:penultimate+efficientat:embedding", "mean_std", 0.01)
#: The selection inside each outer fold, standing for recipes.py's: its two best feature sets x song-level
#: pooling x C (the four best recipes of docs/accuracy.md are among these 8; C 0.001 lost in every row there).
GRID = tuple(
    (features, pooling, c)
    for features in (
        "MSD_musicnn:penultimate+efficientat:embedding",
        "MSD_musicnn:penultimate+MSD_musicnn:taggram+efficientat:embedding",
    )
    for pooling in ("mean", "mean_std")
    for c in (0.01, 0.1)
)
#: Folds inside each outer training set, as training's calibration uses.
INNER_FOLDS = cal.CALIBRATION_FOLDS
SEED = 0


def load_embeddings(cache: Path, songs: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """Per-clip embeddings of each network (recipes.py's layout), extracted once into ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for network in NETWORKS:
        path = cache / f"{network}.npz"
        if not path.is_file():
            np.savez(path, **recipes.extract(network, songs))
        out[network] = dict(np.load(path))
    if not np.array_equal(out[NETWORKS[0]]["song"], out[NETWORKS[1]]["song"]):
        raise RuntimeError(f"the networks' caches hold different clips: delete {cache} and rerun")
    return out


def song_rows(embs: dict[str, dict[str, np.ndarray]], song_ids: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
    """One pooled row per song of ``song_ids`` (n_songs, d) for every (features, pooling) of the grid,
    pooled by the package's own :func:`pool_rows`."""
    clip_song = embs[NETWORKS[0]]["song"]
    out = {}
    for features, pooling in {(f, p) for f, p, _ in GRID + (SHIPPED,)}:
        x = recipes.features_of(features, embs)[:, :, 0].astype(np.float64)
        rows, first = pool_rows(x, clip_song, pooling)
        order = {s: i for i, s in enumerate(clip_song[first])}
        out[features, pooling] = rows[[order[s] for s in song_ids]]
    return out


def fit_head(rows: np.ndarray, y: np.ndarray, c: float) -> ClassicModel:
    """The package's logreg head (standardized, multinomial) fitted on pooled song rows (n, d)."""
    key = (rows.shape, hashlib.sha1(rows.tobytes()).hexdigest(), c)  # the same fit recurs across protocols
    if key not in _FITTED:
        _FITTED[key] = _fit_head(rows, y, c)
    return _FITTED[key]


_FITTED: dict = {}


def _fit_head(rows: np.ndarray, y: np.ndarray, c: float) -> ClassicModel:
    model = ClassicModel(
        name="logreg",
        n_classes=10,
        input_shape=(rows.shape[1], 1),
        grid={},
        pooling="mean",
        C=c,
        solver="lbfgs",
        max_iter=5000,
    )
    # pooled rows are songs of one row each: "mean" pooling leaves them as they are
    return model.fit(rows[:, :, None], y, groups=np.arange(len(y)))


def out_of_fold(rows: np.ndarray, y: np.ndarray, c: float) -> np.ndarray:
    """Song probabilities (n, 10) of every row from a head fitted without it: training's calibration folds."""
    from sklearn.model_selection import StratifiedKFold

    probs = np.zeros((len(y), 10))
    for fit, test in StratifiedKFold(INNER_FOLDS, shuffle=True, random_state=SEED).split(rows, y):
        probs[test] = fit_head(rows[fit], y[fit], c).predict_rows(rows[test])
    return probs


def _acc(truth: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """Accuracy and balanced accuracy (mean recall over the genres present in ``truth``)."""
    from sklearn.metrics import balanced_accuracy_score

    pred = probs.argmax(1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true", UserWarning)
        return float((pred == truth).mean()), float(balanced_accuracy_score(truth, pred))


def choose_and_calibrate(rows: dict, y: np.ndarray, grid: tuple) -> dict:
    """Inside one outer training set: the recipe of ``grid`` with the best inner mean of accuracy and balanced
    accuracy, then its temperature and threshold fitted on its inner out-of-fold probabilities (as training)."""
    best = None
    for features, pooling, c in grid:
        probs = out_of_fold(rows[features, pooling], y, c)
        acc, bal = _acc(y, probs)
        if best is None or (acc + bal) / 2 > best["inner_score"]:
            best = {"recipe": (features, pooling, c), "inner_score": (acc + bal) / 2, "probs": probs}
    probs = best.pop("probs")
    t = cal.fit_temperature(probs, y)
    after = cal.apply_temperature(probs, t)
    threshold = cal.uncertainty_threshold(after, y)
    inner = cal.flag_summary(after, y, threshold)
    return best | {
        "temperature": t,
        "uncertain_below": threshold,
        "inner": {"song_accuracy": _acc(y, probs)[0], "ece_after": cal.ece(after, y)} | inner,
    }


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion of ``k`` in ``n``."""
    p, d = k / n, 1 + z * z / n
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (p + z * z / (2 * n)) / d - half, (p + z * z / (2 * n)) / d + half


def summary(truth: np.ndarray, probs: np.ndarray, after: np.ndarray, flagged: np.ndarray) -> dict:
    """Accuracy, ECE before and after the temperature, flagged share and accuracy of the rest (with its
    95% Wilson interval) of ``n`` scored songs."""
    acc, bal = _acc(truth, probs) if len(truth) else (None, None)
    right = after.argmax(1) == truth
    keep = ~flagged
    lo, hi = wilson(int(right[keep].sum()), int(keep.sum())) if keep.any() else (None, None)
    return {
        "n": int(len(truth)),
        "accuracy": acc,
        "balanced_accuracy": bal if len(set(truth.tolist())) > 1 else None,
        "ece_before": cal.ece(probs, truth),
        "ece_after": cal.ece(after, truth),
        "uncertain_share": float(flagged.mean()),
        "accuracy_not_uncertain": float(right[keep].mean()) if keep.any() else None,
        "accuracy_not_uncertain_ci95": [float(lo), float(hi)] if keep.any() else None,
        "n_not_uncertain": int(keep.sum()),
    }


def by_kind(truth, probs, after, flagged, kind) -> dict:
    """:func:`summary` over all scored songs and over each song kind."""
    out = {"all": summary(truth, probs, after, flagged)}
    for k in ("full", "excerpt"):
        m = kind == k
        out[k] = summary(truth[m], probs[m], after[m], flagged[m])
    return out


def outer(rows: dict, y: np.ndarray, kind: np.ndarray, splits: list, grid: tuple) -> dict:
    """Choose and calibrate on each outer training set, score its held-out songs; pooled figures by kind."""
    probs, after = np.zeros((len(y), 10)), np.zeros((len(y), 10))
    flagged, scored, folds = np.zeros(len(y), bool), np.zeros(len(y), bool), []
    for fit, test in splits:
        chosen = choose_and_calibrate({k: v[fit] for k, v in rows.items()}, y[fit], grid)
        features, pooling, c = chosen["recipe"]
        head = fit_head(rows[features, pooling][fit], y[fit], c)
        probs[test] = head.predict_rows(rows[features, pooling][test])
        after[test] = cal.apply_temperature(probs[test], chosen["temperature"])
        flagged[test] = cal.certainty(after[test]) < chosen["uncertain_below"]
        scored[test] = True
        fold = summary(y[test], probs[test], after[test], flagged[test])
        folds.append(
            {"recipe": list(chosen["recipe"])}
            | {k: chosen[k] for k in ("inner_score", "temperature", "uncertain_below", "inner")}
            | {"outer": fold}
        )
        print(
            f"  fold of {len(test)}: {features} {pooling} C={c:g}, T {chosen['temperature']:.3f}, threshold "
            f"{chosen['uncertain_below']:.3f}; inner rest {chosen['inner']['accuracy_not_uncertain']:.3f}, "
            f"outer acc {fold['accuracy']:.3f}, flagged {fold['uncertain_share']:.3f}, rest "
            f"{fold['accuracy_not_uncertain']:.3f}, ECE {fold['ece_after']:.3f}",
            flush=True,
        )
    s = scored
    per_fold_acc = np.array([f["outer"]["accuracy"] for f in folds])
    per_fold_bal = np.array([f["outer"]["balanced_accuracy"] for f in folds])
    per_fold_ece = np.array([f["outer"]["ece_after"] for f in folds])
    return {
        "pooled": by_kind(y[s], probs[s], after[s], flagged[s], kind[s]),
        "fold_accuracy_mean": float(per_fold_acc.mean()),
        "fold_accuracy_std": float(per_fold_acc.std()),
        "fold_balanced_mean": float(per_fold_bal.mean()),
        "fold_balanced_std": float(per_fold_bal.std()),
        "fold_ece_after_mean": float(per_fold_ece.mean()),
        "fold_ece_after_std": float(per_fold_ece.std()),
        "folds": folds,
    }


def in_sample(rows: dict, y: np.ndarray, kind: np.ndarray) -> dict:
    """What the checkpoint records: the shipped recipe's out-of-fold probabilities of all 444 songs, the
    temperature and threshold fitted on them and scored on the same rows."""
    features, pooling, c = SHIPPED
    probs = out_of_fold(rows[features, pooling], y, c)
    t = cal.fit_temperature(probs, y)
    after = cal.apply_temperature(probs, t)
    threshold = cal.uncertainty_threshold(after, y)
    flagged = cal.certainty(after) < threshold
    return {"temperature": t, "uncertain_below": threshold} | by_kind(y, probs, after, flagged, kind)


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _kind_rows(label: str, figures: dict) -> list[str]:
    out = []
    for k in ("all", "full", "excerpt"):
        r = figures[k]
        ci = r["accuracy_not_uncertain_ci95"]
        out.append(
            f"| {label} | {k} | {r['n']} | {_f(r['accuracy'])} | {_f(r['balanced_accuracy'])} | "
            f"{_f(r['ece_before'])} | {_f(r['ece_after'])} | {100 * r['uncertain_share']:.1f}% | "
            f"{_f(r['accuracy_not_uncertain'])} ({_f(ci[0])}-{_f(ci[1])}) |"
        )
    return out


def markdown(result: dict) -> str:
    fixed, nested = result["fixed"], result["nested"]
    ins = result["in_sample"]
    recorded = json.loads(CHECKPOINT.read_text())["calibration"]["out_of_fold"]
    chosen = [tuple(f["recipe"]) for f in nested["cv5"]["folds"]]
    lines = [
        "# The shipped model's accuracy and calibration, measured where they were not fitted",
        "",
        f"Rerun: `{result['command']}`  ",
        f"CPU: {result['cpu']}; {result['wall_seconds']:.0f} s (embeddings cached under the `--cache` folder).",
        "",
        "Data: the 444 labelled GTZAN songs (train 316 + valid 128 of the artist-filtered split; 261 full 30 s",
        "songs, 183 excerpts of 2-3 s). Head: the package's logreg on one pooled row of 3 s clip embeddings per",
        "song (lbfgs: the same convex problem as the shipped newton-cg). The temperature and the `uncertain`",
        "threshold are fitted as training fits them (out-of-fold probabilities of the training songs, 5 folds by",
        "song, target 95% right among songs not flagged), but only on each outer fold's training songs; every",
        "figure below is on songs that neither the head, the temperature nor the threshold saw, pooled over",
        "the protocol's scored songs (ECE: 15 bins). In brackets: 95% Wilson interval of the accuracy of the rest.",
        "",
        "- **cv5**: 5 outer folds by song, stratified by genre (seed 0: the folds of `docs/accuracy.md` and of the",
        "  shipped model's calibration). Songs of one artist can sit on both sides.",
        "- **artist**: fit on the train list (316 songs), score the valid list (128): no artist on both sides.",
        "- **fixed**: the shipped recipe (MSD_musicnn penultimate + EfficientAT embedding, mean+std, C 0.01).",
        f"- **nested**: the recipe chosen inside each outer fold from {len(GRID)} candidates (MSD_musicnn",
        "  penultimate + EfficientAT embedding, with or without MSD_musicnn's taggram; pooling mean or mean+std;",
        "  C 0.01 or 0.1: the four best recipes of `docs/accuracy.md` are among them) by the inner 5-fold mean of accuracy and balanced accuracy, standing for the selection over about",
        "  100 recipes that chose the shipped one on the cv5 folds themselves.",
        "",
        "## What the checkpoint records (in-sample for the temperature and threshold)",
        "",
        "The shipped recipe's out-of-fold probabilities of all 444 songs, the temperature and threshold fitted on",
        "them and scored on the same rows (the figures `config.json` keeps under `calibration.out_of_fold`):",
        "",
        "| head | songs | n | accuracy | balanced | ECE before | ECE after | flagged | accuracy of the rest |",
        "|---|---|---|---|---|---|---|---|---|",
        *_kind_rows("in-sample", ins),
        "",
        f"The checkpoint itself records accuracy {recorded['song_accuracy']:.3f}, ECE {recorded['ece_before']:.3f} "
        f"before and {recorded['ece_after']:.3f} after,",
        f"{100 * recorded['uncertain_share']:.1f}% flagged and {recorded['accuracy_not_uncertain']:.3f} of the "
        "rest right (its features came through the training pipeline, not this script's cache).",
        "",
        "## Out of sample: temperature and threshold chosen inside each outer fold",
        "",
        "| protocol / head | songs | n | accuracy | balanced | ECE before | ECE after | flagged | accuracy of the rest |",
        "|---|---|---|---|---|---|---|---|---|",
        *_kind_rows("cv5 / fixed", fixed["cv5"]["pooled"]),
        *_kind_rows("cv5 / nested", nested["cv5"]["pooled"]),
        *_kind_rows("artist / fixed", fixed["artist"]["pooled"]),
        *_kind_rows("artist / nested", nested["artist"]["pooled"]),
        "",
        "## The headline CV figure without the selection",
        "",
        "| | 5-fold accuracy | 5-fold balanced |",
        "|---|---|---|",
        "| shipped recipe, fixed (chosen on these folds: optimistic) | "
        f"{fixed['cv5']['fold_accuracy_mean']:.3f} ± {fixed['cv5']['fold_accuracy_std']:.3f} | "
        f"{fixed['cv5']['fold_balanced_mean']:.3f} ± {fixed['cv5']['fold_balanced_std']:.3f} |",
        "| recipe chosen inside each outer fold (nested) | "
        f"{nested['cv5']['fold_accuracy_mean']:.3f} ± {nested['cv5']['fold_accuracy_std']:.3f} | "
        f"{nested['cv5']['fold_balanced_mean']:.3f} ± {nested['cv5']['fold_balanced_std']:.3f} |",
        "",
        "Recipes chosen in the five outer folds: "
        + "; ".join(f"{f.replace('+', ' + ')} {p} C {c:g}" for f, p, c in chosen)
        + ". Artist protocol: "
        + "; ".join(
            f"{f.replace('+', ' + ')} {p} C {c:g}"
            for f, p, c in (tuple(x["recipe"]) for x in nested["artist"]["folds"])
        )
        + ".",
        "",
        "Per outer fold (cv5, fixed head): temperature, threshold, inner accuracy of the rest (what the threshold",
        "was fitted to reach) and the outer figures:",
        "",
        "| fold | n | temperature | threshold | inner rest | outer accuracy | outer flagged | outer rest | outer ECE |",
        "|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {i} | {f['outer']['n']} | {f['temperature']:.3f} | {f['uncertain_below']:.3f} | "
            f"{_f(f['inner']['accuracy_not_uncertain'])} | {_f(f['outer']['accuracy'])} | "
            f"{100 * f['outer']['uncertain_share']:.1f}% | {_f(f['outer']['accuracy_not_uncertain'])} | "
            f"{_f(f['outer']['ece_after'])} |"
            for i, f in enumerate(fixed["cv5"]["folds"])
        ),
        f"| mean ± std | | | | | | | | {fixed['cv5']['fold_ece_after_mean']:.3f} ± "
        f"{fixed['cv5']['fold_ece_after_std']:.3f} |",
        "",
        "A fold's ECE rests on about 89 songs in 15 bins, which biases it upwards; the pooled ECE above (all the",
        "protocol's songs at once) is the one to compare with the checkpoint's figure over 444 songs.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    from sklearn.model_selection import StratifiedKFold

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="/tmp/mgr_calibration_oos", help="folder of the cached embeddings")
    parser.add_argument("--out", default=str(RESULTS / "calibration_oos"), help="path without .json / .md")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the .json and stop")
    args = parser.parse_args()
    out = Path(args.out)
    if args.markdown_only:
        out.with_suffix(".md").write_text(markdown(json.loads(out.with_suffix(".json").read_text())))
        return
    started = time.time()
    songs = recipes.labelled_songs()  # sorted by song_id, as recipes.py and training order them
    embs = load_embeddings(Path(args.cache), songs)
    song_ids = songs["song_id"].to_numpy()
    genres = sorted(set(songs["label"]))
    y = np.array([genres.index(g) for g in songs["label"]])
    kind = songs["kind"].to_numpy()
    split = songs["split"].to_numpy()
    rows = song_rows(embs, song_ids)
    protocols = {
        "cv5": list(StratifiedKFold(5, shuffle=True, random_state=SEED).split(song_ids, songs["label"])),
        "artist": [(np.flatnonzero(split == "train"), np.flatnonzero(split == "valid"))],
    }
    result = {
        "command": "nice -n 10 python benchmarks/calibration_oos.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "cpu": machine.cpu_name(),
        "n_songs": int(len(y)),
        "kinds": {k: int((kind == k).sum()) for k in ("full", "excerpt")},
        "shipped": list(SHIPPED),
        "grid": [list(g) for g in GRID],
        "in_sample": in_sample(rows, y, kind),
    }
    for head, grid in (("fixed", (SHIPPED,)), ("nested", GRID)):
        result[head] = {}
        for name, splits in protocols.items():
            print(f"{head} / {name}:", flush=True)
            result[head][name] = outer(rows, y, kind, splits, grid)
            result["wall_seconds"] = time.time() - started
            out.with_suffix(".json").write_text(json.dumps(result, indent=1))  # partial results survive a stop
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
