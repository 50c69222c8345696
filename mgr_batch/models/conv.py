"""2-D CNNs over spectrogram images: the 3-layer ``cnn3``, VGG-style ``vgg`` and ResNet-style ``resnet``.

Each reads ``x`` of shape (batch, n_mels, n_frames) as a one-channel image, standardizes it with a
BatchNorm over that channel (dB offsets do not matter), and ends in a linear layer named ``head``: every
other layer keeps its name and shape whatever ``n_classes`` is, so a checkpoint of the same model trained
on other genres loads into it except ``head.*`` (transfer learning without ImageNet weights).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mgr_batch.errors import ConfigError
from mgr_batch.models.common import check_dropout, check_input_shape, check_positive, n_pooled, scaled
from mgr_batch.models.registry import register

#: torchvision's VGG-16 layout ("D"): conv widths, ``"M"`` for a 2x2 max-pool.
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
#: BasicBlocks per stage of ResNet-34.
RESNET34 = (3, 4, 6, 3)


@register(
    "cnn3",
    family="neural",
    features="logmel",
    study="2 s crop study",
    description="3 blocks of 3x3 conv, batch norm, ReLU, 2x2 max-pool, dropout over a 64-bin log-mel crop; linear",
)
class GenreCNN3(nn.Module):
    """Log-mel crop (batch, n_mels, n_frames) -> genre logits (batch, n_classes).

    Three conv blocks (conv, BN, ReLU, 2x2 max-pool, dropout), then the flattened maps go to the linear
    ``head``; its input size follows from ``input_shape``. L2 regularization is the optimizer's
    ``weight_decay``.
    """

    def __init__(
        self,
        *,
        n_classes: int,
        input_shape: tuple[int, int],
        channels: Sequence[int] = (32, 64, 128),
        kernel_size: int = 3,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        n_mels, n_frames = check_input_shape(input_shape, model="cnn3")
        check_positive("cnn3", kernel_size=kernel_size, n_blocks=len(channels))
        dropout = check_dropout(dropout, model="cnn3")
        self.input_norm = nn.BatchNorm2d(1)
        blocks = []
        c_in = 1
        for c_out in channels:
            blocks += [
                nn.Conv2d(c_in, c_out, kernel_size=kernel_size, padding="same", bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),
                nn.Dropout(dropout),
            ]
            c_in = c_out
        self.body = nn.Sequential(*blocks)
        n_out = c_in * n_pooled(n_mels, 2, len(channels)) * n_pooled(n_frames, 2, len(channels))
        self.head = nn.Linear(n_out, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.input_norm(x.unsqueeze(1))).flatten(1))


@register(
    "vgg",
    family="neural",
    features="logmel",
    study="transfer study",
    description="VGG-16 layout (13 3x3 conv + BN, 5 max-pools) over a 128-bin mel image, adaptive 7x7 pooling, "
    "2 x 4096 dense with dropout, linear",
)
class GenreVGG(nn.Module):
    """Mel image (batch, n_mels, n_frames) -> genre logits (batch, n_classes), torchvision's VGG layout.

    ``cfg`` lists conv widths and ``"M"`` (2x2 max-pool, ``ceil_mode`` so small inputs never vanish) like
    torchvision's VGG configs; ``width`` multiplies every conv width and ``hidden_size``. Adaptive average
    pooling to ``pool_size`` x ``pool_size`` makes any input size work. Layers: ``features``,
    ``avgpool``, ``classifier`` (two ReLU dense layers with dropout) and ``head``.
    """

    def __init__(
        self,
        *,
        n_classes: int,
        input_shape: tuple[int, int],
        cfg: Sequence[int | str] = VGG16,
        width: float = 1.0,
        batch_norm: bool = True,
        pool_size: int = 7,
        hidden_size: int = 4096,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        check_input_shape(input_shape, model="vgg")
        check_positive("vgg", width=width, pool_size=pool_size, hidden_size=hidden_size)
        dropout = check_dropout(dropout, model="vgg")
        self.input_norm = nn.BatchNorm2d(1)
        layers: list[nn.Module] = []
        c_in = 1
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                continue
            if isinstance(v, str) or v <= 0:
                raise ConfigError(f"vgg: cfg entries must be positive ints or 'M', got {v!r}")
            c_out = scaled(v, width)
            layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
            c_in = c_out
        if not any(isinstance(m, nn.Conv2d) for m in layers):
            raise ConfigError(f"vgg: cfg has no conv layer: {list(cfg)!r}")
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(pool_size)
        hidden = scaled(hidden_size, width)
        self.classifier = nn.Sequential(
            nn.Linear(c_in * pool_size * pool_size, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.avgpool(self.features(self.input_norm(x.unsqueeze(1))))
        return self.head(self.classifier(h.flatten(1)))


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convs with a residual connection; (batch, c_in, f, t) -> (batch, c_out, f/s, t/s)."""

    def __init__(self, c_in: int, c_out: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


@register(
    "resnet",
    family="neural",
    features="logmel",
    study="transfer study",
    description="ResNet-34 layout (7x7 stem, BasicBlocks [3, 4, 6, 3], 64-512 channels) over a mel image, "
    "global average pooling, linear",
)
class GenreResNet(nn.Module):
    """Mel image (batch, n_mels, n_frames) -> genre logits (batch, n_classes), torchvision's ResNet layout.

    ``layers`` gives the BasicBlocks per stage (default ResNet-34); stage widths are 64, 128, 256, 512...
    times ``width``. Layer names follow torchvision (``conv1``, ``bn1``, ``layer1``...) except the final
    ``head`` (torchvision's ``fc``).
    """

    def __init__(
        self,
        *,
        n_classes: int,
        input_shape: tuple[int, int],
        layers: Sequence[int] = RESNET34,
        width: float = 1.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_input_shape(input_shape, model="resnet")
        check_positive("resnet", width=width, n_stages=len(layers), **{f"layers[{i}]": n for i, n in enumerate(layers)})
        self.input_norm = nn.BatchNorm2d(1)
        c = scaled(64, width)
        self.conv1 = nn.Conv2d(1, c, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        c_in = c
        for i, n_blocks in enumerate(layers):
            c_out = scaled(64 * 2**i, width)
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(c_in, c_out, stride=stride)]
            blocks += [BasicBlock(c_out, c_out) for _ in range(n_blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            c_in = c_out
        self.n_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(check_dropout(dropout, model="resnet"))
        self.head = nn.Linear(c_in, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.maxpool(self.relu(self.bn1(self.conv1(self.input_norm(x.unsqueeze(1))))))
        for i in range(self.n_stages):
            h = getattr(self, f"layer{i + 1}")(h)
        return self.head(self.dropout(self.avgpool(h).flatten(1)))
