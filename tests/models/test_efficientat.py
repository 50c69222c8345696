"""mgr_batch.models.efficientat: the front end, the network's shapes, pre-trained loading, and fidelity to the
original EfficientAT.

tests/fixtures/efficientat_reference.json is ``reference_outputs.json`` of ../shared/models/efficientat: what the
original implementation (fschmid56/EfficientAT at a425fdc, eval mode, float32 on CPU) output for a synthetic
signal given by a formula and for the first 10 s of five GTZAN songs. Tolerance 1e-4 on the 527 logits and the
384-value embedding (measured when the port was made: at most 1.2e-5 and 3.4e-6), on the log-mel's mean and
standard deviation (measured 3e-6) and first frame (measured 4e-6).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mgr_batch.errors import ConfigError, EmptyAudioError
from mgr_batch.models import MODELS, build_model
from mgr_batch.models.efficientat import (
    EMBEDDING_DIMS,
    N_AUDIOSET,
    N_MELS,
    SR,
    EfficientAT,
    MobileNetAT,
    audioset_labels,
    efficientat_logmel,
    kaldi_mel_banks,
    load_pretrained_state,
    n_frames,
    pretrained_network,
    pretrained_path,
)

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "efficientat_reference.json"
TOL = 1e-4


@functools.cache
def reference() -> dict:
    return json.loads(FIXTURE.read_text())


@functools.cache
def network() -> MobileNetAT:
    return pretrained_network()


def synthetic() -> np.ndarray:
    """The synthetic case's input, by its formula: 0.3 sin(2 pi 440 t) + 0.05 N(0, 1), 10 s at 32 kHz."""
    t = np.arange(320000) / 32000
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(0).standard_normal(320000)).astype(
        np.float32
    )


def decode_case(case: dict) -> np.ndarray:
    """A GTZAN case's input as the case describes it: soundfile float32, mean of channels, soxr HQ to 32 kHz,
    the first n_samples; skips when ../shared (beside the repo root) is absent."""
    import soundfile as sf
    import soxr

    rel, how = case["input"].split(": ", 1)
    assert rel.startswith("../shared/") and "soxr.resample(y, 22050, 32000, quality='HQ')" in how
    path = REPO.parent / rel.removeprefix("../")
    if not path.is_file():
        pytest.skip(f"GTZAN audio {path} not found (the fidelity tests read ../shared/data beside the repo root)")
    y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    assert sr == 22050
    return np.ascontiguousarray(soxr.resample(y.mean(axis=1), sr, SR, quality="HQ")[: case["n_samples"]], np.float32)


def check_case(case: dict, y: np.ndarray) -> None:
    assert hashlib.sha256(y.tobytes()).hexdigest() == case["input_sha256"], "the input differs from the original's"
    mel = efficientat_logmel(y, sr=SR)
    assert list(mel.shape) == case["mel_shape"]
    assert abs(float(mel.mean()) - case["mel_mean"]) < TOL and abs(float(mel.std()) - case["mel_std"]) < TOL
    np.testing.assert_allclose(mel[:, 0], case["mel_first_frame"], atol=TOL, rtol=0)
    with torch.inference_mode():
        logits, embedding = network()(torch.from_numpy(mel)[None, None])
    assert logits.shape == (1, N_AUDIOSET) and embedding.shape == (1, EMBEDDING_DIMS)
    np.testing.assert_allclose(logits[0].numpy(), case["logits"], atol=TOL, rtol=0)
    np.testing.assert_allclose(embedding[0].numpy(), case["embedding"], atol=TOL, rtol=0)
    probs = torch.sigmoid(logits[0]).numpy()
    top5 = [(audioset_labels()[i], round(float(probs[i]), 4)) for i in np.argsort(-probs)[:5]]
    assert [label for label, _ in top5] == [label for label, _ in case["top5"]]
    np.testing.assert_allclose([p for _, p in top5], [p for _, p in case["top5"]], atol=2e-4)


def test_synthetic_case_matches_the_original():
    case = reference()["cases"][0]
    assert case["input"].startswith("synthetic: 0.3*sin(2*pi*440*t) + 0.05*N(0,1)")
    check_case(case, synthetic())


@pytest.mark.parametrize("index", range(1, 6))
def test_gtzan_case_matches_the_original(index):
    case = reference()["cases"][index]
    check_case(case, decode_case(case))


def test_fixture_and_shipped_weights_come_from_the_same_release_file():
    from safetensors import safe_open

    ref = reference()
    assert len(ref["cases"]) == 6
    release_sha = ref["weights"].split("sha256 ")[1]
    with safe_open(str(pretrained_path()), framework="pt") as f:
        about = json.loads(f.metadata()["efficientat"])
    assert about["model"] == "mn04_as" and release_sha in about["source"]


