"""Figure of a segmentation: the SEM distance matrix, the adjacency, and the waveform coloured by cluster."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mgr_batch.clips.segmentation import Segmentation
from mgr_batch.errors import ConfigError
from mgr_batch.plots import figure as plots

#: Waveform columns drawn (min/max envelope per column): keeps the figure light for hour-long songs.
_ENVELOPE_POINTS = 4000


def _envelope(y: np.ndarray, sr: int, points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Times (s), minima and maxima of ``y`` (n,) over ``points`` equal blocks (fewer if ``y`` is short)."""
    per = max(1, int(np.ceil(len(y) / points)))
    n = len(y) // per * per
    blocks = y[:n].reshape(-1, per) if n else np.zeros((0, 1))
    times = (np.arange(len(blocks)) + 0.5) * per / sr
    return times, blocks.min(axis=1), blocks.max(axis=1)


def plot_segmentation(seg: Segmentation, y: np.ndarray, sr: int, path: str | Path) -> Path:
    """Write :func:`segmentation_png` of ``seg`` for the mono song ``y`` (n,) at ``sr`` Hz to ``path``."""
    png = segmentation_png(seg, y, sr)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def segmentation_png(seg: Segmentation, y: np.ndarray, sr: int) -> bytes:
    """PNG bytes of a segmentation figure, like the study's, for the mono song ``y`` (n,) at ``sr`` Hz.

    Top left: the symmetrized SEM (log colour scale, windows on both axes); top right: the adjacency;
    bottom: the waveform, each segment in its cluster's colour, the representative spans shaded.
    """
    plt = plots.pyplot()
    from matplotlib.colors import LogNorm

    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1 or sr <= 0:
        raise ConfigError(f"plot_segmentation needs mono audio (n,) and a positive sr, not {y.shape} at {sr}")
    fig = plt.figure(figsize=(12, 9))
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 2])
    ax_s, ax_a, ax_y = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, :])
    n = len(seg.starts_s)
    extent = (
        (0.0, float(seg.starts_s[-1] + seg.window_seconds), float(seg.starts_s[-1] + seg.window_seconds), 0.0)
        if n
        else None
    )
    if n >= 2:
        sym = 0.5 * (seg.S + seg.S.T)
        positive = sym[sym > 0]
        lo = float(np.quantile(positive, 0.01)) if positive.size else 1e-6
        norm = LogNorm(vmin=max(lo, 1e-6), vmax=max(float(sym.max()), lo * 10, 1e-5))
        im = ax_s.imshow(
            np.clip(sym, norm.vmin, None), cmap="magma_r", norm=norm, extent=extent, interpolation="nearest"
        )
        fig.colorbar(im, ax=ax_s, fraction=0.046, label="SEM (symmetrized)")
        im = ax_a.imshow(seg.A, cmap="viridis", vmin=0.0, vmax=1.0, extent=extent, interpolation="nearest")
        fig.colorbar(im, ax=ax_a, fraction=0.046, label="adjacency")
    else:
        for ax in (ax_s, ax_a):
            ax.text(0.5, 0.5, "fewer than 2 windows", ha="center", va="center", transform=ax.transAxes)
    ax_s.set_title(f"distance matrix ({n} windows of {seg.window_seconds:g} s)")
    ax_a.set_title(f"adjacency exp(-(S/{seg.scale:.3g})^2)")
    for ax in (ax_s, ax_a):
        ax.set_xlabel("window start (s)")
        ax.set_ylabel("window start (s)")

    colours = plt.get_cmap("tab10")
    times, lows, highs = _envelope(y, sr, _ENVELOPE_POINTS)
    for lo, hi in seg.spans:
        ax_y.axvspan(lo, hi, color="0.85", zorder=0)
    seen: set[int] = set()
    for lo, hi, cluster in seg.segments:
        inside = (times >= lo) & (times < hi)
        label = (
            None if cluster in seen else f"cluster {cluster}" + (" (representative)" if cluster == seg.cluster else "")
        )
        seen.add(cluster)
        ax_y.fill_between(
            times[inside], lows[inside], highs[inside], color=colours(cluster % 10), linewidth=0, label=label
        )
    ax_y.set_xlim(0.0, max(seg.duration, len(y) / sr))
    ax_y.set_xlabel("time (s)")
    ax_y.set_ylabel("amplitude")
    ax_y.set_title(
        f"waveform by cluster ({seg.n_clusters} clusters, {len(seg.segments)} segments; shaded: representative)"
    )
    ax_y.legend(loc="upper right", fontsize=8, ncol=min(4, max(1, len(seen))))
    return plots.png(fig)
