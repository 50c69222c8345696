"""CRNN: 1-D convolutions over time, an LSTM, and a genre belief at every time step, averaged."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mgr_batch.models.common import check_dropout, check_input_shape, check_positive, n_pooled
from mgr_batch.models.registry import register


@register(
    "crnn",
    family="neural",
    features="logmel",
    study="CRNN study",
    description="1-D conv (mel bins as channels) + ReLU + max-pool x3, dropout, LSTM, dropout, per-step linear; "
    "the song's prediction is the time mean of per-step softmax",
)
class GenreCRNN(nn.Module):
    """Log-mel clip (batch, n_mels, n_frames) -> log of the time-mean genre probabilities (batch, n_classes).

    Conv blocks (``Conv1d`` over time with the mel bins as input channels, ReLU, max-pool by
    ``pool_size``), dropout, an LSTM, dropout, and the linear ``head`` at every output step: a softmax
    per step is the network's belief over time (:meth:`timeline`). :meth:`forward` returns
    ``log(timeline(x).mean(1))``, so softmax of it is exactly the mean belief and ``CrossEntropyLoss``
    on it trains that mean.

    Output step ``i`` covers input frames ``[i * step_frames, (i + 1) * step_frames)`` (the last step
    may cover fewer); there are :meth:`n_steps_out` ``= ceil(n_frames / step_frames)`` of them.
    """

    def __init__(
        self,
        *,
        n_classes: int,
        input_shape: tuple[int, int],
        channels: Sequence[int] = (64, 128, 128),
        kernel_size: int = 3,
        pool_size: int = 2,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        n_mels, _ = check_input_shape(input_shape, model="crnn")
        check_positive(
            "crnn",
            n_blocks=len(channels),
            kernel_size=kernel_size,
            pool_size=pool_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            **{f"channels[{i}]": c for i, c in enumerate(channels)},
        )
        dropout = check_dropout(dropout, model="crnn")
        self.input_norm = nn.BatchNorm1d(n_mels)
        blocks = []
        c_in = n_mels
        for c_out in channels:
            blocks += [
                nn.Conv1d(c_in, c_out, kernel_size=kernel_size, padding="same"),
                nn.ReLU(inplace=True),
                nn.MaxPool1d(pool_size, ceil_mode=True),
            ]
            c_in = c_out
        self.conv = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            c_in, hidden_size, num_layers=num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.head = nn.Linear(hidden_size, n_classes)
        self._pool_size = pool_size
        self._n_blocks = len(channels)
        #: Input frames per output step (the hop between steps): ``pool_size ** len(channels)``.
        self.step_frames: int = pool_size ** len(channels)

    def n_steps_out(self, n_frames: int) -> int:
        """Output steps of :meth:`timeline` for an input of ``n_frames`` frames."""
        return n_pooled(n_frames, self._pool_size, self._n_blocks)

    def step_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step genre logits (batch, n_steps_out, n_classes) of ``x`` (batch, n_mels, n_frames)."""
        h = self.conv(self.input_norm(x))  # (batch, channels, n_steps_out)
        h, _ = self.lstm(self.dropout(h.transpose(1, 2)))
        return self.head(self.dropout(h))

    def timeline(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step genre probabilities (batch, n_steps_out, n_classes); each step sums to 1."""
        return torch.softmax(self.step_logits(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(self.step_logits(x), dim=-1)
        # log(mean_t p_t), computed in log space so tiny probabilities do not underflow
        return torch.logsumexp(log_p, dim=1) - math.log(log_p.shape[1])
