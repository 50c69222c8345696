"""The neural models of the seed studies: shapes, registry entries, learning, checkpoints, CRNN timeline."""

from __future__ import annotations

import io
import math

import pytest
import torch

from mgr_batch.errors import ConfigError, MgrBatchError
from mgr_batch.models import MODELS, build_model

# name -> (features, small input_shape (n_features, n_steps), small params with dropout off)
ZOO = {
    "mlp": ("stft", (8, 5), {"hidden_size": 6}),
    "ffnn": ("logmel", (8, 5), {"widths": (16, 8, 8, 8, 8), "dropout": 0.0}),
    "rnn": ("stft", (6, 7), {"hidden_size": 8}),
    "lstm": ("stft", (6, 7), {"hidden_size": 8}),
    "lstm_attention": ("stft", (6, 7), {"hidden_size": 8}),
    "lstm_seq": ("classic58_seq", (58, 4), {"hidden_size": 8, "dense_size": 8, "dropout": 0.0}),
    "gru": ("mfcc", (13, 7), {"hidden_size": 8, "dropout": 0.0}),
    "skip_rnn": ("mfcc", (13, 7), {"hidden_size": 8, "skip": 3, "dropout": 0.0}),
    "cnn3": ("logmel", (16, 12), {"channels": (4, 4, 8), "dropout": 0.0}),
    "vgg": ("logmel", (16, 12), {"cfg": (4, "M", 8, "M", 8, "M"), "pool_size": 2, "hidden_size": 16, "dropout": 0.0}),
    "resnet": ("logmel", (16, 12), {"layers": (1, 1), "width": 1 / 16}),
    "crnn": ("logmel", (16, 20), {"channels": (8, 8), "hidden_size": 8, "dropout": 0.0}),
}
NAMES = list(ZOO)


def build(name, *, n_classes=5, input_shape=None, seed=0, **overrides):
    _, shape, params = ZOO[name]
    torch.manual_seed(seed)
    return build_model(name, n_classes=n_classes, input_shape=input_shape or shape, params={**params, **overrides})


def features(batch, shape, *, seed=1):
    # dB-like values: offsets and scales the input normalization must absorb
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *shape, generator=g) * 10 - 40


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry(name):
    info = MODELS[name]
    assert info.family == "neural"
    assert info.features == ZOO[name][0]
    assert info.study.strip() and info.description.strip()
    assert isinstance(build(name), info.build)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("grow", [(0, 0), (5, 3), (-3, -2)])
