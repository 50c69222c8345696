"""Fully connected networks over a flattened feature array: ``mlp`` and ``ffnn``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mgr_batch.models.common import InputNorm1d, check_dropout, check_input_shape, check_positive
from mgr_batch.models.registry import register


@register(
    "mlp",
    family="neural",
    features="stft",
    study="4 kHz spectrogram study; LSTM study: MLP on 30 s features (classic58)",
    description="flattened input, batch norm, one hidden layer of 125 sigmoid units, linear",
)
class GenreMLP(nn.Module):
    """Feature array (batch, n_features, n_steps) -> genre logits (batch, n_classes).

    A 2-layer perceptron: the flattened input (standardized per value by a BatchNorm, since spectrogram
    bins and the 58 classic features differ by orders of magnitude; its statistics in float64, since the
    58 values' length is constant when every clip is full: :class:`~mgr_batch.models.common.InputNorm1d`),
    ``hidden_size`` sigmoid units, and the linear ``head``.
    """

    def __init__(
        self,
        *,
        n_classes: int,
        input_shape: tuple[int, int],
        hidden_size: int = 125,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        n_features, n_steps = check_input_shape(input_shape, model="mlp")
        check_positive("mlp", hidden_size=hidden_size)
        n_in = n_features * n_steps
        self.input_norm = InputNorm1d(n_in)
        self.hidden = nn.Linear(n_in, hidden_size)
        self.dropout = nn.Dropout(check_dropout(dropout, model="mlp"))
        self.head = nn.Linear(hidden_size, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.sigmoid(self.hidden(self.input_norm(x.flatten(1))))
        return self.head(self.dropout(h))


@register(
    "ffnn",
    family="neural",
    features="logmel",
    study="2 s crop study",
    description="flattened input, batch norm, 5 ReLU hidden layers (1024-512-256-128-64) with dropout, linear",
)
class GenreFFNN(nn.Module):
    """Feature array (batch, n_features, n_steps) -> genre logits (batch, n_classes).

    A 6-layer feed-forward net: the flattened, batch-normalized input, one ReLU layer per entry of
    ``widths`` each followed by dropout, and the linear ``head`` (the sixth layer with the default widths).
    """

    def __init__(
        self,
        *,
        n_classes: int,
        input_shape: tuple[int, int],
        widths: Sequence[int] = (1024, 512, 256, 128, 64),
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        n_features, n_steps = check_input_shape(input_shape, model="ffnn")
        check_positive("ffnn", n_layers=len(widths), **{f"widths[{i}]": w for i, w in enumerate(widths)})
        dropout = check_dropout(dropout, model="ffnn")
        n_in = n_features * n_steps
        self.input_norm = nn.BatchNorm1d(n_in)
        layers = []
        for width in widths:
            layers += [nn.Linear(n_in, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            n_in = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(n_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.input_norm(x.flatten(1))))
