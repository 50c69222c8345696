"""One lever for the default's network cost: MSD_musicnn's penultimate embedding under ONNX Runtime against
PyTorch, on one CPU thread, with the agreement of the two.

Run from the repository root, with onnxruntime and onnx importable (they are not dependencies of
mgr-batch: ``pip install onnxruntime onnx``):

    python benchmarks/onnx_cost.py                 # 64 patches of noise-like log-mel, 5 timed tries each

It exports the network the decode tasks run (``features.musicnn.pretrained_network``, eval mode,
``extract(x)["penultimate"]``) with the TorchScript exporter, times both on the same (64, 96, 187) batch in
chunks of ``CHUNK_CLIPS`` (what the decode tasks run), and writes benchmarks/results/onnx_cost.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import cpu_name  # noqa: E402  (benchmarks/machine.py, beside this script)

from mgr_batch.features.musicnn import CHUNK_CLIPS, pretrained_network  # noqa: E402
from mgr_batch.models.musicnn import N_FRAMES, N_MELS  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


class Penultimate(torch.nn.Module):
    """The network as the embedding uses it: patches (n, 96, 187) -> (n, 200)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract(x)["penultimate"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    try:
        import onnxruntime as ort
    except ImportError:
        sys.exit("onnx_cost.py needs onnxruntime and onnx: pip install onnxruntime onnx")
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = np.ascontiguousarray(rng.uniform(0, 3, size=(args.clips, N_MELS, N_FRAMES)).astype(np.float32))
    model = Penultimate(pretrained_network("MSD_musicnn")).eval()

    def run_torch() -> np.ndarray:
        with torch.inference_mode():
            return np.concatenate(
                [model(torch.from_numpy(x[i : i + CHUNK_CLIPS])).numpy() for i in range(0, len(x), CHUNK_CLIPS)]
            )

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "musicnn.onnx"
        torch.onnx.export(
            model,
            (torch.from_numpy(x[:CHUNK_CLIPS]),),
            str(path),
            input_names=["x"],
            output_names=["penultimate"],
            dynamic_axes={"x": {0: "n"}, "penultimate": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

        def run_onnx() -> np.ndarray:
            return np.concatenate(
                [session.run(None, {"x": x[i : i + CHUNK_CLIPS]})[0] for i in range(0, len(x), CHUNK_CLIPS)]
            )

        ref, got = run_torch(), run_onnx()  # warm both
        times: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
        for _ in range(args.repeats):
            for name, fn in (("torch", run_torch), ("onnxruntime", run_onnx)):
                t0 = time.process_time()
                fn()
                times[name].append(time.process_time() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    audio_min = args.clips * 3.0 / 60  # a patch is 3 s of audio
    result = {
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "clips": args.clips,
        "repeats": args.repeats,
        "cpu_s": med,
        "cpu_s_per_audio_min": {k: v / audio_min for k, v in med.items()},
        "onnx_over_torch": med["onnxruntime"] / med["torch"],
        "max_abs_diff": float(np.abs(got - ref).max()),
        "max_abs_ref": float(np.abs(ref).max()),
        "tries": times,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "onnx_cost.json").write_text(json.dumps(result, indent=2))
    md = "\n".join(
        [
            "# MSD_musicnn under ONNX Runtime against PyTorch (one thread)",
            "",
            f"Rerun: `python benchmarks/onnx_cost.py`. CPU: {result['cpu']}; torch {result['torch']}, onnxruntime "
            f"{result['onnxruntime']}; {args.clips} patches of 3 s in chunks of {CHUNK_CLIPS}, median of "
            f"{args.repeats} interleaved tries (process CPU time).",
            "",
            "| runtime | CPU s | CPU s per audio minute |",
            "|---|---|---|",
            *(f"| {k} | {med[k]:.3f} | {result['cpu_s_per_audio_min'][k]:.3f} |" for k in med),
            "",
            f"ONNX Runtime / PyTorch: {result['onnx_over_torch']:.2f}x. Largest difference of the 200-value "
            f"embeddings: {result['max_abs_diff']:.2e} (largest value {result['max_abs_ref']:.2f}).",
            "",
        ]
    )
    (RESULTS / "onnx_cost.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
