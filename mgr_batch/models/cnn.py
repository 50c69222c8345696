"""Small 2-D CNN over log-mel clips: the shipped default model."""

from __future__ import annotations

import torch
from torch import nn

from mgr_batch.models.registry import register


@register(
    "cnn",
    family="neural",
    features="logmel",
    study="mgr-batch default",
    description="4 conv blocks (BN, ReLU, max-pool) over a log-mel clip, global pooling, dropout, linear",
)
class GenreCNN(nn.Module):
    """Log-mel clip (batch, n_mels, n_frames) -> genre logits (batch, n_classes).

    Input is standardized per frequency band by a learned-free BatchNorm, so dB offsets do not matter.
    """

    def __init__(
        self,
        *,
        n_classes: int,
        input_shape: tuple[int, int],
        channels: tuple[int, ...] = (16, 32, 64, 128),
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        n_mels, _ = input_shape
        self.input_norm = nn.BatchNorm2d(1)
        blocks = []
        c_in = 1
        for c_out in channels:
            blocks += [
                nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        self.body = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.input_norm(x.unsqueeze(1)))  # (batch, c, f', t')
        h = h.mean(dim=2)  # pool frequency -> (batch, c, t')
        h = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)  # mean and max over time
        return self.head(self.dropout(h))
