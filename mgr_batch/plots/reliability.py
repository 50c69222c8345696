"""The run report's reliability diagram: accuracy per confidence bin over the songs in each bin.

(The before/after-calibration diagram of an evaluation is :func:`mgr_batch.evaluation.calibration.reliability_png`.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mgr_batch.plots import figure as plots


def reliability_png(scored: pd.DataFrame, n_bins: int = 10) -> bytes:
    """PNG of accuracy (top) and song count (bottom) per confidence bin; ``scored`` has ``confidence`` and ``correct``."""
    plt = plots.pyplot()
    conf = scored["confidence"].to_numpy(float)
    correct = scored["correct"].to_numpy(bool)
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(conf, edges) - 1, 0, n_bins - 1)
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(6, 6), height_ratios=[3, 1], sharex=True)
    mids, acc, n = (edges[:-1] + edges[1:]) / 2, [], []
    for b in range(n_bins):
        sel = which == b
        n.append(int(sel.sum()))
        acc.append(float(correct[sel].mean()) if sel.any() else np.nan)
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    ax.bar(mids, acc, width=1 / n_bins, edgecolor="black", color="#4878a8", label="accuracy")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    ax_n.bar(mids, n, width=1 / n_bins, color="grey")
    ax_n.set_xlabel("confidence")
    ax_n.set_ylabel("songs")
    return plots.png(fig)
