"""What the benchmarks record about the machine they ran on (imported by the scripts beside it)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_features() -> str:
    """The CPU's instruction sets that decide the networks' arithmetic (``/proc/cpuinfo`` flags), e.g.
    ``"AVX-512: yes, AVX512_BF16: yes, AVX512_VNNI: yes, AMX: no"``; empty where there is no cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    flags = {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    named = {"AVX-512": "avx512f", "AVX512_BF16": "avx512_bf16", "AVX512_VNNI": "avx512_vnni", "AMX": "amx_bf16"}
    return ", ".join(f"{name}: {'yes' if flag in flags else 'no'}" for name, flag in named.items())
