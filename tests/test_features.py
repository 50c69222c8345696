"""mgr_batch.features.registry: log-mel shape, agreement with librosa, a tone in the right mel bin, batching."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from mgr_batch.config import AudioConfig, ClipConfig, FeatureConfig
from mgr_batch.errors import ConfigError
from mgr_batch.features import presets, spectral
from mgr_batch.features import registry as features


def white_noise(n: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def sine(freq: float, n: int, sr: int, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(n) / sr)).astype(np.float32)


@pytest.mark.parametrize("n_samples", [1, 511, 512, 513, 22050, 66150])
@pytest.mark.parametrize("hop_length", [256, 512, 1024])
@pytest.mark.parametrize("n_mels", [32, 128])
def test_shape(n_samples, hop_length, n_mels):
    y = white_noise(n_samples)
    out = spectral.log_mel(y, sr=22050, n_fft=1024, hop_length=hop_length, n_mels=n_mels)
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float32
    assert out.shape == (n_mels, 1 + n_samples // hop_length)
    assert spectral.n_frames(n_samples, hop_length=hop_length) == out.shape[1]


@pytest.mark.parametrize(
    "sr, n_fft, hop_length, n_mels, fmin, fmax",
    [
        (22050, 2048, 512, 128, 0.0, None),
        (22050, 1024, 256, 64, 50.0, 8000.0),
        (16000, 512, 160, 40, 0.0, None),
        (22050, 2048, 1024, 32, 0.0, None),
        (44100, 4096, 1024, 96, 20.0, 16000.0),
    ],
)
def test_agrees_with_librosa(sr, n_fft, hop_length, n_mels, fmin, fmax):
    # White noise keeps every mel band far above float32 round-off, so the comparison is meaningful in dB.
    y = white_noise(sr)
    ours = spectral.log_mel(y, sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, fmin=fmin, fmax=fmax)
    mel = librosa.feature.melspectrogram(
        y=y.astype(np.float64), sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, fmin=fmin, fmax=fmax
    )
    reference = librosa.power_to_db(mel, ref=1.0, top_db=None)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, atol=1e-3, rtol=0)


def test_silence_is_the_amin_floor():
    out = spectral.log_mel(np.zeros(4096, np.float32), sr=22050)
    np.testing.assert_allclose(out, 10 * np.log10(spectral.AMIN))


@pytest.mark.parametrize("freq", [250.0, 1000.0, 4000.0])
@pytest.mark.parametrize("n_mels", [32, 64, 128])
def test_a_tone_peaks_in_the_mel_bin_nearest_its_frequency(freq, n_mels):
    sr = 22050
    out = spectral.log_mel(sine(freq, sr, sr), sr=sr, n_mels=n_mels)
    centres = librosa.mel_frequencies(n_mels=n_mels + 2, fmin=0.0, fmax=sr / 2)[1:-1]
    profile = out[:, 2:-2].mean(axis=1)  # leave out the zero-padded edge frames
    assert int(np.argmax(profile)) == int(np.argmin(np.abs(centres - freq)))


def test_louder_by_20_db_is_20_db_higher():
    y = sine(1000.0, 22050, 22050, amplitude=0.05)
    quiet = spectral.log_mel(y, sr=22050, n_mels=64)
    loud = spectral.log_mel(10 * y, sr=22050, n_mels=64)
    peak = int(np.argmax(quiet[:, 5]))
    assert loud[peak, 5] - quiet[peak, 5] == pytest.approx(20.0, abs=1e-3)


def test_batched_equals_per_clip():
    cfg = FeatureConfig(n_mels=48, hop_length=512, n_fft=1024)
    batch = np.stack([white_noise(8000, seed=s) for s in range(4)] + [sine(440.0, 8000, 22050)])
    together = features.featurize(batch, sr=22050, cfg=cfg)
    assert together.shape == (5, 48, 1 + 8000 // 512)
    for k, clip in enumerate(batch):
        np.testing.assert_allclose(together[k], features.featurize(clip[None], sr=22050, cfg=cfg)[0], atol=1e-4)
        np.testing.assert_allclose(
            together[k], spectral.log_mel(clip, sr=22050, n_fft=1024, hop_length=512, n_mels=48), atol=1e-4
        )


@pytest.mark.parametrize(
    ("sr", "n_fft", "n_mels", "fmin", "fmax"),
    [
        (22050, 2048, 128, 0.0, None),
        (16000, 512, 96, 0.0, None),
        (22050, 1024, 40, 300.0, 5000.0),
        (8000, 256, 60, 0.0, None),
    ],
)
def test_banded_mel_product_equals_the_dense_one(sr, n_fft, n_mels, fmin, fmax):
    # (8000, 256, 60): so many bands for so few bins that some filters are all zero
    power = torch.from_numpy(np.abs(white_noise(3 * (1 + n_fft // 2) * 7)).reshape(3, 1 + n_fft // 2, 7))
    dense = torch.from_numpy(librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)) @ power
    banded = spectral.mel_power(power, sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert banded.shape == (3, n_mels, 7)
    np.testing.assert_allclose(banded.numpy(), dense.numpy(), rtol=1e-5, atol=1e-7 * float(dense.max()))
    bands = spectral._mel_bands(sr, n_fft, n_mels, fmin, fmax)
    assert sum(w.numel() for _, _, w in bands) < n_mels * (1 + n_fft // 2)  # it skips the zeros


def test_many_clips_are_transformed_a_few_at_a_time_with_the_same_result(monkeypatch):
    clips = np.stack([white_noise(4096, seed=i) for i in range(7)])
    whole = spectral.log_mel(clips, sr=22050, n_fft=512, hop_length=256, n_mels=16)
    one_stft = 8 * 257 * (1 + 4096 // 256)
    monkeypatch.setattr(spectral, "STFT_CHUNK_BYTES", 3 * one_stft)  # chunks of 3, 3 and 1 clips
    np.testing.assert_allclose(
        spectral.log_mel(clips, sr=22050, n_fft=512, hop_length=256, n_mels=16), whole, atol=1e-5
    )
    monkeypatch.setattr(spectral, "STFT_CHUNK_BYTES", 1)  # never less than one clip
    chunked = spectral.stft_spectrogram(clips.reshape(7, 1, 4096), n_fft=512, hop_length=256)
    assert chunked.shape == (7, 1, 257, 17)
    np.testing.assert_allclose(chunked[4, 0], spectral.stft_spectrogram(clips[4], n_fft=512, hop_length=256), atol=1e-4)


def test_leading_dimensions_are_kept():
    y = white_noise(2 * 3 * 4096).reshape(2, 3, 4096)
    out = spectral.log_mel(y, sr=22050, n_mels=16, hop_length=1024)
    assert out.shape == (2, 3, 16, 5)
    np.testing.assert_allclose(out[1, 2], spectral.log_mel(y[1, 2], sr=22050, n_mels=16, hop_length=1024), atol=1e-4)


def test_torch_in_torch_out():
    y = white_noise(4096)
    out = spectral.log_mel(torch.from_numpy(y), sr=22050, n_mels=16)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), spectral.log_mel(y, sr=22050, n_mels=16), atol=1e-5)


@pytest.mark.parametrize(
    "clip_seconds, sr, n_mels, hop_length, expected",
    [(3.0, 22050, 128, 512, (128, 130)), (3.0, 22050, 32, 1024, (32, 65)), (1.0, 16000, 40, 160, (40, 101))],
)
def test_feature_shape(clip_seconds, sr, n_mels, hop_length, expected):
    cfg = FeatureConfig(n_mels=n_mels, hop_length=hop_length)
    assert features.feature_shape(sr=sr, clip_seconds=clip_seconds, cfg=cfg) == expected
    clip = white_noise(int(round(clip_seconds * sr)))[None]
    assert features.featurize(clip, sr=sr, cfg=cfg).shape[1:] == expected


def test_unknown_feature_kind_is_rejected():
    with pytest.raises(ConfigError, match="unknown feature kind 'chroma'.*mfcc"):
        features.featurize(np.zeros((1, 1024), np.float32), sr=22050, cfg=FeatureConfig(kind="chroma"))
    with pytest.raises(ConfigError, match="scale"):
        FeatureConfig(scale="cubic")


# --- the other feature kinds ------------------------------------------------------------------------


def test_stft_is_librosa_power_spectrogram_in_db():
    y = white_noise(20000) + sine(500.0, 20000, 4000)
    ours = spectral.stft_spectrogram(y, n_fft=1024, hop_length=920)
    ref = np.abs(librosa.stft(y, n_fft=1024, hop_length=920, center=True, pad_mode="constant")) ** 2
    assert ours.shape == (513, 22)
    np.testing.assert_allclose(ours, librosa.power_to_db(ref, top_db=None), atol=2e-3)
    assert np.argmax(ours.mean(axis=1)) == round(500 / 4000 * 1024)  # the tone's bin


@pytest.mark.parametrize("n_mfcc, n_mels", [(20, 128), (13, 40)])
def test_mfcc_matches_librosa(n_mfcc, n_mels):
    y = white_noise(22050, seed=3) + sine(440.0, 22050, 22050)
    ours = spectral.mfcc(y, sr=22050, n_mfcc=n_mfcc, n_mels=n_mels)
    mel = librosa.feature.melspectrogram(y=y, sr=22050, n_mels=n_mels, pad_mode="constant")
    ref = librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), n_mfcc=n_mfcc)
    assert ours.shape == ref.shape == (n_mfcc, 44)
    np.testing.assert_allclose(ours, ref, atol=2e-3 * np.abs(ref).max())


def test_scales_are_the_same_mel_power():
    y = white_noise(8192, seed=4)
    db = spectral.log_mel(y, sr=22050, n_mels=32)
    power = 10.0 ** (db.astype(np.float64) / 10)
    np.testing.assert_allclose(
        spectral.log_mel(y, sr=22050, n_mels=32, scale="log"), np.log(power), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(
        spectral.log_mel(y, sr=22050, n_mels=32, scale="log1p"), np.log10(1 + 10000 * power), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(spectral.log_mel(y, sr=22050, n_mels=32, scale="linear"), np.sqrt(power), rtol=1e-3)


def test_raw_is_the_waveform():
    clips = np.stack([white_noise(100, seed=i) for i in range(3)])
    out = features.featurize(clips, sr=8000, cfg=FeatureConfig(kind="raw"))
    assert out.shape == (3, 1, 100) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], clips)


def test_classic58_is_the_gtzan_vector_of_each_clip():
    from mgr_batch.features.classic import gtzan_features

    clips = np.stack([white_noise(3 * 22050, seed=5), sine(220.0, 3 * 22050, 22050) + white_noise(3 * 22050)])
    out = features.featurize(clips, sr=22050, cfg=FeatureConfig(kind="classic58"))
    assert out.shape == (2, 58, 1)
    np.testing.assert_allclose(out[1, :, 0], gtzan_features(clips[1], sr=22050).astype(np.float32), rtol=1e-6)


@pytest.mark.parametrize("window_seconds, n_windows", [(3.0, 4), (6.0, 2), (9.0, 1)])
def test_classic58_seq_is_one_vector_per_window(window_seconds, n_windows):
    from mgr_batch.features.classic import gtzan_features

    sr, seconds = 8000, 12.0
    clip = (white_noise(int(seconds * sr), seed=6) + sine(300.0, int(seconds * sr), sr))[None]
    cfg = FeatureConfig(kind="classic58_seq", window_seconds=window_seconds)
    out = features.featurize(clip, sr=sr, cfg=cfg)
    assert out.shape == (1, 58, n_windows) == (1, *features.feature_shape(sr=sr, clip_seconds=seconds, cfg=cfg))
    w = int(window_seconds * sr)
    np.testing.assert_allclose(out[0, :, 0], gtzan_features(clip[0, :w], sr=sr).astype(np.float32), rtol=1e-5)


@pytest.mark.parametrize(
    "name", sorted(set(presets.PRESETS) - {"classic58_30s", "classic58_seq3", "classic58_seq6", "classic58_seq9"})
)
def test_every_preset_featurizes_to_its_declared_shape(name):
    audio, clips, cfg = presets.preset(name).apply(AudioConfig(), ClipConfig(), FeatureConfig())
    n = int(round(clips.clip_seconds * audio.sr))
    out = features.featurize(white_noise(n)[None], sr=audio.sr, cfg=cfg)
    assert out.shape[1:] == features.feature_shape(sr=audio.sr, clip_seconds=clips.clip_seconds, cfg=cfg)
    assert np.isfinite(out).all()


def test_study_shapes():
    audio, clips, cfg = presets.preset("stft4k").apply(AudioConfig(), ClipConfig(), FeatureConfig())
    assert features.feature_shape(sr=audio.sr, clip_seconds=clips.clip_seconds, cfg=cfg) == (513, 22)
    audio, clips, cfg = presets.preset("classic58_seq3").apply(AudioConfig(), ClipConfig(), FeatureConfig())
    assert features.feature_shape(sr=audio.sr, clip_seconds=clips.clip_seconds, cfg=cfg) == (58, 10)
    with pytest.raises(ConfigError, match="unknown feature preset"):
        presets.preset("nope")


def test_long_batches_are_featurized_in_chunks_with_the_same_result():
    clips = np.stack([white_noise(4096, seed=i) for i in range(features.CHUNK_CLIPS + 5)])
    cfg = FeatureConfig(n_mels=16, n_fft=512, hop_length=256)
    together = features.featurize(clips, sr=22050, cfg=cfg)
    np.testing.assert_allclose(together[-5:], features.featurize(clips[-5:], sr=22050, cfg=cfg), atol=1e-4)


def test_classic58_seq_puts_a_short_songs_padding_first():
    from mgr_batch.features.classic import gtzan_features

    sr, w = 8000, 8000  # 1 s windows of a 4 s clip holding 1.5 s of audio, then zeros
    audio = white_noise(int(1.5 * sr), seed=7) + sine(300.0, int(1.5 * sr), sr)
    clip = np.concatenate([audio, np.zeros(4 * sr - len(audio), np.float32)])
    out = features.featurize(clip[None], sr=sr, cfg=FeatureConfig(kind="classic58_seq", window_seconds=1.0))[0]
    assert out.shape == (58, 4)
    np.testing.assert_array_equal(out[0], [0, 0, w, len(audio) - w])  # length: samples of audio per window
    assert not out[1:17, :2].any() and out[1:17, 2:].all()  # padding windows first, then the audio's
    np.testing.assert_allclose(out[1:, 2], gtzan_features(clip[:w], sr=sr)[1:].astype(np.float32), rtol=1e-5)
    np.testing.assert_allclose(out[1:, 3], gtzan_features(clip[w : 2 * w], sr=sr)[1:].astype(np.float32), rtol=1e-5)


def test_every_pretrained_kind_and_preset_is_known_without_importing_its_network_first():
    """The registry loads a pre-trained kind's module on first use; the presets name each network's own rate
    (written there as numbers, so that building a config imports no network code)."""
    from mgr_batch.features import efficientat, musicnn, presets, registry, stacked

    assert set(registry.PRETRAINED) <= set(registry.all_kinds())
    assert presets.preset("musicnn_embedding").audio["sr"] == musicnn.SR
    assert presets.preset("efficientat").audio["sr"] == presets.preset("efficientat_embedding").audio["sr"]
    assert presets.preset("efficientat_embedding").audio["sr"] == efficientat.SR
    assert presets.preset("musicnn_efficientat").features["params"]["parts"] == list(stacked.DEFAULT_PARTS)
    for p in presets.PRESETS.values():
        registry.feature_kind(p.features["kind"])  # every preset names a known kind
    with pytest.raises(ConfigError, match="stacked_embedding"):
        registry.feature_kind("nonesuch")  # the error lists the kinds not loaded yet too


def test_a_preset_keeps_the_feature_fields_it_does_not_set():
    from mgr_batch.config import AudioConfig, ClipConfig, FeatureConfig
    from mgr_batch.features import presets

    _, _, features = presets.preset("mfcc").apply(AudioConfig(), ClipConfig(), FeatureConfig(fmin=30.0))
    assert (features.kind, features.n_mfcc, features.fmin) == ("mfcc", 20, 30.0)