def test_forward_gives_finite_logits(name, batch, grow):
    shape = (ZOO[name][1][0] + grow[0], ZOO[name][1][1] + grow[1])
    model = build(name, n_classes=7, input_shape=shape).eval()
    with torch.no_grad():
        out = model(features(batch, shape))
    assert out.shape == (batch, 7)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_eval_is_batch_independent(name):
    model = build(name).eval()
    x = features(4, ZOO[name][1])
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(4)])
        again = model(x)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(together, again, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_one_optimizer_step_lowers_the_loss(name):
    model = build(name, n_classes=3).train()
    x = features(6, ZOO[name][1])
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = torch.nn.CrossEntropyLoss()
    loss = loss_fn(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    optimizer.step()
    with torch.no_grad():
        after = loss_fn(model(x), y)
    assert after.item() < loss.item()


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_gives_identical_outputs(name):
    model = build(name, seed=0)
    model.train()
    model(features(4, ZOO[name][1], seed=2))  # move the batch-norm running statistics off their defaults
    model.eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = build(name, seed=123)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    fresh.eval()
    x = features(3, ZOO[name][1])
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_for_other_genres_loads_all_but_the_head(name):
    ten = build(name, n_classes=10).state_dict()
    four = build(name, n_classes=4, seed=1)
    mismatched = {k for k, v in four.state_dict().items() if v.shape != ten[k].shape}
    assert mismatched == {"head.weight", "head.bias"}
    result = four.load_state_dict({k: v for k, v in ten.items() if not k.startswith("head.")}, strict=False)
    assert sorted(result.missing_keys) == ["head.bias", "head.weight"] and result.unexpected_keys == []


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("input_shape", [(8,), (8, 0), (0, 5), (8, 5, 1)])
def test_bad_input_shape_is_a_config_error(name, input_shape):
    with pytest.raises(ConfigError, match=name):
        build(name, input_shape=input_shape)


@pytest.mark.parametrize("name", NAMES)
def test_bad_dropout_is_a_config_error(name):
    with pytest.raises(MgrBatchError):
        build(name, dropout=1.5)


# --- CRNN ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_frames", [1, 3, 4, 20, 23])
@pytest.mark.parametrize("pool_size", [2, 3])
def test_crnn_forward_is_the_log_of_the_mean_timeline(n_frames, pool_size):
    model = build("crnn", input_shape=(16, n_frames), pool_size=pool_size).eval()
    x = features(3, (16, n_frames))
    with torch.no_grad():
        timeline = model.timeline(x)
        out = model(x)
    assert model.step_frames == pool_size**2
    assert model.n_steps_out(n_frames) == math.ceil(n_frames / model.step_frames)
    assert timeline.shape == (3, model.n_steps_out(n_frames), 5)
    torch.testing.assert_close(timeline.sum(-1), torch.ones(3, timeline.shape[1]))
    torch.testing.assert_close(torch.softmax(out, dim=1), timeline.mean(1))
    torch.testing.assert_close(out.exp().sum(1), torch.ones(3))


def test_crnn_timeline_follows_the_input_in_time():
    # a step's belief depends only on frames up to its span (the LSTM runs forward in time)
    model = build("crnn", input_shape=(16, 20)).eval()
    x = features(1, (16, 20))
    y = x.clone()
    y[:, :, 12:] += 30  # change frames 12.. (steps 3.. with step_frames 4)
    with torch.no_grad():
        a, b = model.timeline(x), model.timeline(y)
    # the conv kernel (3) reaches one frame back into step 2's span
    torch.testing.assert_close(a[:, :2], b[:, :2])
    assert not torch.allclose(a[:, 3:], b[:, 3:])


# --- attention LSTM --------------------------------------------------------------------------------


def test_lstm_attention_weights_are_a_distribution_over_time():
    model = build("lstm_attention").eval()
    x = features(4, (6, 7))
    with torch.no_grad():
        logits, weights = model(x, return_attention=True)
        plain = model(x)
    assert weights.shape == (4, 7)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(1), torch.ones(4))
    torch.testing.assert_close(model.attention, weights)
    torch.testing.assert_close(logits, plain, rtol=0, atol=0)


# --- skip-RNN --------------------------------------------------------------------------------------


@pytest.mark.parametrize("skip", [1, 2, 7, 50])
def test_skip_rnn_any_skip(skip):
    model = build("skip_rnn", skip=skip).eval()
    with torch.no_grad():
        out = model(features(2, (13, 7)))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_skip_rnn_uses_the_skipped_state():
    # with the gate forced fully open, h_t = h_{t-k}: the last state is that of step (n_steps - 1) mod k
    model = build("skip_rnn", skip=3, num_layers=1).eval()
    with torch.no_grad():
        model.gates[0].weight.zero_()
        model.gates[0].bias.fill_(1e4)
        x = features(2, (13, 7))
        cut = model(x[:, :, :1])  # step 6 -> 3 -> 0
    with torch.no_grad():
        torch.testing.assert_close(model(x), cut)


@pytest.mark.parametrize("skip", [0, -1, 1.5])
def test_skip_rnn_bad_skip(skip):
    with pytest.raises(ConfigError, match="skip"):
        build("skip_rnn", skip=skip)


# --- defaults are the studies' sizes ---------------------------------------------------------------


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, input_shape, check",
    [
        ("mlp", (513, 22), lambda m: m.hidden.out_features == 125),
        ("mlp", (58, 1), lambda m: m.hidden.in_features == 58),
        ("ffnn", (64, 87), lambda m: sum(isinstance(x, torch.nn.Linear) for x in m.modules()) == 6),
        ("rnn", (513, 22), lambda m: (m.rnn.hidden_size, m.rnn.num_layers) == (125, 2)),
        ("lstm", (513, 22), lambda m: (m.rnn.hidden_size, m.rnn.num_layers) == (250, 2)),
        ("lstm_attention", (513, 22), lambda m: (m.rnn.hidden_size, m.rnn.num_layers) == (60, 2)),
        ("lstm_seq", (58, 10), lambda m: (m.rnn.hidden_size, m.rnn.num_layers, m.dense.out_features) == (64, 2, 64)),
        ("gru", (20, 130), lambda m: isinstance(m.rnn, torch.nn.GRU)),
        ("skip_rnn", (20, 30), lambda m: m.skip == 2),
        ("cnn3", (64, 87), lambda m: sum(isinstance(x, torch.nn.Conv2d) for x in m.modules()) == 3),
        ("resnet", (128, 130), lambda m: sum(isinstance(x, torch.nn.Conv2d) for x in m.modules()) == 36),
        ("crnn", (128, 130), lambda m: m.step_frames == 8),
    ],
)
def test_defaults_build_and_run(name, input_shape, check):
    torch.manual_seed(0)
    model = build_model(name, n_classes=10, input_shape=input_shape).eval()
    assert check(model)
    with torch.no_grad():
        out = model(features(2, input_shape))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_vgg_default_layout_at_small_width():
    model = build_model("vgg", n_classes=10, input_shape=(128, 130), params={"width": 1 / 16}).eval()
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in model.features if isinstance(m, torch.nn.MaxPool2d)]
    assert len(convs) == 13 and len(pools) == 5 and convs[-1].out_channels == 32
    with torch.no_grad():
        assert model(features(2, (128, 130))).shape == (2, 10)


