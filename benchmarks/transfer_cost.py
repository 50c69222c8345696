"""Inference cost per minute of audio: the shipped CNN beside the pre-trained musicnn models, one CPU thread.

Run from the repository root:

    python benchmarks/transfer_cost.py gtzan-sample --model logmel-cnn --model default --model msd-tags --embeddings \
        --out benchmarks/results/transfer_cost.md

For every model (a checkpoint folder, ``default`` or ``msd-tags``) each listed file goes through the
tagging graph's own stage code without Ray (decode and resample, cut into clips, featurize, predict) on
one torch thread, and the process CPU seconds of each step are summed; ``--embeddings`` adds the cost of
``tag --embeddings`` (musicnn input of the same clips plus the pre-trained network). Prints CPU seconds
per minute of audio, per step and in all.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mgr_batch.clips import windows as clips
from mgr_batch.features import musicnn as fm
from mgr_batch.features import registry as features
from mgr_batch.features import stacked as fs
from mgr_batch.io import audio
from mgr_batch.stages.predict import Predictor


def cost(paths: list[str], model: str, *, embeddings: bool = False) -> dict[str, float]:
    """CPU seconds per minute of audio of each step for ``model`` over ``paths``."""
    predictor = Predictor(model, device="cpu")
    spec = predictor.spec
    steps = {"decode": 0.0, "features": 0.0, "predict": 0.0, "embedding": 0.0}
    minutes = 0.0
    for path in paths:
        t = time.process_time()
        decoded = audio.load(path, sr=spec.audio.sr)
        song_clips, _ = clips.cut(
            decoded.y, sr=spec.audio.sr, clip_seconds=spec.clips.clip_seconds, hop_seconds=spec.clips.clip_seconds
        )
        steps["decode"] += time.process_time() - t
        if spec.features.kind == fs.KIND:  # each network of the stack on its own
            parts = []
            for network, layers in _networks(spec.features).items():
                t = time.process_time()
                got = fs.network_layers(song_clips, sr=spec.audio.sr, network=network, layers=layers)
                steps[network] = steps.get(network, 0.0) + time.process_time() - t
                parts.append(got)
            by = {
                (n, layer): v
                for part, (n, ls) in zip(parts, _networks(spec.features).items(), strict=True)
                for layer, v in part.items()
            }
            x = np.concatenate([by[p] for p in fs.parts(spec.features)], axis=1)[:, :, None]
            steps["features"] += sum(steps[n] for n in _networks(spec.features)) - steps["features"]
        else:
            t = time.process_time()
            x = features.featurize(song_clips, sr=spec.audio.sr, cfg=spec.features)
            steps["features"] += time.process_time() - t
        t = time.process_time()
        predictor(
            {
                "features": _objects([x]),
                "path": np.array([path]),
                "song_id": np.array(["s"]),
                "status": np.array(["ok"]),
            }
        )  # the head: clip rows and, for a song-level or calibrated model, the song row
        steps["predict"] += time.process_time() - t
        if embeddings:
            t = time.process_time()
            fm.embed_logmel(fm.musicnn_input(song_clips, sr=spec.audio.sr))
            steps["embedding"] += time.process_time() - t
        minutes += decoded.analyzed / 60
    out = {k: round(v / minutes, 3) for k, v in steps.items()}
    tagging = ("decode", "features", "predict")
    out["total"] = round(sum(steps[k] for k in tagging) / minutes, 3)  # tagging alone
    return out | {"model_id": spec.model_id, "minutes": round(minutes, 2)}


def _networks(cfg) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for network, layer in fs.parts(cfg):
        out[network] = (*out.get(network, ()), layer)
    return out


def _objects(items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("files", help="CSV with a path column, or 'gtzan-sample' (two whole songs per GTZAN genre)")
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--embeddings", action="store_true", help="also time tag --embeddings (with the first model)")
    parser.add_argument("--out", help="also write the Markdown table here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.files == "gtzan-sample":  # two whole 30 s excerpts per genre from ../shared/data/gtzan
        gtzan = Path(__file__).resolve().parents[2] / "shared" / "data" / "gtzan"
        m = pd.read_csv(gtzan / "manifest.csv")
        paths = [str(gtzan / p) for p in m[m["kind"] == "full"].groupby("genre").head(2)["path"]]
    else:
        paths = list(pd.read_csv(args.files)["path"])
    for model in args.model:  # warm up: imports, numba, first-call allocations, each network built once
        cost(paths[:1], model)
    fm.pretrained_network()
    rows = []
    for i, model in enumerate(args.model):
        rows.append({"model": model, **cost(paths, model, embeddings=args.embeddings and i == 0)})
        print(rows[-1], flush=True)
    networks = [k for r in rows for k in r if k in fs.NETWORKS]
    keys = [
        "model",
        "model_id",
        "minutes",
        "decode",
        "features",
        *dict.fromkeys(networks),
        "predict",
        "embedding",
        "total",
    ]
    base = next((r for r in rows if r["model"] == "musicnn-logreg"), None)
    lines = [
        "# Inference cost per minute of audio (one CPU thread, CPU seconds per audio minute)",
        "",
        f"Rerun: `python benchmarks/transfer_cost.py {' '.join(sys.argv[1:])}`  ",
        f"{len(paths)} files; decode = decode + resample + cut, features = the model's featurization "
        "(for embedding models this includes the pre-trained networks; a stack's networks also on their own), "
        "predict = the model's head (clip rows and song row), "
        "total = tagging (decode + features + predict); embedding = what `tag --embeddings` adds (first model only).",
        "",
        "| " + " | ".join(keys) + " |",
        "|" + "---|" * len(keys),
    ]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    if base:
        lines += [
            "",
            "Tagging cost (total) relative to `musicnn-logreg`, same run: "
            + ", ".join(f"`{r['model']}` {r['total'] / base['total']:.2f}x" for r in rows)
            + ".",
        ]
    lines += ["", f"CPU: {_cpu()}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


def _cpu() -> str:
    import subprocess

    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = info.get("Flags", "")
    return (
        f"{info.get('Model name', '?').strip()}, {info.get('CPU(s)', '?').strip()} CPUs, "
        f"AVX-512 {'yes' if 'avx512f' in flags else 'no'}, AVX2 {'yes' if 'avx2' in flags else 'no'}"
    )


if __name__ == "__main__":
    main()
