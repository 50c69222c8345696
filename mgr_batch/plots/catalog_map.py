"""A map of a catalog: its songs' stored vectors projected to 2-D, each a point coloured by its genre."""

from __future__ import annotations

import numpy as np

from mgr_batch.plots import figure as plots

#: Genres given a colour of their own at most (the most frequent); the rest are drawn grey as "other".
MAX_COLOURS = 19


def project(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PCA of ``vectors`` (n, dims) after standardizing each dimension (as the default head does): the points
    (n, 2) and the share of the variance each axis holds (2,)."""
    from sklearn.decomposition import PCA

    x = np.asarray(vectors, np.float32)
    x = x - x.mean(axis=0)
    std = x.std(axis=0)
    x /= np.where(std > 0, std, 1.0)
    n_components = min(2, *x.shape)
    pca = PCA(n_components=n_components, svd_solver="randomized" if min(x.shape) > 50 else "full", random_state=0)
    points = pca.fit_transform(x)
    if n_components < 2:  # one song, or one dimension: a line
        points = np.pad(points, ((0, 0), (0, 2 - n_components)))
    share = np.pad(pca.explained_variance_ratio_, (0, 2 - n_components))
    return points, share


def catalog_map_png(
    points: np.ndarray, genres: np.ndarray, uncertain: np.ndarray | None, *, share: np.ndarray, title: str
) -> bytes:
    """The points (n, 2) as a scatter coloured by ``genres`` (n,), the ``uncertain`` ones (n,) drawn as ×."""
    plt = plots.pyplot()
    names, counts = np.unique(genres, return_counts=True)
    order = names[np.argsort(-counts, kind="stable")]
    coloured = list(order[:MAX_COLOURS]) if len(order) > MAX_COLOURS + 1 else list(order)
    palette = plt.get_cmap("tab10" if len(coloured) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(10, 7))
    size = 14 if len(points) <= 2000 else 5
    flags = np.zeros(len(points), bool) if uncertain is None else np.asarray(uncertain, bool)
    groups = [(g, genres == g, palette(i % palette.N)) for i, g in enumerate(coloured)]
    if len(coloured) < len(order):
        groups.append(("other", ~np.isin(genres, coloured), "#999999"))
    for name, mine, colour in groups:
        sure, unsure = mine & ~flags, mine & flags
        ax.scatter(points[sure, 0], points[sure, 1], s=size, color=colour, label=f"{name} ({int(mine.sum())})")
        if unsure.any():
            ax.scatter(points[unsure, 0], points[unsure, 1], s=size * 2.5, color=colour, marker="x", linewidths=1)
    if flags.any():
        ax.scatter([], [], s=size * 2.5, color="black", marker="x", label=f"uncertain ({int(flags.sum())})")
    ax.set_xlabel(f"PC1 ({share[0]:.0%} of the variance)")
    ax.set_ylabel(f"PC2 ({share[1]:.0%} of the variance)")
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return plots.png(fig)
