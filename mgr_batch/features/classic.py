"""The classic 58-value GTZAN feature vector (``features_30_sec.csv``): a librosa reference and a fast path.

Both functions take a mono waveform ``y`` (n_samples,) at ``sr`` Hz and return float64 (58,) in the order
of :data:`FEATURE_NAMES`: length in samples, then mean and variance over frames of chroma, RMS, spectral
centroid, bandwidth, rolloff, zero-crossing rate, the harmonic and percussive waveforms of HPSS, the
tempo (BPM) and MFCC 1..20. Frames are librosa's defaults: n_fft=2048, hop_length=512, centred.

:func:`gtzan_features_reference` is the straightforward librosa recipe the published table was made
with. :func:`gtzan_features` gives the same numbers (see ``tests/test_features_classic.py`` and
``benchmarks/features_classic.py`` for how close) several times faster: one STFT feeds every spectral
feature, the log-mel feeds both MFCC and the onset envelope, RMS and ZCR come from running sums, and
HPSS keeps librosa's exact 31-bin median filters but runs them as a sliding sorted window (numba).
"""

from __future__ import annotations

import functools

import librosa
import numba
import numpy as np
import scipy.fft
import scipy.ndimage
import torch

from mgr_batch.clips.windows import cut
from mgr_batch.features.spectral import dct_matrix, hann_window, mel_basis

#: librosa's defaults, which the published table used.
N_FFT = 2048
HOP_LENGTH = 512
N_MELS = 128
N_MFCC = 20
#: Median-filter length (bins and frames) of ``librosa.effects.hpss``.
HPSS_KERNEL = 31
ROLL_PERCENT = 0.85
#: librosa's ``zero_crossings`` treats |y| <= this as zero (and zero as positive).
ZC_THRESHOLD = 1e-10

#: The frame-wise series behind the vector, in its order (each gives a ``_mean`` and a ``_var``).
SERIES: tuple[str, ...] = (
    "chroma_stft",
    "rms",
    "spectral_centroid",
    "spectral_bandwidth",
    "rolloff",
    "zero_crossing_rate",
    "harmony",
    "perceptr",
)
FEATURE_NAMES: tuple[str, ...] = (
    "length",
    *(f"{name}_{stat}" for name in SERIES for stat in ("mean", "var")),
    "tempo",
    *(f"mfcc{i}_{stat}" for i in range(1, N_MFCC + 1) for stat in ("mean", "var")),
)


def _as_audio(y: np.ndarray) -> np.ndarray:
    """``y`` as contiguous float32 (what ``librosa.load`` gives, and what the table was made from)."""
    y = np.ascontiguousarray(y, dtype=np.float32)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"expected a non-empty mono waveform of shape (n_samples,), got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError("the waveform holds NaN or infinite samples")
    return y


def summarize(frames: dict[str, np.ndarray], *, length: int) -> np.ndarray:
    """The (58,) float64 vector of :func:`gtzan_frames`'s series: length, mean/var of each, tempo, per-MFCC mean/var."""
    stats = [s for name in SERIES for s in (np.mean(frames[name]), np.var(frames[name]))]
    mfcc = frames["mfcc"]
    mfcc_stats = np.stack([np.mean(mfcc, axis=-1), np.var(mfcc, axis=-1)], axis=-1).ravel()
    tempo = float(np.ravel(frames["tempo"])[0])
    return np.concatenate([[length], stats, [tempo], mfcc_stats]).astype(np.float64)


