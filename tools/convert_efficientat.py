"""One-off conversion of EfficientAT's ``mn04_as`` weights into the package's safetensors file.

EfficientAT (Florian Schmid, MIT licence, https://github.com/fschmid56/EfficientAT) releases its
AudioSet-trained MobileNets as PyTorch state dicts. This script reads ``mn04_as_mAP_432.pt`` (release
v0.0.1; its sha256 is checked), renames the keys from the original's module tree (``features.N.block.M``,
``classifier.2``, ...) onto :class:`mgr_batch.models.efficientat.MobileNetAT`'s, leaves out the BatchNorm
counters, and writes ``mgr_batch/assets/efficientat/mn04_as.safetensors``, with the licence and the
AudioSet class labels copied beside it::

    python tools/convert_efficientat.py --source ../shared/models/efficientat

The output is byte-identical from run to run. ``tests/models/test_efficientat.py`` checks the converted
network against the original's outputs (``reference_outputs.json`` of the same folder).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "mgr_batch" / "assets" / "efficientat"
WEIGHTS = "mn04_as_mAP_432.pt"
SHA256 = "899a8c6217063f6941793102a2780b3dd788ab11fce468d9cf5f0577c453321c"


def rename(key: str, blocks) -> str | None:
    """The port's name of original key ``key``, or None for a BatchNorm counter.

    ``features.0`` is the stem, ``features.1``-``features.15`` the blocks (their ``block.M`` layers in the
    order expand (when the block widens), depthwise, squeeze-excitation (when it has one), project),
    ``features.16`` the last 1x1 conv; ``classifier.2`` and ``classifier.5`` the head's two Linear layers.
    """
    if key.endswith("num_batches_tracked"):
        return None
    parts = key.split(".")
    if parts[0] == "classifier":
        return {"2": "hidden", "5": "head"}[parts[1]] + "." + parts[2]
    index = int(parts[1])
    if index == 0:
        return "stem." + ".".join(parts[2:])
    if index == 16:
        return "last." + ".".join(parts[2:])
    block = blocks[index - 1]
    layers = [name for name in ("expand", "depthwise", "se", "project") if not _skipped(block, name)]
    layer = layers[int(parts[3])]
    rest = parts[4:]
    if layer == "se":  # conc_se_layers.0.fc1.weight -> fc1.weight
        assert rest[:2] == ["conc_se_layers", "0"], key
        rest = rest[2:]
    return f"blocks.{index - 1}.{layer}." + ".".join(rest)


def _skipped(block, name: str) -> bool:
    from torch import nn

    return isinstance(getattr(block, name), nn.Identity)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        default=str(REPO.parent / "shared" / "models" / "efficientat"),
        help="folder holding mn04_as_mAP_432.pt, LICENSE.EfficientAT, audioset_class_labels_indices.csv",
    )
    args = parser.parse_args(argv)
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(REPO))
    from mgr_batch.models.efficientat import MobileNetAT

    source = Path(args.source)
    raw = (source / WEIGHTS).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"{WEIGHTS}: sha256 {digest}, expected {SHA256} (the v0.0.1 release file)")
    original = torch.load(source / WEIGHTS, map_location="cpu", weights_only=True)
    net = MobileNetAT()
    expected = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    state = {}
    for key, value in original.items():
        name = rename(key, list(net.blocks))
        if name is None:
            continue
        if name not in expected:
            raise SystemExit(f"{key} -> {name}: not a parameter of the port")
        if tuple(value.shape) != tuple(expected[name].shape):
            raise SystemExit(f"{key} -> {name}: {tuple(value.shape)}, the port expects {tuple(expected[name].shape)}")
        state[name] = value.detach().to(torch.float32).contiguous()
    if set(state) != set(expected):
        raise SystemExit(f"unmapped port parameters: {sorted(set(expected) - set(state))}")
    n_original = sum(v.numel() for k, v in original.items() if not k.endswith("num_batches_tracked"))
    n_port = sum(v.numel() for v in state.values())
    if n_original != n_port:
        raise SystemExit(f"{n_original} numbers in the original, {n_port} converted")
    ASSETS.mkdir(parents=True, exist_ok=True)
    about = {
        "model": "mn04_as",
        "source": f"EfficientAT v0.0.1 release file {WEIGHTS} (sha256 {SHA256}), MIT licence",
        "classes": "AudioSet, 527 (class_labels_indices.csv)",
    }
    out = ASSETS / "mn04_as.safetensors"
    save_file(dict(sorted(state.items())), str(out), metadata={"efficientat": json.dumps(about)})
    os.chmod(out, 0o644)
    for src, dst in (
        ("LICENSE.EfficientAT", "LICENSE.EfficientAT"),
        ("audioset_class_labels_indices.csv", "class_labels_indices.csv"),
    ):
        shutil.copyfile(source / src, ASSETS / dst)
        os.chmod(ASSETS / dst, 0o644)
    n_params = sum(v.numel() for k, v in state.items() if "running_" not in k)
    print(f"{out.relative_to(REPO)}: {len(state)} tensors, {n_params} parameters, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
