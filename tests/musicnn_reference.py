"""musicnn's own front end, ported for the fidelity tests: resampy 0.2's kaiser_best resampler and the original's
float16 log-mel and 3 s patches. mgr-batch computes musicnn's input with its own log-mel
(:mod:`mgr_batch.features.musicnn`); these reproduce the original's inputs bit for bit, so that the network port
can be checked against the reference outputs of the original."""

from __future__ import annotations

import functools

import librosa
import numpy as np

from mgr_batch.errors import ConfigError, EmptyAudioError
from mgr_batch.models.musicnn import HOP_LENGTH, N_FFT, N_FRAMES, N_MELS, SR


@functools.lru_cache(maxsize=1)
def _kaiser_best_window() -> np.ndarray:
    # resampy 0.2's precomputed "kaiser_best" (its data/kaiser_best.npz, to within 2e-16): the right
    # half of a sinc with 64 zero crossings, 512 taps per crossing, Kaiser window, roll-off 0.9476
    import scipy.signal

    num_zeros, num_table, beta, rolloff = 64, 512, 14.769656459379492, 0.9475937167399596
    n = num_zeros * num_table
    sinc = rolloff * np.sinc(rolloff * np.linspace(0, num_zeros, num=n + 1, endpoint=True))
    return scipy.signal.windows.kaiser(2 * n + 1, beta)[n:] * sinc