def gtzan_features_reference(y: np.ndarray, *, sr: int = 22050) -> np.ndarray:
    """The 58 features by plain librosa calls, as the published ``features_30_sec.csv`` was made.

    ``y`` is mono (n_samples,); it is cast to float32 first. Returns float64 (58,) in
    :data:`FEATURE_NAMES` order (``length`` in samples, tempo in BPM, frequencies in Hz).
    """
    y = _as_audio(y)
    harmony, perceptr = librosa.effects.hpss(y)
    tempo, _ = librosa.beat.beat_track(y=y, sr=sr)
    frames = {
        "chroma_stft": librosa.feature.chroma_stft(y=y, sr=sr),
        "rms": librosa.feature.rms(y=y),
        "spectral_centroid": librosa.feature.spectral_centroid(y=y, sr=sr),
        "spectral_bandwidth": librosa.feature.spectral_bandwidth(y=y, sr=sr),
        "rolloff": librosa.feature.spectral_rolloff(y=y, sr=sr),
        "zero_crossing_rate": librosa.feature.zero_crossing_rate(y),
        "harmony": harmony,
        "perceptr": perceptr,
        "tempo": tempo,
        "mfcc": librosa.feature.mfcc(y=y, sr=sr, n_mfcc=N_MFCC),
    }
    return summarize(frames, length=len(y))


def gtzan_features(y: np.ndarray, *, sr: int = 22050) -> np.ndarray:
    """The same 58 features as :func:`gtzan_features_reference`, from one STFT (several times faster).

    ``y`` is mono (n_samples,); it is cast to float32 first. Returns float64 (58,) in
    :data:`FEATURE_NAMES` order.
    """
    y = _as_audio(y)
    return summarize(gtzan_frames(y, sr=sr), length=len(y))


def gtzan_frames(y: np.ndarray, *, sr: int = 22050) -> dict[str, np.ndarray]:
    """The frame-wise series the fast features summarize, each as librosa would return it.

    Keys and shapes, with n_frames = 1 + n_samples // 512: ``chroma_stft`` (12, n_frames), ``rms``,
    ``spectral_centroid``, ``spectral_bandwidth``, ``rolloff`` (Hz) and ``zero_crossing_rate``
    (n_frames,), ``harmony`` and ``perceptr`` (n_samples,) waveforms, ``tempo`` () in BPM, ``mfcc``
    (20, n_frames).
    """
    y = _as_audio(y)
    D = _stft(y)  # (1 + n_fft // 2, n_frames) complex64
    S = np.abs(D)  # magnitude: centroid, bandwidth, rolloff, HPSS
    power = np.square(S)  # power: chroma, mel
    centroid, bandwidth = _centroid_bandwidth(S, sr=sr)
    log_mel = librosa.power_to_db(mel_basis(sr, N_FFT, N_MELS).numpy() @ power)
    # beat_track's onset envelope: the median (not mean) over mel bands of the positive log-mel flux.
    onset_envelope = librosa.onset.onset_strength(S=log_mel, sr=sr, aggregate=np.median)
    harmony = _harmonic(D, S, length=len(y))
    return {
        "chroma_stft": librosa.feature.chroma_stft(S=power, sr=sr),
        "rms": _rms(y),
        "spectral_centroid": centroid,
        "spectral_bandwidth": bandwidth,
        "rolloff": _rolloff(S, sr=sr),
        "zero_crossing_rate": _zcr(y),
        "harmony": harmony,
        # The two soft masks sum to 1 in every bin, so the percussive waveform is what the harmonic leaves.
        "perceptr": y - harmony,
        "tempo": np.asarray(
            float(librosa.feature.tempo(onset_envelope=onset_envelope, sr=sr, hop_length=HOP_LENGTH)[0])
        ),
        "mfcc": dct_matrix(N_MELS, N_MFCC).numpy() @ log_mel,  # librosa.feature.mfcc(S=log_mel), first N_MFCC rows
    }


def gtzan_features_windows(
    y: np.ndarray, *, sr: int = 22050, window_seconds: float = 3.0, hop_seconds: float = 3.0
) -> np.ndarray:
    """The 58 features of each ``window_seconds`` window every ``hop_seconds`` (the "3 s" table variant).

    Windows are :func:`mgr_batch.clips.windows.cut`'s: every window that fits whole, and one zero-padded window
    for audio shorter than ``window_seconds``. Each window is featurized on its own (its own STFT,
    tuning and tempo), as the published 3 s table was. Returns float64 (n_windows, 58).
    """
    y = _as_audio(y)
    windows, _ = cut(y, sr=sr, clip_seconds=window_seconds, hop_seconds=hop_seconds)
    return np.stack([gtzan_features(w, sr=sr) for w in windows])


