"""One lever for the default's network cost on CPUs without AMX: int8 through ONNX Runtime (static QDQ
quantization, per-channel int8 weights, uint8 activations), which runs on VNNI on AMD and Intel alike.

Run from the repository root, with onnx importable (``pip install onnx``; onnxruntime is a dependency):

    python benchmarks/int8_cost.py            # 60 GTZAN train/valid songs, calibration on 8 long tracks

It exports MSD_musicnn (penultimate layer, as the default reads it) and uses EfficientAT's shipped ONNX
export, quantizes each with ``onnxruntime.quantization.quantize_static`` (QDQ, per channel, MinMax ranges from
the 3 s clips of the first ``--calibration-tracks`` tracks of ``../shared/data/long``, none of them scored),
then, for each song, computes the default's stack with float32 networks (the product's path) and with one
network in int8 at a time, scores each with the default model's head, and times each network on one thread
(thread CPU time, front end included). Writes benchmarks/results/int8_cost.json and int8_cost.md.
"""

# ruff: noqa: E402  (one thread, set before numpy and torch load their pools)

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import torch
from machine import cpu_features, cpu_name  # benchmarks/machine.py, beside this script
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from mgr_batch.clips import windows
from mgr_batch.features import efficientat as fe
from mgr_batch.features import musicnn as fm
from mgr_batch.features import stacked as fs
from mgr_batch.io import audio
from mgr_batch.models import checkpoint, efficientat

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"


class Penultimate(torch.nn.Module):
    """MSD_musicnn as the default reads it: log-mel patches (n, 96, frames) -> (n, 200)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract(x)["penultimate"]


class Batches(CalibrationDataReader):
    def __init__(self, name: str, x: np.ndarray) -> None:
        self.items = iter([{name: x[i : i + 8]} for i in range(0, len(x), 8)])

    def get_next(self):
        return next(self.items, None)


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def quantize(src: Path, dst: Path, name: str, calibration: np.ndarray) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre))
    quantize_static(
        str(pre),
        str(dst),
        Batches(name, calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return dst


def run(sess: ort.InferenceSession, name: str, x: np.ndarray, out: int) -> np.ndarray:
    return np.concatenate([sess.run(None, {name: x[i : i + 4]})[out] for i in range(0, len(x), 4)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--songs", type=int, default=60)
    ap.add_argument("--calibration-tracks", type=int, default=8)
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    model, spec = checkpoint.load("default")
    sr, clip_s = spec.audio.sr, spec.clips.clip_seconds

    def clips_of(path: Path) -> np.ndarray:
        y = audio.load(str(path), sr=sr, max_duration=spec.audio.max_duration).y
        return windows.cut(y, sr=sr, clip_seconds=clip_s, hop_seconds=clip_s)[0]

    calib = np.concatenate([clips_of(p) for p in sorted((DATA / "long").glob("*/*.ogg"))[: args.calibration_tracks]])
    tmp = Path(tempfile.mkdtemp(prefix="int8-"))
    m_fp32 = tmp / "musicnn.onnx"
    x0 = fm.musicnn_input(calib[:4], sr=sr)
    torch.onnx.export(
        Penultimate(fm.pretrained_network()).eval(),
        (torch.from_numpy(x0),),
        str(m_fp32),
        input_names=["x"],
        output_names=["penultimate"],
        dynamic_axes={"x": {0: "n"}, "penultimate": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )
    m_int8 = quantize(m_fp32, tmp / "musicnn.int8.onnx", "x", fm.musicnn_input(calib, sr=sr))
    e_src = efficientat.pretrained_path().with_suffix(".onnx")
    e_int8 = quantize(e_src, tmp / "efficientat.int8.onnx", "logmel", fe.efficientat_input(calib, sr=sr)[:, None])
    s_m, s_e = session(m_int8), session(e_int8)

    manifest = pd.read_csv(DATA / "gtzan" / "manifest.csv")
    manifest = manifest[manifest["split"].isin(["train", "valid"])].sample(frac=1, random_state=1).head(args.songs)
    cpu = dict.fromkeys(
        ["musicnn float32 (torch)", "musicnn int8", "efficientat float32 (onnxruntime)", "efficientat int8"], 0.0
    )
    rows, minutes = [], 0.0
    parts = fs.parts(spec.features)
    for path in manifest["path"]:
        clips = clips_of(DATA / "gtzan" / path)
        minutes += len(clips) * clip_s / 60
        t = time.thread_time()
        m32 = fs.network_layers(clips, sr=sr, network="MSD_musicnn", layers=("penultimate",))["penultimate"]
        cpu["musicnn float32 (torch)"] += time.thread_time() - t
        t = time.thread_time()
        m8 = run(s_m, "x", fm.musicnn_input(clips, sr=sr), 0)
        cpu["musicnn int8"] += time.thread_time() - t
        t = time.thread_time()
        e32 = fs.network_layers(clips, sr=sr, network="efficientat", layers=("embedding",))["embedding"]
        cpu["efficientat float32 (onnxruntime)"] += time.thread_time() - t
        t = time.thread_time()
        e8 = run(s_e, "logmel", fe.efficientat_input(clips, sr=sr)[:, None], 1)
        cpu["efficientat int8"] += time.thread_time() - t
        assert [p for p, _ in parts] == ["MSD_musicnn", "efficientat"]
        p = {
            k: model.predict_song_proba(np.concatenate(v, axis=1)[:, :, None])
            for k, v in {"float32": (m32, e32), "musicnn int8": (m8, e32), "efficientat int8": (m32, e8)}.items()
        }
        rows.append({k: (int(np.argmax(v)), float(np.abs(v - p["float32"]).max())) for k, v in p.items()})
    result = {
        "rerun": "python benchmarks/int8_cost.py" + (" " + " ".join(argv) if argv else ""),
        "cpu": cpu_name(),
        "cpu_features": cpu_features(),
        "onnxruntime": ort.__version__,
        "songs": len(rows),
        "audio_minutes": minutes,
        "cpu_s_per_audio_minute": {k: v / minutes for k, v in cpu.items()},
        "agreement": {
            k: {
                "same_genre": sum(r[k][0] == r["float32"][0] for r in rows),
                "max_song_prob_diff": max(r[k][1] for r in rows),
            }
            for k in ("musicnn int8", "efficientat int8")
        },
    }
    lines = [
        "# int8 through ONNX Runtime (static QDQ, per-channel) against float32: the default's networks",
        "",
        f"Rerun: `{result['rerun']}`  ",
        f"CPU: {result['cpu']} ({result['cpu_features']}); onnxruntime {result['onnxruntime']}, one thread. "
        f"{len(rows)} GTZAN train/valid songs ({minutes:.1f} min); activation ranges calibrated on the clips of "
        f"{args.calibration_tracks} long tracks.",
        "",
        "| network | CPU-s / audio min |",
        "|---|---|",
        *(f"| {k} | {v:.3f} |" for k, v in result["cpu_s_per_audio_minute"].items()),
        "",
        "| int8 network (the other in float32) | same genre as float32 | largest song probability difference |",
        "|---|---|---|",
        *(
            f"| {k} | {a['same_genre']} of {len(rows)} | {a['max_song_prob_diff']:.3f} |"
            for k, a in result["agreement"].items()
        ),
        "",
    ]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "int8_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "int8_cost.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
