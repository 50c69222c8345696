"""Accuracy table on GTZAN (artist-filtered train -> valid, and grouped 5-fold CV): song level, with n.

Run from the repository root (../shared/data beside it):

    python benchmarks/accuracy.py                       # classic baselines + the packaged models
    python benchmarks/accuracy.py --cv logreg:musicnn_embedding   # also 5-fold CV of the shipped default's recipe
    python benchmarks/accuracy.py --cv cnn --cv-epochs 12   # also 5-fold CV of the CNN (slow on CPU)

Writes benchmarks/results/accuracy.json and accuracy.md (the table quoted in the README). Models and CV
folds go to --work (default runs/accuracy/, ignored by git), so an interrupted `--cv` resumes from its
finished folds when rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "gtzan"

CLASSIC = {
    "svm-rbf": (
        make_pipeline(StandardScaler(), SVC(kernel="rbf", decision_function_shape="ovr")),
        {"svc__C": [0.1, 1, 10, 100]},
    ),
    "logreg": (
        make_pipeline(StandardScaler(), LogisticRegression(solver="newton-cg", max_iter=2000)),
        {"logisticregression__C": [0.01, 0.1, 1, 10]},
    ),
    "knn-pca15": (
        make_pipeline(
            StandardScaler(),
            PCA(n_components=15, random_state=0),
            KNeighborsClassifier(n_neighbors=10, weights="distance"),
        ),
        {},
    ),
}


def stem(path: str) -> str:
    return Path(path).name.rsplit(".", 1)[0]


def balanced(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-genre recall over the genres that have support."""
    return float(np.mean([(y_pred[y_true == g] == g).mean() for g in np.unique(y_true)]))


def classic_rows(seed: int = 0) -> list[dict]:
    """SVM / logistic regression / kNN on the published 58-value features (one row per 30 s song)."""
    table = pd.read_csv(DATA / "features_30_sec.train_valid.csv")
    table["stem"] = table["filename"].map(stem)
    train = set(map(stem, (DATA / "train_filtered.txt").read_text().split()))
    valid = set(map(stem, (DATA / "valid_filtered.txt").read_text().split()))
    x = table.drop(columns=["filename", "label", "stem", "length"]).to_numpy(float)
    y = table["label"].to_numpy()
    is_train, is_valid = table["stem"].isin(train).to_numpy(), table["stem"].isin(valid).to_numpy()
    # The valid songs whose audio is in ../shared/data (the ones our audio models are scored on).
    has_audio = table["stem"].isin(set(pd.read_csv(DATA / "manifest.csv")["song_id"])).to_numpy()
    rows = []
    inner = StratifiedKFold(5, shuffle=True, random_state=seed)
    for name, (model, grid) in CLASSIC.items():
        search = GridSearchCV(model, grid, cv=inner) if grid else model
        search.fit(x[is_train], y[is_train])
        for label, subset in (("train -> valid", is_valid), ("train -> valid songs with audio", is_valid & has_audio)):
            pred = search.predict(x[subset])
            rows.append(
                {
                    "configuration": f"{name} on published 58-value features (30 s)",
                    "protocol": label,
                    "song_accuracy": float((pred == y[subset]).mean()),
                    "song_balanced_accuracy": balanced(y[subset], pred),
                    "n_songs": int(subset.sum()),
                }
            )
        # 5-fold CV over train+valid; rows are whole songs, so folds never split a song.
        both = is_train | is_valid
        accs, bals = [], []
        for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(x[both], y[both]):
            fitted = (GridSearchCV(model, grid, cv=inner) if grid else model).fit(x[both][tr], y[both][tr])
            p = fitted.predict(x[both][te])
            accs.append((p == y[both][te]).mean())
            bals.append(balanced(y[both][te], p))
        rows.append(
            {
                "configuration": f"{name} on published 58-value features (30 s)",
                "protocol": "5-fold CV, train+valid",
                "song_accuracy": float(np.mean(accs)),
                "song_accuracy_std": float(np.std(accs)),
                "song_balanced_accuracy": float(np.mean(bals)),
                "n_songs": int(both.sum()),
            }
        )
    return rows


def mgr(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "mgr_batch.cli", *args], check=True, cwd=ROOT)


#: The models shipped in the package, by ``--model`` name, and how to describe them.
PACKAGED = {
    "default": "MSD_musicnn + EfficientAT embeddings, song-level logistic regression",
    "musicnn-logreg": "MSD_musicnn embedding + logistic regression (the earlier default)",
    "logmel-cnn": "log-mel CNN from scratch",
}