# ---------------------------------------------------------------------------------------------------
# The fast path's pieces. Each reproduces one librosa default on a shared STFT or a running sum.


@functools.lru_cache(maxsize=8)
def _moments_matrix(sr: int, n_fft: int) -> np.ndarray:
    """[1, f, f**2] over the FFT bins, shape (3, 1 + n_fft // 2), float64: weights for spectral moments."""
    freq = librosa.fft_frequencies(sr=sr, n_fft=n_fft)
    return np.stack([np.ones_like(freq), freq, freq**2])


def _stft(y: np.ndarray) -> np.ndarray:
    """``librosa.stft(y)`` with its defaults (centred, zero padding, periodic Hann): (1 + n_fft // 2, n_frames)."""
    D = torch.stft(
        torch.from_numpy(y),
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        window=hann_window(N_FFT),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    return D.numpy()


def _istft(D: np.ndarray, *, length: int) -> np.ndarray:
    """``librosa.istft(D, length=length)`` for :func:`_stft`'s parameters: (length,) float32."""
    y = torch.istft(
        torch.from_numpy(D), n_fft=N_FFT, hop_length=HOP_LENGTH, window=hann_window(N_FFT), center=True, length=length
    )
    return y.numpy()


def _centroid_bandwidth(S: np.ndarray, *, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Spectral centroid and bandwidth (p=2) in Hz of a magnitude spectrogram S (bins, frames): (frames,) each.

    Both from the first three moments of each column (one matrix product); all-zero columns give 0 like
    librosa's ``normalize`` (which leaves columns below float32's ``tiny`` unscaled).
    """
    m0, m1, m2 = _moments_matrix(sr, 2 * (S.shape[0] - 1)) @ S
    norm = np.where(m0 < np.finfo(S.dtype).tiny, 1.0, m0)
    e0, e1, e2 = m0 / norm, m1 / norm, m2 / norm
    centroid = e1
    # sum(S_norm (f - c)^2) expanded; clipped because the difference can round below zero.
    bandwidth = np.sqrt(np.maximum(e2 - 2 * centroid * e1 + centroid**2 * e0, 0.0))
    return centroid, bandwidth


def _rolloff(S: np.ndarray, *, sr: int) -> np.ndarray:
    """Frequency (Hz) below which ``ROLL_PERCENT`` of each column's magnitude lies: (frames,).

    The lowest bin whose cumulative sum reaches the threshold, in float32 like librosa, so it is the same bin.
    """
    total = np.cumsum(S, axis=0)
    reached = total >= ROLL_PERCENT * total[-1]
    return librosa.fft_frequencies(sr=sr, n_fft=2 * (S.shape[0] - 1))[np.argmax(reached, axis=0)]


def _frame_sums(x: np.ndarray, *, frame_length: int, hop_length: int) -> np.ndarray:
    """Sums of ``x`` over frames ``[t * hop_length, t * hop_length + frame_length)``, from one cumulative sum."""
    c = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    starts = np.arange(0, len(x) - frame_length + 1, hop_length)
    return c[starts + frame_length] - c[starts]


def _rms(y: np.ndarray) -> np.ndarray:
    """``librosa.feature.rms(y=y)``: root mean square of centred, zero-padded frames, shape (n_frames,)."""
    pad = N_FFT // 2
    yp = np.pad(y.astype(np.float64), pad)
    return np.sqrt(_frame_sums(yp * yp, frame_length=N_FFT, hop_length=HOP_LENGTH) / N_FFT)


def _zcr(y: np.ndarray) -> np.ndarray:
    """``librosa.feature.zero_crossing_rate(y)``: crossings inside each edge-padded frame / frame length.

    A crossing at sample i is a sign-bit change from sample i - 1 (|y| <= 1e-10 counts as +0); a frame of
    ``N_FFT`` samples holds the ``N_FFT - 1`` pairs that start inside it. Shape (n_frames,).
    """
    pad = N_FFT // 2
    yp = np.pad(y, pad, mode="edge")
    yp = np.where(np.abs(yp) <= ZC_THRESHOLD, 0.0, yp)
    sign = np.signbit(yp)
    crossing = np.concatenate([[False], sign[1:] != sign[:-1]])
    # Pairs (i - 1, i) with both samples in the frame: i in [start + 1, start + N_FFT - 1].
    counts = _frame_sums(crossing[1:], frame_length=N_FFT - 1, hop_length=HOP_LENGTH)
    return counts / N_FFT


def _harmonic(D: np.ndarray, S: np.ndarray, *, length: int) -> np.ndarray:
    """Harmonic waveform of ``librosa.effects.hpss``: soft mask (power 2) from 31-bin median filters.

    ``D`` is the complex STFT, ``S = |D|``; returns (length,) float32.
    """
    harm = median_filter_rows(S, HPSS_KERNEL)  # along time: sustained partials
    perc = median_filter_rows(np.ascontiguousarray(S.T), HPSS_KERNEL).T  # along frequency: broadband hits
    # librosa.util.softmask(harm, perc, power=2, split_zeros=True) = 1 / (1 + (perc / harm)^2), with 0.5
    # where both are zero; written in place, as it runs over every bin.
    with np.errstate(divide="ignore", invalid="ignore"):
        mask = np.divide(perc, harm)
        np.square(mask, out=mask)
        mask += 1.0
        np.reciprocal(mask, out=mask)
    mask[np.isnan(mask)] = 0.5
    return _istft(D * mask, length=length)


def median_filter_rows(x: np.ndarray, size: int) -> np.ndarray:
    """Running median of odd ``size`` along the last axis of a 2-D array, edges mirrored.

    Equal to ``scipy.ndimage.median_filter(x, size=(1, size), mode="reflect")`` (bit for bit) and about
    10x faster: each row keeps a sorted window and moves one value per step. Shape and dtype of ``x``.
    """
    if size % 2 != 1:
        raise ValueError(f"size must be odd, got {size}")
    x = np.ascontiguousarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {x.shape}")
    if x.shape[1] <= size:  # rows shorter than the kernel mirror more than once; leave those to scipy
        return scipy.ndimage.median_filter(x, size=(1, size), mode="reflect")
    return _median_rows(x, size)


@numba.njit(cache=True, nogil=True)
def _median_rows(x, size):  # pragma: no cover - compiled
    rows, n = x.shape
    h = size // 2
    out = np.empty_like(x)
    padded = np.empty(n + 2 * h, dtype=x.dtype)
    win = np.empty(size, dtype=x.dtype)
    for r in range(rows):
        for i in range(h):  # scipy's "reflect": d c b a | a b c d | d c b a (n > size, so one mirror)
            padded[h - 1 - i] = x[r, i]
            padded[h + n + i] = x[r, n - 1 - i]
        for i in range(n):
            padded[h + i] = x[r, i]
        for j in range(size):
            win[j] = padded[j]
        win.sort()
        out[r, 0] = win[h]
        for i in range(1, n):
            old = padded[i - 1]
            new = padded[i + size - 1]
            # Drop ``old`` and insert ``new`` in one pass, shifting the values between them.
            if new > old:
                p = 0
                while win[p] < old:
                    p += 1
                while p + 1 < size and win[p + 1] < new:
                    win[p] = win[p + 1]
                    p += 1
            else:
                p = size - 1
                while win[p] > old:
                    p -= 1
                while p > 0 and win[p - 1] > new:
                    win[p] = win[p - 1]
                    p -= 1
            win[p] = new
            out[r, i] = win[h]
    return out
