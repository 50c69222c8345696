"""musicnn (Pons and Serra, 2019) in PyTorch: its pre-trained taggers, their input features and tag lists.

A faithful port of the models shipped in the ``musicnn`` 0.1.0 wheel (ISC licence, see
``mgr_batch/assets/musicnn/``): ``MSD_musicnn`` and ``MTT_musicnn`` (the musically motivated CNN) and
``MSD_vgg`` and ``MTT_vgg`` (its VGG-like baselines), with weights converted from the original
TensorFlow checkpoints by ``tools/convert_musicnn.py``. Given the original's inputs (``tests/musicnn_reference.py``),
the pre-trained models reproduce its tag probabilities (see ``tests/models/test_musicnn.py``).

Layout differs from the original on purpose: features are (n_mels, n_frames) like every other feature
of mgr-batch (:func:`mgr_batch.features.spectral.log_mel`), where musicnn used (n_frames, n_mels).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mgr_batch.errors import CheckpointError, ConfigError
from mgr_batch.models.musicnn_tags import PRETRAINED_TAGS
from mgr_batch.models.registry import register

SR = 16000
N_FFT = 512
HOP_LENGTH = 256
N_MELS = 96
#: Frames in musicnn's 3 s input patch: ``librosa.time_to_frames(3, sr=SR, n_fft=N_FFT, hop_length=HOP_LENGTH) + 1``.
N_FRAMES = 187
#: The original's batch norm epsilon (``tf.compat.v1.layers.batch_normalization``'s default).
BN_EPS = 1e-3
#: Its momentum 0.99 (weight of the old running value) is PyTorch's 0.01 (weight of the new one).
BN_MOMENTUM = 0.01


# --- pre-trained weights ---------------------------------------------------------------------------


def pretrained_path(name: str) -> Path:
    """Path of the shipped weights of pre-trained model ``name`` (one of :data:`PRETRAINED_TAGS`)."""
    if name not in PRETRAINED_TAGS:
        raise ConfigError(f"unknown musicnn model {name!r} (known: {', '.join(PRETRAINED_TAGS)})")
    return Path(str(resources.files("mgr_batch") / "assets" / "musicnn" / f"{name}.safetensors"))


def load_pretrained_state(name: str) -> dict[str, torch.Tensor]:
    """The converted state dict of pre-trained model ``name`` (batch norm counters left out)."""
    from safetensors.torch import load_file  # only needed when pre-trained weights are asked for

    path = pretrained_path(name)
    if not path.is_file():
        raise CheckpointError(f"musicnn weights {path} are missing (run tools/convert_musicnn.py weights)")
    return load_file(str(path))


def _init_pretrained(model: nn.Module, name: str, family: str) -> tuple[str, ...] | None:
    """Load ``name``'s weights into ``model``; the head only where its shape fits. Returns the tags, or None."""
    if not name.endswith(family):
        raise ConfigError(f"pre-trained {name!r} is not a {family!r} model")
    state = load_pretrained_state(name)
    own = model.state_dict()
    head = {k for k in state if k.startswith("head.")}
    fits = all(state[k].shape == own[k].shape for k in head)
    if not fits:  # a new task: keep the pre-trained body, start the head afresh
        state = {k: v for k, v in state.items() if k not in head}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatches: a non-default architecture
        raise ConfigError(f"pre-trained {name!r} needs the default architecture: {exc}") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked") and not (not fits and k.startswith("head."))]
    if missing or unexpected:
        raise CheckpointError(f"musicnn weights {name!r} do not fit: missing {missing}, unexpected {unexpected}")
    return PRETRAINED_TAGS[name] if fits else None


# --- musicnn ---------------------------------------------------------------------------------------