def packaged_model_row(name: str, work: Path) -> dict:
    out = work / f"eval-{name}"
    shutil.rmtree(out, ignore_errors=True)  # evaluate refuses an output that holds an earlier run
    mgr("evaluate", str(DATA), "--model", name, "--list", str(DATA / "valid_filtered.txt"), "--output", str(out))
    m = json.loads((out / "metrics.json").read_text())
    which = "shipped default" if name == "default" else f"packaged `{name}`"
    return {
        "configuration": f"{which} ({m['model_id']}), {PACKAGED[name]}",
        "protocol": "train -> valid",
        "song_accuracy": m["song_accuracy"],
        "song_balanced_accuracy": m["song_balanced_accuracy"],
        "n_songs": m["n_songs"],
        "clip_accuracy": m["clip_accuracy"],
        "report": os.path.relpath(out / "report.md", ROOT),
    }


def cv_row(model: str, epochs: int, work: Path) -> dict:
    """``mgr-batch cv`` of ``MODEL_TYPE[:FEATURES]`` (features: a preset name; default the model's)."""
    model_type, _, feats = model.partition(":")
    out = work / f"cv-{model_type}-{feats}"
    mgr(
        "cv",
        str(DATA),
        "--model-type",
        model_type,
        "--folds",
        "5",
        "--output",
        str(out),
        "--epochs",
        str(epochs),
        "--train-list",
        str(DATA / "train_filtered.txt"),
        "--valid-list",
        str(DATA / "valid_filtered.txt"),
        "--hop-seconds",
        "1.5",
        "--cpus-per-worker",
        "2",
        "--storage-path",
        str(work / "runs"),
        *(["--features", feats] if feats else []),
    )
    s = json.loads((out / "cv.json").read_text())
    what = f"{model_type} on {feats}" if feats else f"{model_type} on log-mel ({epochs} epochs)"
    return {
        "configuration": f"{what} (3 s clips)",
        "protocol": f"5-fold CV by {s['group_by']}, train+valid",
        "song_accuracy": s["song_accuracy"]["mean"],
        "song_accuracy_std": s["song_accuracy"]["std"],
        "song_balanced_accuracy": s["song_balanced_accuracy"]["mean"],
        "n_songs": s["n_songs"],
    }


#: Rows measured by benchmarks/reproduction.py (through the same pipeline) that the table repeats.
REPRODUCED = {
    "musicnn-logreg": "MSD_musicnn embedding + logreg",
    "musicnn-svm": "MSD_musicnn embedding + svm",
    "musicnn-finetune": "MSD_musicnn fine-tuned, new 10-genre head",
}


def reproduced_rows() -> list[dict]:
    """The transfer-learning rows of benchmarks/results/reproduction.json (valid, and CV where run)."""
    path = ROOT / "benchmarks" / "results" / "reproduction.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    rows = []
    for key, what in REPRODUCED.items():
        r = results.get(key)
        if not r:
            continue
        epochs = f", {r['epochs']} epochs, best {r['best_epoch']}" if r.get("epochs") else ""
        rows.append(
            {
                "configuration": f"{what} (reproduction.py `{key}`{epochs})",
                "protocol": "train -> valid",
                "song_accuracy": r["valid_song_accuracy"],
                "song_balanced_accuracy": r["valid_song_balanced_accuracy"],
                "n_songs": r["valid_n_songs"],
            }
        )
        if r.get("cv_song_accuracy"):
            rows.append(
                {
                    "configuration": f"{what} (reproduction.py `{key}`)",
                    "protocol": f"5-fold CV by {r['cv_group_by']}, train+valid",
                    "song_accuracy": r["cv_song_accuracy"]["mean"],
                    "song_accuracy_std": r["cv_song_accuracy"]["std"],
                    "song_balanced_accuracy": r["cv_song_balanced_accuracy"]["mean"],
                    "n_songs": r["cv_n_songs"],
                }
            )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| configuration | protocol | song accuracy | balanced accuracy | n songs |", "|---|---|---|---|---|"]
    for r in rows:
        acc = f"{r['song_accuracy']:.3f}" + (f" ± {r['song_accuracy_std']:.3f}" if "song_accuracy_std" in r else "")
        lines.append(
            f"| {r['configuration']} | {r['protocol']} | {acc} | {r['song_balanced_accuracy']:.3f} | {r['n_songs']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument(
        "--cv",
        nargs="*",
        default=[],
        help="MODEL_TYPE[:FEATURES] to cross-validate through mgr-batch cv, e.g. cnn, logreg:musicnn_embedding",
    )
    parser.add_argument("--cv-epochs", type=int, default=12)
    parser.add_argument("--skip-shipped", action="store_true")
    parser.add_argument(
        "--work", default=str(ROOT / "runs" / "accuracy"), help="models and CV folds (reuse to resume a CV)"
    )
    args = parser.parse_args()
    started = time.time()
    rows = classic_rows()
    work = Path(args.work).resolve()
    if not args.skip_shipped:
        rows += [packaged_model_row(name, work) for name in PACKAGED]
    for model_type in args.cv:
        rows.append(cv_row(model_type, args.cv_epochs, work))
    rows += reproduced_rows()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "accuracy.json").write_text(
        json.dumps({"rows": rows, "wall_seconds": round(time.time() - started, 1)}, indent=2)
    )
    table = markdown(rows)
    (out / "accuracy.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
