"""Do heads on float16 stored vectors agree with float32? The shipped default's head on the 444 GTZAN songs.

    nice -n 10 python benchmarks/vector_precision.py [--cache runs/recipes] [--out benchmarks/results/vector_precision.md]

Reads the per-clip embeddings ``benchmarks/recipes.py`` caches (``MSD_musicnn.npz`` and ``efficientat.npz``: the
package's own decode at 32 kHz, 3 s clips; extracted on first use), stacks MSD_musicnn's penultimate layer and
EfficientAT's embedding as the default does, pools each song's clips (mean and std, :func:`mgr_batch.stages.vectors.pool`),
and applies the default head (calibrated) to the float32 vector and to its float16 copy (what ``embeddings/`` stores).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(ROOT / "runs" / "recipes"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vector_precision.md"))
    args = ap.parse_args()
    import recipes

    from mgr_batch.io.writer import VECTOR_DTYPE
    from mgr_batch.stages.vectors import VectorHead, pool

    recipes.CACHE = Path(args.cache)
    songs = recipes.labelled_songs()
    msd, eat = recipes.embeddings("MSD_musicnn", songs), recipes.embeddings("efficientat", songs)
    assert (msd["song"] == eat["song"]).all()
    clips = np.concatenate([msd["penultimate"], eat["embedding"]], axis=1)  # (n_clips, 584)
    ids = list(dict.fromkeys(msd["song"].tolist()))
    x32 = np.stack([pool(clips[msd["song"] == s], "mean_std") for s in ids])
    x16 = x32.astype(VECTOR_DTYPE)
    head = VectorHead("default")
    p32, p16 = head.song_proba(x32), head.song_proba(x16)
    same = int((p32.argmax(1) == p16.argmax(1)).sum())
    diff = float(np.abs(p32 - p16).max())
    mb = x16.nbytes / len(ids) * 1e6 / 1e9
    lines = [
        "# Stored vectors in float16 against float32",
        "",
        "Regenerate: `nice -n 10 python benchmarks/vector_precision.py` (per-clip embeddings cached by "
        "`benchmarks/recipes.py`).",
        "",
        f"The shipped default's head on the stored vector (mean and std of the 1,168-value stack) of {len(ids)} GTZAN "
        f"train+valid songs: the same genre for {same}/{len(ids)} songs, song probabilities within {diff:.5f} "
        f"(largest absolute difference). Raw size: {x16.shape[1] * 2} bytes per song in float16, {mb:.2f} GB per "
        "million songs before Parquet's compression (float32: twice that).",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
