"""Representative segment of a song: AR-model distances between windows, spectral clustering, largest cluster.

The seed study's unsupervised segmentation, as plain numpy functions:

1. cut the song (resampled to ``cfg.sr``) into windows of ``window_seconds`` every ``hop_seconds``;
2. fit an order-``p`` autoregressive model to every window (autocorrelation method) and, for every ordered
   pair (i, j), measure how white the residual of window j through window i's inverse filter is:
   ``SEM(i, j) = (sigma_i^2 / r[0] - 1)^2 + 2 * sum_{k=1..M} (r[k] / r[0])^2``;
3. symmetrize and turn distances into an adjacency ``A = exp(-(S / scale)^2)``, zero diagonal;
4. normalized spectral clustering (Ng, Jordan and Weiss 2001) of the windows;
5. contiguous runs of one cluster are the segments (runs shorter than ``min_segment_seconds`` are merged);
6. the largest cluster (or its longest run) is the song's representative part.

Fast path: no pair is filtered in the time domain. Filtering window j with ``A_i(z)`` gives a residual whose
autocorrelation is ``r[k] = sum_d c_i[d] R_j[k + d]`` (d = -p..p), where ``c_i`` is the autocorrelation of
the coefficients ``a_i`` and ``R_j`` that of window j up to lag ``M + p``. So one FFT autocorrelation per
window, one AR fit per window, and one matrix product for all ``N_w^2`` pairs. This is exact for the full
(length n + p) residual; the study's truncated ``lfilter`` output differs only by its last ``p`` samples.

Where this departs from the study, and why (``scale=1.0, min_segment_seconds=0`` restores it):

- the signal is analyzed at 11025 Hz (soxr): the AR envelope of 16 poles is spent on 0 to 5.5 kHz;
- the adjacency scale adapts to the song (median distance to the 7th nearest window): a fixed scale of 1
  leaves A all ~0 on songs whose windows are all far apart and all ~1 on very homogeneous songs, and the
  median of all distances is dominated by cross-part pairs on songs with several parts;
- short runs are merged, because raw window labels flicker and every flicker is a boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.linalg
import soxr

from mgr_batch.config import DEFAULT_SCALE_NEIGHBOURS, SegmentationConfig
from mgr_batch.errors import ConfigError, EmptyAudioError, InvalidAudioError

#: White noise, relative to the mean power of the windows (-100 dB), added to every window's zero-lag
#: autocorrelation, as if the song were dithered: silent windows and pure tones still get a well-posed AR fit
#: and a non-zero residual. Relative, so that the SEM stays independent of the song's gain; absolute (in squared
#: full scale) for a song of digital silence.
NOISE_FLOOR = 1e-10
#: Float64 values held at once by the pairwise step (bounds its memory to ~32 MB whatever the song length).
_BLOCK_VALUES = 4_000_000


@dataclass(frozen=True, eq=False)
class Segmentation:
    """One song's segmentation; ``n`` below is the number of analysis windows.

    ``S`` (n, n): SEM of ordered pairs (row = reference model, column = filtered window); ``A`` (n, n): the
    adjacency at distance scale ``scale``; ``labels`` (n,): cluster of each window, numbered in order of first appearance; ``starts_s``
    (n,): window starts. ``segments``: contiguous runs ``(start_s, end_s, cluster)`` tiling the whole song.
    ``cluster``: the representative cluster; ``spans``: its kept ``(start_s, end_s)`` runs; ``keep_mask`` (n,):
    the windows inside ``spans``.
    """

    S: np.ndarray
    A: np.ndarray
    labels: np.ndarray
    starts_s: np.ndarray
    window_seconds: float
    duration: float
    scale: float
    segments: list[tuple[float, float, int]]
    cluster: int
    spans: list[tuple[float, float]]
    keep_mask: np.ndarray

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 1

    def clip_mask(self, clip_starts_s: np.ndarray, clip_seconds: float, *, min_overlap: float = 0.5) -> np.ndarray:
        """Which clips (e.g. from :func:`mgr_batch.clips.windows.cut`) lie in the representative spans.

        A clip is kept when at least ``min_overlap`` of its length falls inside ``spans``. Shape (n_clips,).
        """
        starts = np.asarray(clip_starts_s, dtype=np.float64)
        inside = np.zeros(len(starts))
        for lo, hi in self.spans:
            inside += np.clip(np.minimum(starts + clip_seconds, hi) - np.maximum(starts, lo), 0.0, None)
        return inside >= min_overlap * clip_seconds - 1e-9


def _autocorr(frames: np.ndarray, max_lag: int) -> np.ndarray:
    """Biased autocorrelation (lags 0..max_lag, divided by the frame length) of frames (n, n_samples).

    Adds :data:`NOISE_FLOOR` times the frames' mean power at lag 0. Returns float64 (n, max_lag + 1).
    """
    n, length = frames.shape
    n_fft = scipy.fft.next_fast_len(length + max_lag + 1, real=True)
    out = np.empty((n, max_lag + 1))
    block = max(1, _BLOCK_VALUES // n_fft)
    for lo in range(0, n, block):
        spec = scipy.fft.rfft(frames[lo : lo + block], n=n_fft, axis=-1)
        out[lo : lo + block] = scipy.fft.irfft(spec.real**2 + spec.imag**2, n=n_fft, axis=-1)[:, : max_lag + 1]
    out /= max(length, 1)
    power = float(out[:, 0].mean()) if n else 0.0
    out[:, 0] += NOISE_FLOOR * (power if power > 0 else 1.0)
    return out


def _ar_from_autocorr(R: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """AR fit (Levinson-Durbin, via scipy's ``solve_toeplitz``) from autocorrelations R (n, >= order + 1)."""
    a = np.zeros((len(R), order + 1))
    a[:, 0] = 1.0
    for i, r in enumerate(R):
        a[i, 1:] = -scipy.linalg.solve_toeplitz(r[:order], r[1 : order + 1], check_finite=False)
    # sigma^2 = a^T R a, the prediction error power: the quantity the SEM compares the residual power with
    sigma2 = np.einsum("nk,nk->n", a, R[:, : order + 1])
    return a, sigma2


def ar_fit(frames: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Order-``order`` AR model of each frame (autocorrelation method, Levinson-Durbin).

    ``frames`` (n, n_samples). Returns the inverse-filter coefficients ``a`` (n, order + 1) with ``a[:, 0] == 1``
    (so the residual is ``lfilter(a[i], [1], frame)``) and the prediction error power ``sigma2`` (n,).
    """
    frames = np.atleast_2d(np.asarray(frames, dtype=np.float64))
    if order < 1:
        raise ConfigError(f"AR order must be >= 1, not {order}")
    return _ar_from_autocorr(_autocorr(frames, order), order)


def _sem_from_autocorr(R: np.ndarray, a: np.ndarray, sigma2: np.ndarray, max_lag: int) -> np.ndarray:
    """SEM (n, n) of every ordered pair from window autocorrelations R (n, >= max_lag + p + 1) and AR fits."""
    n, p = len(R), a.shape[1] - 1
    # c[i, d] = sum_m a_i[m] a_i[m + d], d = 0..p; halved at d = 0 so that both signs of d fold into one sum
    c = np.stack([np.einsum("nm,nm->n", a[:, : p + 1 - d], a[:, d:]) for d in range(p + 1)], axis=1)
    c[:, 0] *= 0.5
    # H[k, j, d] = R_j[k + d] + R_j[|k - d|], so that r_e[i, k, j] = sum_d c[i, d] H[k, j, d]; lag-major
    # so each lag's block of the product is contiguous
    k = np.arange(max_lag + 1)[:, None, None]
    d = np.arange(p + 1)[None, None, :]
    j = np.arange(n)[None, :, None]
    Ht = np.ascontiguousarray((R[j, k + d] + R[j, np.abs(k - d)]).reshape(-1, p + 1).T)  # (p + 1, (M + 1) n)
    S = np.empty((n, n))
    block = max(1, _BLOCK_VALUES // (n * (max_lag + 1)))
    for lo in range(0, n, block):
        r = (c[lo : lo + block] @ Ht).reshape(-1, max_lag + 1, n)
        ssq = np.zeros((len(r), n))
        for lag in range(1, max_lag + 1):
            ssq += r[:, lag] ** 2
        r0 = r[:, 0]
        S[lo : lo + block] = (sigma2[lo : lo + block, None] / r0 - 1.0) ** 2 + 2.0 * ssq / r0**2
    return S


def _validate(y: np.ndarray, sr: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ConfigError(f"segmentation needs mono audio of shape (n,), not {y.shape}")
    if sr <= 0:
        raise ConfigError(f"sr must be positive, not {sr}")
    if y.size == 0:
        raise EmptyAudioError("the song has zero samples")
    if not np.isfinite(y).all():
        raise InvalidAudioError("the samples contain NaN or infinite values")
    return y


def analysis_signal(y: np.ndarray, sr: int, cfg: SegmentationConfig) -> tuple[np.ndarray, int]:
    """The song as the segmentation sees it: float64 at ``min(sr, cfg.sr)`` Hz (soxr, never upsampled)."""
    y = _validate(y, sr)
    if cfg.sr is None or cfg.sr >= sr:
        return y.astype(np.float64, copy=False), sr
    return soxr.resample(y.astype(np.float32, copy=False), sr, cfg.sr, quality="HQ").astype(np.float64), cfg.sr


def _frames(y: np.ndarray, sr: int, cfg: SegmentationConfig) -> tuple[np.ndarray, np.ndarray]:
    """Whole windows of ``y`` (n, window_samples) as a strided view, and their starts (s), shape (n,)."""
    win = max(1, int(round(cfg.window_seconds * sr)))
    hop = max(1, int(round(cfg.hop * sr)))
    n = (len(y) - win) // hop + 1 if len(y) >= win else 0
    frames = np.lib.stride_tricks.sliding_window_view(y, win)[::hop][:n] if n else np.zeros((0, win))
    return frames, np.arange(n) * hop / sr


def sem_matrix(y: np.ndarray, *, sr: int, cfg: SegmentationConfig) -> tuple[np.ndarray, np.ndarray]:
    """SEM of every ordered pair of windows of a mono song ``y`` (n,) at ``sr`` Hz.

    Returns ``S`` (n_windows, n_windows), row i the reference model, column j the filtered window (not
    symmetric; S[i, i] ~ 0), and the window starts in seconds, shape (n_windows,).
    """
    y, asr = analysis_signal(y, sr, cfg)
    frames, starts = _frames(y, asr, cfg)
    if len(frames) == 0:
        return np.zeros((0, 0)), starts
    R = _autocorr(frames, cfg.max_lag + cfg.order)
    a, sigma2 = _ar_from_autocorr(R, cfg.order)
    return _sem_from_autocorr(R, a, sigma2, cfg.max_lag), starts


def default_scale(S: np.ndarray, neighbours: int = DEFAULT_SCALE_NEIGHBOURS) -> float:
    """A song's own distance scale: the median, over windows, of the distance to their ``neighbours``-th
    nearest other window (Zelnik-Manor and Perona's local scale, made global). ``S`` (n, n), symmetric.
    """
    n = len(S)
    if n < 2:
        return 1.0
    off = S[~np.eye(n, dtype=bool)].reshape(n, n - 1)
    kth = np.partition(off, min(neighbours, n - 1) - 1, axis=1)[:, min(neighbours, n - 1) - 1]
    scale = float(np.median(kth))
    if not scale > 0:  # most windows have that many identical twins: fall back on the typical distance
        scale = float(np.median(off))
    if not scale > 0:
        scale = float(off.max()) if off.max() > 0 else 1.0
    return scale


def adjacency(S: np.ndarray, scale: float | None = None, *, neighbours: int = DEFAULT_SCALE_NEIGHBOURS) -> np.ndarray:
    """Adjacency (n, n) of a distance matrix ``S`` (n, n): ``exp(-(((S + S^T) / 2) / scale)^2)``, zero diagonal.

    ``scale=None`` uses :func:`default_scale` (``neighbours``) of the symmetrized S; ``scale=1`` is the study's.
    """
    S = np.asarray(S, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ConfigError(f"adjacency needs a square distance matrix, not shape {S.shape}")
    sym = 0.5 * (S + S.T)
    scale = default_scale(sym, neighbours) if scale is None else float(scale)
    if not scale > 0:
        raise ConfigError(f"adjacency scale must be positive, not {scale}")
    A = np.exp(-((sym / scale) ** 2))
    np.fill_diagonal(A, 0.0)
    return A


def _first_appearance(labels: np.ndarray) -> np.ndarray:
    """Renumber cluster labels 0, 1, ... in the order they first occur."""
    _, first = np.unique(labels, return_index=True)
    order = labels[np.sort(first)]
    remap = np.empty(labels.max() + 1, dtype=np.int64)
    remap[order] = np.arange(len(order))
    return remap[labels]


def spectral_clusters(A: np.ndarray, n_clusters: int | None = None, *, k_max: int = 8, seed: int = 0) -> np.ndarray:
    """Normalized spectral clustering (Ng, Jordan, Weiss) of an adjacency ``A`` (n, n).

    ``L = D^-1/2 A D^-1/2``; the rows of its ``k`` leading eigenvectors, scaled to unit length, go to k-means
    (``n_init=10``, ``random_state=seed``). ``n_clusters=None`` takes ``k`` at the largest eigen-gap
    ``lambda_k - lambda_{k+1}`` for k in 1..``k_max``. ``k`` is capped at n. Returns labels (n,) int64,
    numbered in order of first appearance (label 0 is the first window's cluster).
    """
    A = np.asarray(A, dtype=np.float64)
    n = len(A)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n_clusters is not None and n_clusters < 1:
        raise ConfigError(f"n_clusters must be >= 1, not {n_clusters}")
    k_top = min(n, (k_max + 1) if n_clusters is None else n_clusters)
    deg = A.sum(axis=1)
    inv = np.divide(1.0, np.sqrt(deg), out=np.zeros(n), where=deg > 0)
    L = inv[:, None] * A * inv[None, :]
    # LAPACK's subset driver, not Lanczos: a song whose parts share no adjacency at all (exp underflows to 0)
    # gives eigenvalue 1 several times over, which a Krylov method started from one vector does not resolve
    values, vectors = scipy.linalg.eigh(L, subset_by_index=[n - k_top, n - 1], driver="evx")
    values, vectors = values[::-1], vectors[:, ::-1]  # descending
    if n_clusters is None:
        gaps = values[:-1] - values[1:] if k_top > 1 else np.zeros(1)
        k = int(np.argmax(gaps[:k_max])) + 1
    else:
        k = min(n_clusters, n)
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    U = vectors[:, :k]
    norms = np.linalg.norm(U, axis=1, keepdims=True)
    U = np.divide(U, norms, out=np.zeros_like(U), where=norms > 0)
    from sklearn.cluster import KMeans  # imported here: half a second of every worker's start-up otherwise

    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(U)
    return _first_appearance(labels.astype(np.int64))


def _runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First window (n_runs,) and length (n_runs,) of each run of equal labels (n,)."""
    firsts = np.concatenate([[0], np.flatnonzero(labels[1:] != labels[:-1]) + 1])
    return firsts, np.diff(np.append(firsts, len(labels)))


def merge_short_runs(labels: np.ndarray, A: np.ndarray, min_windows: int) -> np.ndarray:
    """Relabel runs shorter than ``min_windows`` windows until none is left (unless one run is the whole song).

    The shortest run goes first; it joins the neighbouring run whose windows it is most adjacent to (mean of
    ``A`` (n, n) over the pairs). Returns labels (n,) numbered in order of first appearance.
    """
    labels = np.asarray(labels, dtype=np.int64).copy()
    while len(labels):
        firsts, lengths = _runs(labels)
        if len(firsts) < 2 or lengths.min() >= min_windows:
            break
        r = int(np.argmin(lengths))  # the first of the shortest
        run = slice(firsts[r], firsts[r] + lengths[r])
        best, best_score = -1, -np.inf
        for nb in (r - 1, r + 1):
            if 0 <= nb < len(firsts):
                score = A[run, firsts[nb] : firsts[nb] + lengths[nb]].mean()
                if score > best_score:
                    best, best_score = nb, score
        labels[run] = labels[firsts[best]]
    return _first_appearance(labels) if len(labels) else labels


def segments_from_labels(
    labels: np.ndarray, starts_s: np.ndarray, window_seconds: float, *, duration: float | None = None
) -> list[tuple[float, float, int]]:
    """Contiguous runs of one label as ``(start_s, end_s, cluster)`` segments tiling the song.

    Windows (n,) start at ``starts_s`` (n,). Two neighbouring runs meet half-way between the centres of their
    facing windows (the window boundary when windows do not overlap); the first run starts at the first window,
    the last ends at ``duration`` (default: the end of the last window).
    """
    labels = np.asarray(labels)
    starts = np.asarray(starts_s, dtype=np.float64)
    if len(labels) != len(starts):
        raise ConfigError(f"{len(labels)} labels for {len(starts)} window starts")
    if len(labels) == 0:
        return []
    firsts, _ = _runs(labels)
    cuts = [float(starts[0])]
    cuts += [float((starts[i - 1] + starts[i]) / 2 + window_seconds / 2) for i in firsts[1:]]
    end = float(starts[-1] + window_seconds)
    cuts.append(end if duration is None else max(end, float(duration)))
    return [(cuts[r], cuts[r + 1], int(labels[i])) for r, i in enumerate(firsts)]


def representative(y: np.ndarray, *, sr: int, cfg: SegmentationConfig | None = None) -> Segmentation:
    """Segment a mono song ``y`` (n,) at ``sr`` Hz and pick its representative part.

    The representative cluster is the one with most windows (ties: the earliest). A song too short for two
    windows is one segment, wholly representative. Raises ``EmptyAudioError`` / ``InvalidAudioError`` for an
    empty or non-finite ``y``.
    """
    cfg = cfg or SegmentationConfig()
    y = _validate(y, sr)
    duration = len(y) / sr
    S, starts = sem_matrix(y, sr=sr, cfg=cfg)
    n = len(starts)
    if n < 2:
        return Segmentation(
            S=S,
            A=np.zeros_like(S),
            labels=np.zeros(n, dtype=np.int64),
            starts_s=starts,
            window_seconds=cfg.window_seconds,
            duration=duration,
            scale=1.0,
            segments=[(0.0, duration, 0)],
            cluster=0,
            spans=[(0.0, duration)],
            keep_mask=np.ones(n, dtype=bool),
        )
    scale = default_scale(0.5 * (S + S.T), cfg.scale_neighbours) if cfg.scale is None else cfg.scale
    A = adjacency(S, scale)
    labels = spectral_clusters(A, cfg.n_clusters, k_max=cfg.k_max, seed=cfg.seed)
    if cfg.min_segment_seconds > 0:
        labels = merge_short_runs(labels, A, int(np.ceil(cfg.min_segment_seconds / cfg.hop - 1e-9)))
    segments = segments_from_labels(labels, starts, cfg.window_seconds, duration=duration)
    cluster = int(np.argmax(np.bincount(labels)))  # argmax takes the first (earliest) of equal counts
    runs = [(lo, hi) for lo, hi, c in segments if c == cluster]
    if cfg.representative == "longest_run":
        runs = [max(runs, key=lambda s: s[1] - s[0])]  # max keeps the first of equal lengths
    centres = starts + cfg.window_seconds / 2
    keep = np.zeros(n, dtype=bool)
    for lo, hi in runs:
        keep |= (labels == cluster) & (centres >= lo) & (centres < hi)
    return Segmentation(
        S=S,
        A=A,
        labels=labels,
        starts_s=starts,
        window_seconds=cfg.window_seconds,
        duration=duration,
        scale=float(scale),
        segments=segments,
        cluster=cluster,
        spans=runs,
        keep_mask=keep,
    )