def test_vgg_bad_cfg():
    with pytest.raises(ConfigError, match="vgg"):
        build("vgg", cfg=("M", "M"))
    with pytest.raises(ConfigError, match="vgg"):
        build("vgg", cfg=(4, "A"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name):
    model = build(name).eval()
    x = features(3, ZOO[name][1])
    with torch.no_grad():
        cpu = model(x)
        gpu = model.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)


def classic58_sequences(n, *, n_steps=10, seed=0):
    """Two classes of ``classic58_seq``-like inputs (n, 58, n_steps) and labels (n,).

    Features on scales from 1e-2 to 1e6 (the 58 classic values span such a range) and column 0 a
    constant window length; the class moves 4 features of every audio window by one standard deviation.
    Half the examples, of both classes, are short songs: one audio window after ``n_steps - 1`` padding
    windows (zeros but the length), as ``classic58_seq`` orders them.
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    scale = 10.0 ** torch.linspace(-2, 6, 58)
    x = (torch.randn(n, 58, n_steps, generator=g) + 3) * scale[:, None]
    x[:, 5:9] += (2 * y - 1)[:, None, None] * scale[5:9, None]
    x[1::4, 1:, : n_steps - 1] = 0  # pre-padded short songs of both classes
    x[2::4, 1:, : n_steps - 1] = 0
    x[:, 0] = 66150.0
    return x, y


def fit_in_batches(model, x, y, *, steps=200):
    """Adam (lr 3e-3) on random batches of 16 of ``x``, ``y``, ``steps`` times (enough batches for the running
    statistics to settle); leaves ``model`` in eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        batch = torch.randperm(len(x))[:16]
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def test_lstm_seq_learns_two_classes_of_padded_sequences():
    torch.manual_seed(0)
    model = build_model("lstm_seq", n_classes=2, input_shape=(58, 10))  # the study's 2 x 64, dense 64
    x, y = classic58_sequences(64)
    fit_in_batches(model, x, y)
    x_new, y_new = classic58_sequences(64, seed=1)
    with torch.no_grad():  # eval mode: the running statistics, not the batch's
        # the constant length column normalizes to about 0, as in training (float32 statistics: about 20)
        assert model.input_norm(x)[:, 0].abs().max() < 0.1
        assert (model(x).argmax(1) == y).float().mean() == 1.0
        assert (model(x_new).argmax(1) == y_new).float().mean() >= 0.95


def test_mlp_keeps_a_constant_feature_at_zero_in_eval_mode():
    # 58-value vectors of full 30 s clips: the length column is 661500 in every one of them
    torch.manual_seed(0)
    model = build_model("mlp", n_classes=2, input_shape=(58, 1))
    x, y = classic58_sequences(64, n_steps=1)
    x[:, 0] = 661500.0
    fit_in_batches(model, x, y)
    x_new, y_new = classic58_sequences(64, n_steps=1, seed=1)
    x_new[:, 0] = 661500.0
    with torch.no_grad():
        assert model.input_norm(x.flatten(1))[:, 0].abs().max() < 1.0  # float32 statistics: 138
        assert (model(x_new).argmax(1) == y_new).float().mean() >= 0.8  # float32 statistics: 0.5, one class


# every neural model of the registry, small: (input_shape, params)
INFERENCE = {name: (shape, params) for name, (_, shape, params) in ZOO.items()} | {
    "cnn": ((32, 65), {"channels": (4, 8)}),
    "efficientat": ((128, 50), {}),
    "musicnn": ((96, 40), {}),
    "musicnn_vgg": ((96, 187), {}),
}


@pytest.mark.parametrize("name", sorted(n for n, info in MODELS.items() if info.family == "neural"))
def test_folding_batch_norms_for_inference_keeps_the_outputs(name):
    from mgr_batch.models.common import fold_batch_norm

    shape, params = INFERENCE[name]  # a new neural model needs an entry here
    torch.manual_seed(0)
    model = build_model(name, n_classes=4, input_shape=shape, params=params).train()
    for _ in range(3):  # running statistics off their defaults
        model(features(8, shape, seed=5))
    model.eval()
    folded = fold_batch_norm(model)
    x = features(5, shape)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(folded(x[:2]), model(x[:2]), rtol=1e-4, atol=1e-4)  # any batch size
    norms = [m for m in folded.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if name == "cnn":  # every BatchNorm of its blocks follows a convolution
        assert len(norms) == 1  # only the input normalization is left