class _ConvBlock(nn.Module):
    """Convolution, ReLU, then batch norm: musicnn's order (the norm comes after the non-linearity)."""

    def __init__(self, conv: nn.Module, norm: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.relu(self.conv(x)))

    def max_over_frequency(self, x: torch.Tensor) -> torch.Tensor:
        """``self(x).amax(dim=2)``: (batch, c, mel, time) -> (batch, c, time).

        In eval mode the batch norm is a fixed affine map per channel, and ReLU and an affine map of
        positive (negative) scale commute with a max (min) over frequency: pooling the convolution's
        output first and normalizing only the pooled map gives the same numbers, without passing the
        whole (mel x time) map through ReLU and the norm (a third of musicnn's CPU time).

        A negative-scale channel's minimum is the maximum of its negated convolution (weights and bias negated,
        exact), so one max pass serves every channel (a min pass took a quarter of musicnn's time in bfloat16).

        Only live filters are convolved (:func:`live_filters`): a dead filter's map is its bias wherever it is,
        and so is its maximum. The pre-trained networks' front ends are mostly dead units (MSD_musicnn: 66 of
        its 561 filters are live), so this skips most of the front end's arithmetic.
        """
        if self.training or not isinstance(self.norm, nn.BatchNorm2d) or not self.norm.track_running_stats:
            return self.norm(F.relu(self.conv(x))).amax(dim=2)
        n, conv = self.norm, self.conv
        assert isinstance(conv, nn.Conv2d) and conv.padding_mode == "zeros"
        scale = (n.weight if n.affine else torch.ones_like(n.running_var)) / torch.sqrt(n.running_var + n.eps)
        shift = (n.bias if n.affine else 0.0) - n.running_mean * scale
        sign = torch.where(scale >= 0, 1.0, -1.0).to(conv.weight.dtype)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(sign)
        live = live_filters(conv.weight)
        if len(live) == 0:  # nothing to convolve: let the plain computation say what shape comes out
            live = torch.arange(len(sign))
        z = _conv2d(conv, x, (conv.weight * sign[:, None, None, None])[live], (bias * sign)[live])
        live_pooled = _max_over_frequency(z) * sign[live][None, :, None]  # max of z, or min where sign < 0
        if len(live) == len(sign):
            pooled = live_pooled
        else:  # a dead filter's map is its bias
            pooled = bias.to(live_pooled.dtype)[None, :, None].repeat(z.shape[0], 1, z.shape[-1])
            pooled[:, live] = live_pooled
        return F.relu(pooled) * scale[None, :, None] + shift[None, :, None]

    def max_over_frequency_of_affine(
        self, xhat: torch.Tensor, ones: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor
    ) -> torch.Tensor:
        """``self(gamma * xhat + beta).amax(dim=2)`` for training, with ``xhat`` (batch, 1, mel, time) data
        that needs no gradient and ``ones`` (1, 1, mel, time) ones padded as ``xhat`` is.

        The convolution is linear: conv_W(gamma * xhat + beta) = conv_(gamma W)(xhat) + beta * conv_W(ones).
        Taken so, the backward pass needs no gradient with respect to the whole (batch, 1, mel, time) input
        (half of musicnn's CPU training time, for the input norm's two parameters), and gamma's gradient
        comes through the small weight tensor, not the whole map. The max over frequency takes its
        gradient by index: ``amax`` spreads it over ties, but ties here are ReLU's zeros, whose gradient
        ReLU stops, and the batch norm's parameters see the same sums either way.
        """
        conv = self.conv
        assert isinstance(conv, nn.Conv2d) and conv.padding_mode == "zeros"
        offset = _conv2d(conv, ones, conv.weight) * beta  # (1, c, mel', time)
        if conv.bias is not None:
            offset = offset + conv.bias[None, :, None, None]
        z = _conv2d(conv, xhat, conv.weight * gamma).add_(offset)
        return self.norm(F.relu(z)).max(dim=2).values