def test_kaldi_mel_banks_shape_and_triangles():
    banks = kaldi_mel_banks(sr=SR, n_fft=1024, n_mels=128, fmin=0.0, fmax=15000.0)
    assert banks.shape == (128, 513) and banks.dtype == torch.float32
    assert float(banks.min()) == 0.0 and float(banks.max()) <= 1.0
    assert torch.all(banks[:, -1] == 0)  # the padded Nyquist column
    freqs = np.arange(513) * SR / 1024
    assert banks[:, freqs > 15000].abs().sum() == 0  # nothing above fmax
    peaks = banks.argmax(dim=1).numpy()
    assert np.all(np.diff(peaks) >= 0)  # centres rise with the band


def test_logmel_frames_devices_and_errors():
    y = synthetic()[:32000]
    assert efficientat_logmel(y, sr=SR).shape == (N_MELS, n_frames(32000)) == (N_MELS, 100)
    batch = np.stack([y, y[::-1].copy()])
    out = efficientat_logmel(batch, sr=SR)
    assert out.shape == (2, N_MELS, 100) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], efficientat_logmel(y, sr=SR), atol=1e-5)
    as_tensor = efficientat_logmel(torch.from_numpy(y), sr=SR)
    assert isinstance(as_tensor, torch.Tensor) and np.allclose(as_tensor.numpy(), out[0], atol=1e-5)
    assert efficientat_logmel(np.zeros((0, 32000), np.float32), sr=SR).shape == (0, N_MELS, 100)
    with pytest.raises(ConfigError, match="32000"):
        efficientat_logmel(y, sr=16000)
    with pytest.raises(EmptyAudioError):
        efficientat_logmel(y[:500], sr=SR)


def test_network_shapes_any_length_and_parameter_count():
    net = MobileNetAT().eval()
    assert sum(p.numel() for p in net.parameters()) == 983599  # as the original mn04_as (0.98 M)
    with torch.inference_mode():
        for frames in (100, 301, 1000):
            logits, emb = net(torch.zeros(2, 1, N_MELS, frames))
            assert logits.shape == (2, N_AUDIOSET) and emb.shape == (2, EMBEDDING_DIMS)


def test_pretrained_state_has_every_parameter():
    state = load_pretrained_state()
    own = {k for k in MobileNetAT().state_dict() if not k.endswith("num_batches_tracked")}
    assert set(state) == own
    with pytest.raises(ConfigError, match="unknown EfficientAT model"):
        pretrained_path("mn40_as")


def test_audioset_labels():
    labels = audioset_labels()
    assert len(labels) == N_AUDIOSET and labels[0] == "Speech" and "Heavy metal" in labels
    assert labels[137] == "Music" and len(set(labels)) == N_AUDIOSET


def test_registered_model_loads_all_weights_or_a_fresh_head():
    assert "efficientat" in MODELS and MODELS["efficientat"].features == "efficientat"
    tagger = build_model(
        "efficientat", n_classes=N_AUDIOSET, input_shape=(N_MELS, 313), params={"pretrained": "mn04_as"}
    )
    assert isinstance(tagger, EfficientAT) and tagger.tags == audioset_labels()
    pre = load_pretrained_state()
    assert all(torch.equal(tagger.net.state_dict()[k], v) for k, v in pre.items())
    x = torch.from_numpy(efficientat_logmel(synthetic()[:96000], sr=SR))[None]
    tagger.eval()
    with torch.inference_mode():
        out = tagger.extract(x)
        direct = network()(x[:, None])
    assert torch.allclose(out["logits"], direct[0]) and torch.allclose(out["embedding"], direct[1])
    assert torch.allclose(tagger(x), direct[0]) and torch.allclose(tagger.tag(x), torch.sigmoid(direct[0]))

    genre = build_model("efficientat", n_classes=10, input_shape=(N_MELS, 313), params={"pretrained": "mn04_as"})
    assert genre.tags is None and genre.net.head.weight.shape == (10, 512)
    assert torch.equal(genre.net.hidden.weight, pre["hidden.weight"])
    assert not torch.equal(genre.net.head.weight[:, :5], pre["head.weight"][:10, :5])
    scratch = build_model("efficientat", n_classes=3, input_shape=(N_MELS, 100))
    assert scratch.tags is None and scratch(torch.zeros(2, N_MELS, 100)).shape == (2, 3)
    with pytest.raises(ConfigError, match="128 mel bands"):
        build_model("efficientat", n_classes=3, input_shape=(64, 100), params={"pretrained": "mn04_as"})


def test_fine_tuning_step_updates_the_body():
    model = build_model("efficientat", n_classes=2, input_shape=(N_MELS, 100), params={"pretrained": "mn04_as"})
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, N_MELS, 100), torch.tensor([0, 1, 0, 1])
    before = model.net.stem[0].weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.net.stem[0].weight)
