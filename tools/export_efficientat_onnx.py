"""One-off export of the shipped EfficientAT ``mn04_as`` network to ONNX, for ONNX Runtime on CPU.

Reads the package's converted weights (``mgr_batch/assets/efficientat/mn04_as.safetensors``, see
``tools/convert_efficientat.py``), exports :class:`mgr_batch.models.efficientat.MobileNetAT` in eval mode with
torch's TorchScript exporter (opset 17; batch and frames dynamic) and writes
``mgr_batch/assets/efficientat/mn04_as.onnx``: input ``logmel`` (batch, 1, 128, frames), outputs ``logits``
(batch, 527) and ``embedding`` (batch, 384). It needs ``onnx`` importable::

    python tools/export_efficientat_onnx.py

``tests/models/test_efficientat.py`` checks that ONNX Runtime on the shipped file gives the torch network's
outputs (to 1e-4), so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mgr_batch.models import efficientat as eat  # noqa: E402

OUT = REPO / "mgr_batch" / "assets" / eat.ASSETS / f"{eat.DEFAULT_PRETRAINED}.onnx"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", type=Path, default=OUT)
    args = ap.parse_args(argv)
    net = eat.pretrained_network(eat.DEFAULT_PRETRAINED)
    x = torch.zeros(2, 1, eat.N_MELS, 300)
    torch.onnx.export(
        net,
        (x,),
        str(args.output),
        input_names=["logmel"],
        output_names=["logits", "embedding"],
        dynamic_axes={"logmel": {0: "batch", 3: "frames"}, "logits": {0: "batch"}, "embedding": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    print(f"wrote {args.output} ({args.output.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