def _conv2d(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``conv``'s convolution of ``x`` with other ``weight`` and ``bias`` (its stride, padding, dilation, groups)."""
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


#: A filter whose weights' norm is below this share of its block's largest is dead: its response is below
#: float32's resolution of the live ones'. Training leaves such units behind (weight decay drives the weights of
#: a unit ReLU switched off towards zero): MSD_musicnn's dead front-end filters have norms of 1e-29 to 1e-9.
DEAD_FILTER = 1e-7


def live_filters(weight: torch.Tensor) -> torch.Tensor:
    """Indices (k,) of the live filters of a convolution's ``weight`` (c_out, c_in, kh, kw) (see :data:`DEAD_FILTER`)."""
    norms = weight.detach().flatten(1).norm(dim=1)
    return torch.nonzero(norms > DEAD_FILTER * norms.max()).squeeze(1)


def _max_over_frequency(z: torch.Tensor) -> torch.Tensor:
    """``z.amax(dim=2)`` of a (batch, c, mel, time) map: (batch, c, time). A channels-last map is reduced as
    a running maximum of its (batch, time, c) mel slices, each one block of memory: torch's ``amax`` took 11x
    longer for ``dim=2`` of the 4-D layout, and 1.3x (float32) to 4x (bfloat16) longer over the same
    (batch, mel, time, c) view (one thread, AMD EPYC Zen 5; ``torch.aminmax`` was slower still)."""
    if not (z.is_contiguous(memory_format=torch.channels_last) and not z.is_contiguous()):
        return z.amax(dim=2)
    slices = z.permute(0, 2, 3, 1)  # (batch, mel, time, c), the same memory
    if z.requires_grad or torch.jit.is_tracing():  # a gradient, or an export: one differentiable op
        return slices.amax(dim=1).permute(0, 2, 1)
    out = slices[:, 0].clone()
    for i in range(1, slices.shape[1]):
        torch.maximum(out, slices[:, i], out=out)
    return out.permute(0, 2, 1)


@register(
    "musicnn",
    family="neural",
    features="musicnn",
    study="Pons and Serra 2019, musicnn (pre-trained on MSD or MagnaTagATune)",
    description="timbral (7x38, 7x67) and temporal (128, 64, 32) filters, residual 1-D conv mid-end, "
    "max+mean pooled dense back end; params.pretrained='MSD_musicnn' or 'MTT_musicnn' loads the shipped weights",
)
class Musicnn(nn.Module):
    """musicnn: musicnn patches (batch, n_mels, n_frames) -> tag logits (batch, n_classes).

    Inputs are musicnn log-mel patches (:mod:`mgr_batch.features.musicnn`); the network is fully convolutional in time, so any
    number of frames works (the pre-trained models saw 187). ``pretrained`` names shipped weights
    (``"MSD_musicnn"``, ``"MTT_musicnn"``); their 50-tag head is loaded only when ``n_classes`` is 50,
    otherwise the pre-trained body gets a fresh ``head`` (for fine-tuning). ``self.tags`` names the
    outputs when the pre-trained head was loaded, else it is None.
    """

    #: Training channels-last on CPU is slower (3.8 vs 2.5 s per batch of 32 on 2 threads; 9.3 vs 7.1 s
    #: before the front end's training path, ``max_over_frequency_of_affine``, made training 2.2x faster).
    TRAIN_CHANNELS_LAST = False
    #: Each batch norm follows a ReLU: nothing for conv-BN folding (whose trace cannot pick live filters).
    FOLD_BATCH_NORM = False

    def __init__(
        self,
        *,
        n_classes: int,
        input_shape: tuple[int, int] = (N_MELS, N_FRAMES),
        pretrained: str | None = None,
        frontend_filters: float = 1.6,
        midend_filters: int = 64,
        backend_units: int = 200,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        n_mels = input_shape[0]
        if pretrained and n_mels != N_MELS:
            raise ConfigError(f"pre-trained musicnn needs {N_MELS} mel bands, got input_shape {input_shape}")
        self.input_norm = nn.BatchNorm2d(1, eps=BN_EPS, momentum=BN_MOMENTUM)

        def block(conv: nn.Module, channels: int, norm=nn.BatchNorm2d) -> _ConvBlock:
            return _ConvBlock(conv, norm(channels, eps=BN_EPS, momentum=BN_MOMENTUM))

        # front end: vertical (timbral) filters spanning 40% and 70% of the mel bands and 7 frames,
        # horizontal (temporal) filters of 128, 64 and 32 frames on each band; each max-pooled over frequency
        n_timbral, n_temporal = int(frontend_filters * 128), int(frontend_filters * 32)
        self.timbral = nn.ModuleList(
            block(nn.Conv2d(1, n_timbral, (int(share * n_mels), 7), padding=(0, 3)), n_timbral) for share in (0.4, 0.7)
        )
        self.temporal_lengths = (128, 64, 32)
        self.temporal = nn.ModuleList(
            block(nn.Conv2d(1, n_temporal, (1, k)), n_temporal) for k in self.temporal_lengths
        )
        n_front = 2 * n_timbral + 3 * n_temporal
        # mid end: three 1-D convolutions over time, the last two residual
        self.midend = nn.ModuleList(
            block(nn.Conv1d(c_in, midend_filters, 7, padding=3), midend_filters, nn.BatchNorm1d)
            for c_in in (n_front, midend_filters, midend_filters)
        )
        n_pooled = 2 * (n_front + 3 * midend_filters)
        # back end: max and mean over time of all front- and mid-end maps, dense, output
        self.pool_norm = nn.BatchNorm1d(n_pooled, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.dense = nn.Linear(n_pooled, backend_units)
        self.dense_norm = nn.BatchNorm1d(backend_units, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backend_units, n_classes)
        self.tags = _init_pretrained(self, pretrained, "_musicnn") if pretrained else None

    @property
    def embedding_dims(self) -> dict[str, int]:
        """Sizes of the per-patch embeddings :meth:`extract` returns."""
        n = self.pool_norm.num_features // 2
        return {"max_pool": n, "mean_pool": n, "penultimate": self.dense.out_features}

    def extract(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every output musicnn's extractor gives, for patches ``x`` (batch, n_mels, n_frames).

        Keys and shapes: ``timbral`` (batch, 2 * 204, n_frames), ``temporal`` (batch, 3 * 51, n_frames),
        ``cnn1``, ``cnn2``, ``cnn3`` (batch, 64, n_frames), the embeddings ``max_pool`` and ``mean_pool``
        (batch, 753) and ``penultimate`` (batch, 200), and ``logits`` (batch, n_classes).
        """
        norm = self.input_norm
        if self.training and torch.is_grad_enabled() and norm.affine:
            xhat = self._standardized(x.unsqueeze(1))  # (batch, 1, mel, time), the norm's affine part to come
            ones = torch.ones_like(xhat[:1])

            def pooled(blk: _ConvBlock, pad: tuple[int, int] | None) -> torch.Tensor:
                padded = (F.pad(xhat, pad), F.pad(ones, pad)) if pad else (xhat, ones)
                return blk.max_over_frequency_of_affine(*padded, norm.weight, norm.bias)
        else:
            h = norm(x.unsqueeze(1))  # (batch, 1, mel, time)

            def pooled(blk: _ConvBlock, pad: tuple[int, int] | None) -> torch.Tensor:
                return blk.max_over_frequency(F.pad(h, pad) if pad else h)

        timbral = [pooled(blk, None) for blk in self.timbral]  # (batch, c, time) each
        # TF's "same" padding: for an even length k, (k - 1) // 2 frames before and k // 2 after
        temporal = [
            pooled(blk, ((k - 1) // 2, k // 2)) for k, blk in zip(self.temporal_lengths, self.temporal, strict=True)
        ]
        front = torch.cat(timbral + temporal, dim=1)
        cnn1 = self.midend[0](front)
        cnn2 = self.midend[1](cnn1) + cnn1
        cnn3 = self.midend[2](cnn2) + cnn2
        maps = torch.cat([front, cnn1, cnn2, cnn3], dim=1)  # (batch, 753, time)
        max_pool, mean_pool = maps.amax(dim=2), maps.mean(dim=2)
        # musicnn flattens a (channels, 2) array: max and mean interleaved, channel by channel
        pooled = torch.stack([max_pool, mean_pool], dim=2).flatten(1)
        penultimate = self.dense_norm(F.relu(self.dense(self.dropout(self.pool_norm(pooled)))))
        logits = self.head(self.dropout(penultimate))
        return {
            "timbral": torch.cat(timbral, dim=1),
            "temporal": torch.cat(temporal, dim=1),
            "cnn1": cnn1,
            "cnn2": cnn2,
            "cnn3": cnn3,
            "max_pool": max_pool,
            "mean_pool": mean_pool,
            "penultimate": penultimate,
            "logits": logits,
        }

    def _standardized(self, x: torch.Tensor) -> torch.Tensor:
        """``self.input_norm`` in training mode without its affine part: (batch, 1, mel, time), normalized
        by the batch's statistics, with the running statistics updated as ``nn.BatchNorm2d`` does."""
        norm = self.input_norm
        momentum = norm.momentum
        if norm.track_running_stats and norm.num_batches_tracked is not None:
            norm.num_batches_tracked.add_(1)
            if momentum is None:
                momentum = 1.0 / float(norm.num_batches_tracked)
        return F.batch_norm(x, norm.running_mean, norm.running_var, None, None, True, momentum or 0.0, norm.eps)

    def embed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The pooled embeddings of patches ``x``: ``max_pool``, ``mean_pool`` (batch, 753), ``penultimate`` (batch, 200)."""
        out = self.extract(x)
        return {k: out[k] for k in ("max_pool", "mean_pool", "penultimate")}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extract(x)["logits"]

    def tag(self, x: torch.Tensor) -> torch.Tensor:
        """Tag probabilities (batch, n_classes): the sigmoid of the logits, as musicnn's taggram."""
        return torch.sigmoid(self(x))


@register(
    "musicnn_vgg",
    family="neural",
    features="musicnn",
    study="Pons and Serra 2019, musicnn's VGG-like baseline (pre-trained on MSD or MagnaTagATune)",
    description="5 blocks of 3x3 conv (128 filters), ReLU, BN, max-pool; dropout, linear; fixed 187-frame input; "
    "params.pretrained='MSD_vgg' or 'MTT_vgg' loads the shipped weights",
)
class MusicnnVGG(nn.Module):
    """musicnn's VGG baseline: patches (batch, n_mels, n_frames) -> tag logits (batch, n_classes).

    Unlike :class:`Musicnn` it flattens its last feature map, so inputs must have ``input_shape``
    (96 x 187 for the pre-trained ``"MSD_vgg"`` and ``"MTT_vgg"``). ``pretrained`` and ``tags`` work
    as in :class:`Musicnn`.
    """

    #: Max-pool (kernel, stride) after each block, as (mel, time); the original's are (time, mel).
    POOLS = (((1, 4), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4)))

    def __init__(
        self,
        *,
        n_classes: int,
        input_shape: tuple[int, int] = (N_MELS, N_FRAMES),
        pretrained: str | None = None,
        filters: int = 128,
        dropout: float = 0.5,
        block_dropout: float = 0.25,
    ) -> None:
        super().__init__()
        if pretrained and tuple(input_shape) != (N_MELS, N_FRAMES):
            raise ConfigError(f"pre-trained musicnn VGG needs input_shape {(N_MELS, N_FRAMES)}, got {input_shape}")
        self.input_shape = tuple(input_shape)
        self.input_norm = nn.BatchNorm2d(1, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.blocks = nn.ModuleList(
            _ConvBlock(
                nn.Conv2d(c_in, filters, 3, padding=1), nn.BatchNorm2d(filters, eps=BN_EPS, momentum=BN_MOMENTUM)
            )
            for c_in in (1, filters, filters, filters, filters)
        )
        self.pools = nn.ModuleList(nn.MaxPool2d(k, s) for k, s in self.POOLS)
        self.block_dropout = nn.Dropout(block_dropout)
        self.dropout = nn.Dropout(dropout)
        with torch.no_grad():
            n_flat = self._maps(torch.zeros(1, *self.input_shape))[-1].numel()
        self.head = nn.Linear(n_flat, n_classes)
        self.tags = _init_pretrained(self, pretrained, "_vgg") if pretrained else None

    def _maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, maps = self.input_norm(x.unsqueeze(1)), []
        for i, (blk, pool) in enumerate(zip(self.blocks, self.pools, strict=True)):
            h = pool(blk(self.block_dropout(h) if i else h))
            maps.append(h)
        return maps

    def extract(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``pool1`` .. ``pool5`` (batch, 128, mel', time') as in musicnn's extractor, ``embedding``
        (batch, 256: pool5 flattened) and ``logits`` (batch, n_classes)."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ConfigError(f"musicnn VGG takes inputs of shape {self.input_shape}, got {tuple(x.shape[1:])}")
        maps = self._maps(x)
        flat = maps[-1].permute(0, 3, 2, 1).flatten(1)  # TF flattens (time, mel, channels)
        out = {f"pool{i + 1}": m for i, m in enumerate(maps)}
        out |= {"embedding": flat, "logits": self.head(self.dropout(flat))}
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extract(x)["logits"]

    def tag(self, x: torch.Tensor) -> torch.Tensor:
        """Tag probabilities (batch, n_classes)."""
        return torch.sigmoid(self(x))
