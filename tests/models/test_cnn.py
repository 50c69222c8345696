"""mgr_batch.models.cnn and the registry: shapes, registration, and that it learns."""

from __future__ import annotations

import pytest
import torch

from mgr_batch.errors import ConfigError
from mgr_batch.models import MODELS, build_model
from mgr_batch.models.cnn import GenreCNN


@pytest.mark.parametrize("input_shape", [(32, 65), (128, 130), (16, 9)])
@pytest.mark.parametrize("channels", [(4,), (4, 8), (4, 8, 8)])
@pytest.mark.parametrize("batch", [1, 3])
def test_forward_shape(input_shape, channels, batch):
    model = build_model("cnn", n_classes=10, input_shape=input_shape, params={"channels": channels}).eval()
    with torch.no_grad():
        out = model(torch.randn(batch, *input_shape))
    assert out.shape == (batch, 10)
    assert torch.isfinite(out).all()


def test_registry():
    assert "cnn" in MODELS
    info = MODELS["cnn"]
    assert info.build is GenreCNN and info.features == "logmel" and info.family == "neural"
    assert isinstance(build_model("cnn", n_classes=3, input_shape=(32, 65)), GenreCNN)


def test_unknown_model():
    with pytest.raises(ConfigError, match="cnn"):
        build_model("transformer", n_classes=3, input_shape=(32, 65))


def test_eval_is_deterministic_and_batch_independent():
    torch.manual_seed(0)
    model = GenreCNN(n_classes=4, input_shape=(32, 65), channels=(4, 8)).eval()
    x = torch.randn(4, 32, 65)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_one_optimizer_step_lowers_the_loss():
    torch.manual_seed(0)
    model = GenreCNN(n_classes=3, input_shape=(32, 65), channels=(4, 8), dropout=0.0).train()
    x = torch.randn(6, 32, 65) * 10 - 40
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = torch.nn.CrossEntropyLoss()
    loss = loss_fn(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    optimizer.step()
    with torch.no_grad():
        after = loss_fn(model(x), y)
    assert after.item() < loss.item()
