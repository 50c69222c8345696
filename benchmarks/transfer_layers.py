"""Which musicnn embedding layer classifies GTZAN best? Embeds every clip once, then fits classic heads.

Run from the repository root (../shared/data beside it):

    python benchmarks/transfer_layers.py [--cache /tmp/gtzan_musicnn.npz]

Each song with audio in the artist-filtered train and valid lists is decoded at 16 kHz and cut into 3 s
clips (as ``--features musicnn_embedding`` does); the pre-trained MSD_musicnn embeds every clip once
(all layers from one forward pass; cached). For each layer, ``logreg`` and ``svm`` heads (the package's
own classic models: standardized, C by grid search grouped by song) are fitted on train clips and scored
on valid songs (mean of clip probabilities), and by 5-fold CV over train+valid with whole songs per
fold. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedKFold

from mgr_batch.clips import windows as clips
from mgr_batch.evaluation import datasets
from mgr_batch.evaluation.metrics import accuracy_summary
from mgr_batch.features.musicnn import musicnn_input, pretrained_network
from mgr_batch.io import audio
from mgr_batch.models.classic import ClassicModel

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "gtzan"
LAYERS = ("max_pool", "mean_pool", "penultimate", "max_mean")


def embed_all(files: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-clip embeddings of every listed song: ``max_pool``, ``mean_pool``, ``penultimate``, ``song``."""
    net = pretrained_network("MSD_musicnn")
    out: dict[str, list] = {"max_pool": [], "mean_pool": [], "penultimate": [], "song": []}
    started = time.time()
    for i, path in enumerate(files["path"]):
        y = audio.load(str(path), sr=16000).y
        song_clips, _ = clips.cut(y, sr=16000, clip_seconds=3.0, hop_seconds=3.0)
        with torch.inference_mode():
            e = net.embed(torch.from_numpy(musicnn_input(song_clips, sr=16000)))
        for k in ("max_pool", "mean_pool", "penultimate"):
            out[k].append(e[k].numpy())
        out["song"] += [datasets.stem(path)] * len(song_clips)
        if i % 50 == 0:
            print(f"{i}/{len(files)} songs, {time.time() - started:.0f} s", flush=True)
    return {k: np.concatenate(v) if k != "song" else np.asarray(v) for k, v in out.items()}


def layer(emb: dict[str, np.ndarray], name: str) -> np.ndarray:
    x = np.concatenate([emb["max_pool"], emb["mean_pool"]], axis=1) if name == "max_mean" else emb[name]
    return x[:, :, None]


def score(head: str, x: np.ndarray, y: np.ndarray, song: np.ndarray, train: np.ndarray, test: np.ndarray) -> dict:
    model = ClassicModel(name=head, n_classes=10, input_shape=x.shape[1:]).fit(x[train], y[train], groups=song[train])
    return accuracy_summary(model.predict_proba(x[test]), song[test], y[test]) | {"C": model.best_params.get("C")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", default="/tmp/gtzan_musicnn.npz")
    parser.add_argument("--heads", default="logreg,svm")
    args = parser.parse_args()
    files = datasets.labelled(
        str(DATA), train_list=str(DATA / "train_filtered.txt"), valid_list=str(DATA / "valid_filtered.txt")
    )
    cache = Path(args.cache)
    if cache.is_file():
        emb = dict(np.load(cache))
    else:
        emb = embed_all(files)
        np.savez(cache, **emb)
    by_stem = files.set_index("stem")
    genres = sorted(files["label"].unique())
    y = np.array([genres.index(by_stem.loc[s, "label"]) for s in emb["song"]])
    split = np.array([by_stem.loc[s, "split"] for s in emb["song"]])
    song = emb["song"]
    print("| layer | head | valid song acc | valid balanced | 5-fold CV song acc | CV balanced |")
    print("|---|---|---|---|---|---|")
    songs = files.drop_duplicates("stem")
    folds = StratifiedKFold(5, shuffle=True, random_state=0).split(songs["stem"], songs["label"])
    fold_of = {s: k for k, (_, te) in enumerate(folds) for s in songs["stem"].to_numpy()[te]}
    fold = np.array([fold_of[s] for s in song])
    for name in LAYERS:
        x = layer(emb, name)
        for head in args.heads.split(","):
            v = score(head, x, y, song, split == "train", split == "valid")
            cv = [score(head, x, y, song, fold != k, fold == k) for k in range(5)]
            acc = [c["song_accuracy"] for c in cv]
            bal = [c["song_balanced_accuracy"] for c in cv]
            print(
                f"| {name} | {head} | {v['song_accuracy']:.3f} | {v['song_balanced_accuracy']:.3f} | "
                f"{np.mean(acc):.3f} ± {np.std(acc):.3f} | {np.mean(bal):.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
