"""Recurrent networks over the time steps of a feature array: RNN, LSTM, GRU, attention LSTM, skip-RNN.

Every model here reads ``x`` of shape (batch, n_features, n_steps) as a sequence of ``n_steps`` vectors
(the columns), standardizes each feature dimension with a BatchNorm (spectrogram bins, MFCCs and the 58
classic features differ by orders of magnitude), and classifies from the last step of the top layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mgr_batch.errors import ConfigError
from mgr_batch.models.common import InputNorm1d, check_dropout, check_input_shape, check_positive
from mgr_batch.models.registry import register


class _SequenceClassifier(nn.Module):
    """Shared body: input BatchNorm, a stacked ``nn.RNN``/``nn.LSTM``/``nn.GRU``, dropout, linear ``head``."""

    NAME = ""
    CELL: type[nn.RNNBase] = nn.RNN
    #: Defaults of the hyper-parameters a subclass leaves unset (each the study's own).
    HIDDEN_SIZE, NUM_LAYERS, DROPOUT = 128, 2, 0.0

    def __init__(
        self,
        *,
        n_classes: int,
        input_shape: tuple[int, int],
        hidden_size: int | None = None,
        num_layers: int | None = None,
        dropout: float | None = None,
    ) -> None:
        super().__init__()
        hidden_size = self.HIDDEN_SIZE if hidden_size is None else hidden_size
        num_layers = self.NUM_LAYERS if num_layers is None else num_layers
        dropout = self.DROPOUT if dropout is None else dropout
        n_features, _ = check_input_shape(input_shape, model=self.NAME)
        check_positive(self.NAME, hidden_size=hidden_size, num_layers=num_layers)
        dropout = check_dropout(dropout, model=self.NAME)
        self.input_norm = nn.BatchNorm1d(n_features)
        self.rnn = self.CELL(
            n_features,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, n_classes)

    def sequence(self, x: torch.Tensor) -> tuple[torch.Tensor, object]:
        """Top-layer outputs (batch, n_steps, hidden_size) and the final state of every layer."""
        return self.rnn(self.input_norm(x).transpose(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.sequence(x)
        return self.head(self.dropout(out[:, -1]))


@register(
    "rnn",
    family="neural",
    features="stft",
    study="4 kHz spectrogram study",
    description="vanilla (tanh) RNN, 2 layers x 125 units over the spectrogram's time steps, last hidden -> linear",
)
class GenreRNN(_SequenceClassifier):
    """Feature array (batch, n_features, n_steps) -> genre logits (batch, n_classes), by a tanh RNN."""

    NAME = "rnn"
    CELL = nn.RNN

    HIDDEN_SIZE, NUM_LAYERS, DROPOUT = 125, 2, 0.0


@register(
    "lstm",
    family="neural",
    features="stft",
    study="4 kHz spectrogram study",
    description="LSTM, 2 layers x 250 units over the spectrogram's time steps, last hidden -> linear",
)
class GenreLSTM(_SequenceClassifier):
    """Feature array (batch, n_features, n_steps) -> genre logits (batch, n_classes), by an LSTM."""

    NAME = "lstm"
    CELL = nn.LSTM

    HIDDEN_SIZE, NUM_LAYERS, DROPOUT = 250, 2, 0.0


@register(
    "gru",
    family="neural",
    features="mfcc",
    study="transfer study",
    description="GRU, 2 layers x 128 units over MFCC frames, last hidden -> linear",
)
class GenreGRU(_SequenceClassifier):
    """MFCC sequence (batch, n_mfcc, n_frames) -> genre logits (batch, n_classes), by a GRU."""

    NAME = "gru"
    CELL = nn.GRU

    HIDDEN_SIZE, NUM_LAYERS, DROPOUT = 128, 2, 0.2


@register(
    "lstm_seq",
    family="neural",
    features="classic58_seq",
    study="LSTM study",
    description="LSTM 2 x 64 over consecutive windows' 58-value feature vectors, dense 64 (ReLU), linear",
    # GTZAN's train list is 5 batches an epoch: 60 epochs at lr 1e-3 underfit it
    optim={"lr": 1e-2},
)
class GenreSequenceLSTM(_SequenceClassifier):
    """Feature-vector sequence (batch, 58, n_windows) -> genre logits (batch, n_classes).

    The LSTM's last top-layer output goes through a ReLU dense layer (``dense``) before the ``head``, so a
    short song's sequence must end with its audio (``classic58_seq`` puts the padding windows first).
    The input BatchNorm keeps its statistics in float64 (:class:`~mgr_batch.models.common.InputNorm1d`):
    the window length column is constant in training when every window is full.
    """

    NAME = "lstm_seq"
    CELL = nn.LSTM

    def __init__(
        self,
        *,
        n_classes: int,
        input_shape: tuple[int, int],
        hidden_size: int = 64,
        num_layers: int = 2,
        dense_size: int = 64,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(
            n_classes=n_classes,
            input_shape=input_shape,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout,
        )
        check_positive(self.NAME, dense_size=dense_size)
        self.input_norm = InputNorm1d(input_shape[0])
        self.dense = nn.Linear(hidden_size, dense_size)
        self.head = nn.Linear(dense_size, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.sequence(x)
        h = F.relu(self.dense(self.dropout(out[:, -1])))
        return self.head(self.dropout(h))


@register(
    "lstm_attention",
    family="neural",
    features="stft",
    study="4 kHz spectrogram study",
    description="LSTM 2 x 60; soft attention of the last cell state over all hidden states; "
    "tanh(linear([context, cell])), linear",
)
class GenreAttentionLSTM(_SequenceClassifier):
    """Feature array (batch, n_features, n_steps) -> genre logits (batch, n_classes), by an attention LSTM.

    With ``h`` the top layer's hidden states (batch, n_steps, hidden_size) and ``c`` its last cell state
    (batch, hidden_size): weights ``a = softmax_t(h_t . c)`` (batch, n_steps), context ``sum_t a_t h_t``,
    then ``head(tanh(attention_proj([context, c])))``. ``forward(x, return_attention=True)`` also returns
    ``a``; the weights of the last call are kept in :attr:`attention` (detached).
    """

    NAME = "lstm_attention"
    CELL = nn.LSTM

    def __init__(
        self,
        *,
        n_classes: int,
        input_shape: tuple[int, int],
        hidden_size: int = 60,
        num_layers: int = 2,
        attention_size: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            n_classes=n_classes,
            input_shape=input_shape,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout,
        )
        attention_size = hidden_size if attention_size is None else attention_size
        check_positive(self.NAME, attention_size=attention_size)
        self.attention_proj = nn.Linear(2 * hidden_size, attention_size)
        self.head = nn.Linear(attention_size, n_classes)
        self.attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, *, return_attention: bool = False):
        h, (_, c_n) = self.sequence(x)  # h: (batch, n_steps, hidden); c_n: (num_layers, batch, hidden)
        c = c_n[-1]
        weights = torch.softmax(torch.einsum("bth,bh->bt", h, c), dim=1)
        context = torch.einsum("bt,bth->bh", weights, h)
        z = torch.tanh(self.attention_proj(torch.cat([context, c], dim=1)))
        logits = self.head(self.dropout(z))
        self.attention = weights.detach()
        return (logits, weights) if return_attention else logits


@register(
    "skip_rnn",
    family="neural",
    features="mfcc",
    study="transfer study",
    description="GRU cells unrolled by hand, 2 layers x 128; a learned gate mixes in the state from k=2 steps back",
)
class GenreSkipRNN(nn.Module):
    """MFCC sequence (batch, n_mfcc, n_frames) -> genre logits (batch, n_classes), by a skip-RNN.

    Each layer runs a ``GRUCell`` and, from step ``skip`` on, mixes in the state from ``skip`` steps back
    with a learned per-unit gate::

        g_t = sigmoid(W_g [h'_t, h_{t-k}] + b_g),   h'_t = GRUCell(x_t, h_{t-1})
        h_t = (1 - g_t) * h'_t + g_t * h_{t-k}

    A convex mix rather than an additive ``W_skip h_{t-k}`` term: the state stays in the GRU's (-1, 1)
    range however long the sequence, and the gate can learn to ignore the skip path. Steps ``t < k`` have
    no skip state and use ``h'_t`` alone. The head reads the top layer's last state.
    """

    def __init__(
        self,
        *,
        n_classes: int,
        input_shape: tuple[int, int],
        hidden_size: int = 128,
        num_layers: int = 2,
        skip: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        n_features, _ = check_input_shape(input_shape, model="skip_rnn")
        check_positive("skip_rnn", hidden_size=hidden_size, num_layers=num_layers)
        if not isinstance(skip, int) or skip < 1:
            raise ConfigError(f"skip_rnn: skip must be an int >= 1, got {skip!r}")
        self.skip = skip
        self.input_norm = nn.BatchNorm1d(n_features)
        self.cells = nn.ModuleList(
            nn.GRUCell(n_features if i == 0 else hidden_size, hidden_size) for i in range(num_layers)
        )
        self.gates = nn.ModuleList(nn.Linear(2 * hidden_size, hidden_size) for _ in range(num_layers))
        self.dropout = nn.Dropout(check_dropout(dropout, model="skip_rnn"))
        self.head = nn.Linear(hidden_size, n_classes)

    def _layer(self, cell: nn.GRUCell, gate: nn.Linear, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        h = xs[0].new_zeros(xs[0].shape[0], cell.hidden_size)
        states: list[torch.Tensor] = []
        for t, x_t in enumerate(xs):
            h = cell(x_t, h)
            if t >= self.skip:
                back = states[t - self.skip]
                g = torch.sigmoid(gate(torch.cat([h, back], dim=1)))
                h = (1 - g) * h + g * back
            states.append(h)
        return states

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = list(self.input_norm(x).unbind(dim=2))  # n_steps tensors of (batch, n_features)
        for i, (cell, gate) in enumerate(zip(self.cells, self.gates, strict=True)):
            if i > 0:
                xs = [self.dropout(h) for h in xs]
            xs = self._layer(cell, gate, xs)
        return self.head(self.dropout(xs[-1]))