def _resample_loop_py(x, time_register, win, delta, num_table, scale, out):  # pragma: no cover (compiled)
    # resampy 0.2.1's resample_f, one channel; the float32 accumulator is rounded after every tap
    # exactly as resampy's ``y[t] += weight * x[...]`` into a float32 array is
    index_step = int(scale * num_table)
    n_win = win.shape[0]
    n_orig = x.shape[0]
    for t in range(out.shape[0]):
        n = int(time_register[t])
        frac = scale * (time_register[t] - n)
        index_frac = frac * num_table
        offset = int(index_frac)
        eta = index_frac - offset
        acc = out[t]
        for i in range(min(n + 1, (n_win - offset) // index_step)):  # left wing
            acc = np.float32(acc + (win[offset + i * index_step] + eta * delta[offset + i * index_step]) * x[n - i])
        index_frac = (scale - frac) * num_table
        offset = int(index_frac)
        eta = index_frac - offset
        for k in range(min(n_orig - n - 1, (n_win - offset) // index_step)):  # right wing
            acc = np.float32(acc + (win[offset + k * index_step] + eta * delta[offset + k * index_step]) * x[n + k + 1])
        out[t] = acc


@functools.lru_cache(maxsize=1)
def _resample_loop():
    import numba

    return numba.njit(nogil=True)(_resample_loop_py)


def resample_kaiser_best(y: np.ndarray, *, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample mono ``y`` as librosa < 0.10 did by default: resampy 0.2's ``kaiser_best`` filter.

    A port of ``resampy.resample`` 0.2.1 (band-limited sinc interpolation; resampy is ISC-licensed,
    by Brian McFee) followed by librosa's length fix to ``ceil(n_samples * target_sr / orig_sr)``;
    bit-identical to ``librosa.resample`` 0.7 with resampy 0.2.1, which musicnn's training and
    extractor used. Later resamplers roll off differently near Nyquist, which shifts musicnn's top
    mel bands and its tag probabilities noticeably. Float32 in and out; a few tenths of a second for
    30 s of 22.05 kHz audio, plus a one-off numba compilation of about a second.
    """
    x = np.ascontiguousarray(y, dtype=np.float32)
    ratio = float(target_sr) / orig_sr
    n_out = int(x.shape[0] * ratio)
    win = _kaiser_best_window()
    if ratio < 1:
        win = ratio * win
    delta = np.append(np.diff(win), 0.0)
    # resampy steps a float64 time register by 1 / ratio; cumsum adds in the same order, so every
    # output lands on the same sample and filter phase
    time = np.concatenate([[0.0], np.cumsum(np.full(max(n_out - 1, 0), 1.0 / ratio))])
    out = np.zeros(n_out, dtype=np.float32)
    _resample_loop()(x, time, win, delta, 512, min(1.0, ratio), out)
    n_fixed = int(np.ceil(x.shape[0] * ratio))
    return np.pad(out, (0, max(0, n_fixed - n_out)))[:n_fixed]


def musicnn_logmel(y: np.ndarray, *, sr: int, res_type: str = "kaiser_best") -> np.ndarray:
    """musicnn's compressed mel spectrogram of a whole mono signal: (N_MELS, n_frames) float32.

    As ``musicnn.extractor.batch_data``: resample to 16 kHz, 96-band Slaney mel power spectrogram
    (n_fft 512, hop 256, periodic Hann, centred frames with reflect padding), rounded to float16, then
    ``log10(10000 * x + 1)`` in float32. n_frames = 1 + n_samples_16k // 256.

    ``res_type`` picks the resampler when ``sr != 16000``: ``"kaiser_best"`` (default) is
    :func:`resample_kaiser_best`, what the original used; anything else is passed to
    ``librosa.resample`` (e.g. ``"soxr_hq"``, librosa's default today: faster, but its different
    roll-off above 7 kHz moved the tag probabilities of the test songs by up to 0.09 per patch).
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ConfigError(f"musicnn features need mono audio of shape (n_samples,), got {y.shape}")
    if y.size == 0:
        raise EmptyAudioError("no samples to compute musicnn features from")
    if sr != SR:
        if res_type == "kaiser_best":
            y = resample_kaiser_best(y, orig_sr=sr, target_sr=SR)
        else:
            y = librosa.resample(y, orig_sr=sr, target_sr=SR, res_type=res_type)
    mel = librosa.feature.melspectrogram(
        y=y, sr=SR, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=N_MELS, center=True, pad_mode="reflect"
    )
    # musicnn stored spectrograms as float16 (the models were trained on them) and, under numpy 1's
    # value-based casting, took the log in float32; both roundings matter to match it.
    mel = mel.astype(np.float16).astype(np.float32)
    return np.log10(np.float32(10000) * mel + np.float32(1))


def musicnn_patches(logmel: np.ndarray, *, n_frames: int = N_FRAMES, hop_frames: int | None = None) -> np.ndarray:
    """Cut a (n_mels, total_frames) spectrogram into (n_patches, n_mels, n_frames) patches.

    Patches start every ``hop_frames`` (default ``n_frames``: no overlap, musicnn's default) and a last
    partial patch is dropped, as in the original. A spectrogram shorter than one patch is repeated
    along time to fill it, so every input gives at least one patch (the original extractor fails on
    such input; repeating follows the ``"pad_short": "repeat-pad"`` of musicnn's training config).
    """
    hop_frames = hop_frames or n_frames
    total = logmel.shape[-1]
    if total < n_frames:
        logmel = np.tile(logmel, (1, -(-n_frames // total)))[:, :n_frames]
        total = n_frames
    starts = range(0, total - n_frames + 1, hop_frames)
    return np.stack([logmel[:, s : s + n_frames] for s in starts]).astype(np.float32, copy=False)


def musicnn_features(
    y: np.ndarray, *, sr: int, n_frames: int = N_FRAMES, hop_frames: int | None = None, res_type: str = "kaiser_best"
) -> np.ndarray:
    """A song's musicnn model inputs: (n_patches, N_MELS, n_frames) float32, 3 s patches by default.

    :func:`musicnn_logmel` then :func:`musicnn_patches`; the patches of ``musicnn.extractor`` with
    ``input_overlap=False``, transposed to (mel, time).
    """
    return musicnn_patches(musicnn_logmel(y, sr=sr, res_type=res_type), n_frames=n_frames, hop_frames=hop_frames)
