"""The arithmetic of musicnn's forward passes (the pre-trained embedding networks): float32 or bfloat16.

On a CPU with native bfloat16 dot products, oneDNN runs bfloat16 convolutions faster than float32: MSD_musicnn
took 0.47x its float32 CPU time on one thread on an Intel Xeon with AMX tiles (``precision-xeon-amx.md``, before
musicnn skipped its dead filters), and 0.84x on an AMD EPYC (Zen 5) with AVX512_BF16 and no AMX (``precision.md``
in ``benchmarks/results/``; the default's genre the same for all 444 GTZAN songs and 26 long tracks, song
probabilities within 0.013). So ``"auto"`` means bfloat16 on a CPU with AMX or AVX512_BF16
(:func:`native_bfloat16`) and float32 on every other CPU, where bfloat16 is emulated, and on GPUs. EfficientAT
stays float32 whatever the setting (on CPU it runs through ONNX Runtime; in torch its depthwise convolutions took
1.18x longer in bfloat16 on the Xeon). Feature front ends (log-mel, resampling) always run in float32; only the
network's layers are cast.

A stage sets the precision for the work it does (:func:`networks`); the networks' call sites take it from
there and resolve it for the device they run on (:func:`autocast`), so the feature kinds keep their
``(clips, *, sr, cfg)`` signature.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator

import torch

from mgr_batch.config import PRECISIONS
from mgr_batch.errors import ConfigError

_CURRENT: contextvars.ContextVar[str] = contextvars.ContextVar("mgr_batch_network_precision", default="float32")


#: torch's private probes of the CPU's bfloat16 instructions (``torch.cpu._is_amx_tile_supported`` and
#: ``torch.cpu._is_avx512_bf16_supported``), the private torch names the package uses;
#: ``tests/test_private_apis.py`` fails first where an upgrade moves one.
AMX_PROBE = "_is_amx_tile_supported"
AVX512_BF16_PROBE = "_is_avx512_bf16_supported"


@functools.cache
def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 dot products natively (Intel AMX tiles or AVX512_BF16); False where
    this torch lacks the probes."""
    probes = (getattr(torch.cpu, name, None) for name in (AMX_PROBE, AVX512_BF16_PROBE))
    return any(bool(probe()) for probe in probes if probe is not None)


def resolve(precision: str, device: str | torch.device = "cpu") -> str:
    """``"float32"`` or ``"bfloat16"``: what ``precision`` (one of :data:`PRECISIONS`) means on ``device``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision
    return "bfloat16" if torch.device(device).type == "cpu" and native_bfloat16() else "float32"


@contextlib.contextmanager
def networks(precision: str) -> Iterator[None]:
    """Within the block, the pre-trained networks run in ``precision`` (one of :data:`PRECISIONS`, checked)."""
    resolve(precision)
    token = _CURRENT.set(precision)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current(device: str | torch.device = "cpu") -> str:
    """What a network on ``device`` runs in here and now (``"float32"`` outside any :func:`networks` block)."""
    return resolve(_CURRENT.get(), device)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """The context a network's forward pass on ``device`` runs in: bfloat16 autocast, or nothing."""
    if current(device) == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
