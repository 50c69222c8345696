"""The GPU path of mgr-batch: tagging in the GPU actor pool, and one epoch of fine-tuning on GPU against CPU.

Run from the repository root on a machine with a CUDA GPU (``../shared/data`` beside the repository):

    python benchmarks/gpu.py                    # about 10 minutes on one GPU
    python benchmarks/gpu.py --smoke --data D --results R   # CPU only, tiny: the test suite's check of this script

The catalog is real music: the ``kind == full`` GTZAN songs and the ``long`` tracks, hard-linked as often as
``--minutes`` needs (distinct paths, so distinct songs). Decoding runs on the CPU tasks; the model, and the
pre-trained networks of an embedding model, run in the GPU actor pool (``--num-gpus``). For every actor count
and batch size of the grid (actors share the GPUs: each asks for ``n_gpus / actors`` of one), it runs
``mgr-batch tag`` as a subprocess (its own embedded Ray, start-up included) and reports clips per second per
GPU, the GPU's utilization and memory sampled every ``--sample-s`` seconds through the run (``nvidia-smi``),
and wall time. Then ``mgr-batch train`` runs ``--epochs`` epoch(s) of fine-tuning of each ``--model-types``
on ``--train-songs`` labelled songs, once with ``--use-gpu`` and once on the CPU.

With ``--smoke`` (no GPU needed) every run asks for no GPU, and the actor path is forced
(``inference.in_decode_tasks: false, embed_in_actor: true``), so the script's own code and the actor path of
the GPU code run on CPU; figures from a smoke run mean nothing. Results go to ``--results`` as gpu.json and
gpu.md (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.dataset as pads
from machine import cpu_name  # benchmarks/machine.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a")
#: The forced actor path of a smoke run: what ``--num-gpus`` does, on CPU.
ACTOR_PATH_YAML = "inference:\n  in_decode_tasks: false\n  embed_in_actor: true\n"


def catalog_sources(data: Path) -> list[Path]:
    """The catalog's source files: GTZAN's full songs and the long tracks of ``data`` (a ``../shared/data``),
    or, for any other folder, every audio file under it."""
    gtzan = data / "gtzan" / "manifest.csv"
    if gtzan.exists():
        m = pd.read_csv(gtzan)
        files = [data / "gtzan" / p for p in m.loc[m["kind"] == "full", "path"]]
        files += sorted((data / "long").rglob("*.ogg"))
        return files
    return sorted(p for p in data.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)


def build_catalog(sources: list[Path], folder: Path, minutes: float) -> tuple[Path, float]:
    """Hard links (or copies across devices) of ``sources`` in ``folder``, repeated until the catalog holds
    ``minutes`` of audio. Returns the folder and its audio minutes."""
    import soundfile as sf

    durations = []
    for f in sources:
        try:
            durations.append(sf.info(str(f)).duration)
        except sf.LibsndfileError:  # a format libsndfile cannot read: count it as 30 s
            durations.append(30.0)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    total, k = 0.0, 0
    while total < minutes * 60 or k == 0:
        for f, d in zip(sources, durations, strict=True):
            target = folder / f"r{k:03d}-{f.parent.name}-{f.name}"
            try:
                os.link(f, target)
            except OSError:
                shutil.copyfile(f, target)
            total += d
            if total >= minutes * 60:
                break
        k += 1
    return folder, total / 60


class GpuSampler:
    """Samples every GPU's utilization (%) and memory used (MiB) with ``nvidia-smi`` in a thread while active;
    records nothing where there is no ``nvidia-smi``."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.samples: list[tuple[float, int, float, float]] = []  # (t, gpu index, util %, memory MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def _loop(self) -> None:
        t0 = time.perf_counter()
        query = ["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
        while not self._stop.wait(self.interval_s):
            try:
                text = subprocess.run(query, capture_output=True, text=True, timeout=10, check=True).stdout
            except (subprocess.SubprocessError, OSError):
                continue
            for line in text.strip().splitlines():
                idx, util, mem = (s.strip() for s in line.split(","))
                self.samples.append((time.perf_counter() - t0, int(idx), float(util), float(mem)))

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    def summary(self) -> dict:
        if not self.samples:
            return {"n_samples": 0}
        util = pd.Series([s[2] for s in self.samples])
        mem = pd.Series([s[3] for s in self.samples])
        return {
            "n_samples": len(self.samples),
            "util_mean": float(util.mean()),
            "util_median": float(util.median()),
            "util_p90": float(util.quantile(0.9)),
            "share_busy_over_50": float((util > 50).mean()),
            "memory_peak_mib": float(mem.max()),
        }


def run_cli(args: list[str], *, log: Path, cwd: Path) -> tuple[int, float]:
    """``mgr-batch ARGS`` in a subprocess with its own embedded Ray; output to ``log``; (exit code, wall s)."""
    raytmp = Path(tempfile.mkdtemp(prefix="gpub-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(raytmp)
    t0 = time.perf_counter()
    try:
        with open(log, "wb") as out:
            rc = subprocess.call(
                [sys.executable, "-m", "mgr_batch.cli", *args], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd
            )
        return rc, time.perf_counter() - t0
    finally:
        shutil.rmtree(raytmp, ignore_errors=True)


def _fail(what: str, log: Path) -> None:
    sys.exit(f"{what} failed; see {log}:\n{log.read_text(errors='replace')[-3000:]}")


def tag_run(
    catalog: Path,
    work: Path,
    *,
    actors: int,
    batch_size: int,
    n_gpus: int,
    model: str | None,
    smoke: bool,
    sample_s: float,
) -> dict:
    """One ``tag`` of the catalog with ``actors`` inference actors sharing ``n_gpus`` GPUs."""
    name = f"tag-a{actors}-b{batch_size}"
    out = work / f"out-{name}"
    args = [
        "tag",
        str(catalog),
        "--output",
        str(out),
        "--force",
        "--num-workers",
        str(actors),
        "--batch-size",
        str(batch_size),
    ]
    if model:
        args += ["--model", model]
    if smoke:
        cfg = work / "actor-path.yaml"
        cfg.write_text(ACTOR_PATH_YAML)
        args += ["--config", str(cfg)]
    else:
        args += ["--num-gpus", f"{n_gpus / actors:.4g}"]
    log = work / f"{name}.log"
    with GpuSampler(sample_s) as gpu:
        rc, wall = run_cli(args, log=log, cwd=work)
    if rc != 0:
        _fail(name, log)
    run = json.loads((out / "run.json").read_text())
    n_clips = pads.dataset(str(out / "clips"), format="parquet").count_rows()
    return {
        "name": name,
        "actors": actors,
        "batch_size": batch_size,
        "gpus_per_actor": 0.0 if smoke else n_gpus / actors,
        "wall_s": wall,
        "n_songs": run["n_songs"],
        "n_errors": run["n_errors"],
        "n_clips": n_clips,
        "audio_s": run["audio_seconds"],
        "clips_per_s": n_clips / wall,
        "clips_per_s_per_gpu": n_clips / wall / max(n_gpus, 1),
        "gpu": gpu.summary(),
    }


def train_manifest(data: Path, work: Path, n_songs: int) -> Path:
    """A manifest of ``n_songs`` labelled songs (genres in turn), train and valid sides from the data's own
    split (``manifest.csv`` of ``data/gtzan``), or a 80/20 split of a ``<genre>/<file>`` tree."""
    gtzan = data / "gtzan" / "manifest.csv"
    if gtzan.exists():
        m = pd.read_csv(gtzan)
        m = m[m["kind"] == "full"].assign(path=lambda d: [str(data / "gtzan" / p) for p in d["path"]])
    else:
        files = sorted(p for p in data.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        m = pd.DataFrame({"path": [str(p) for p in files], "label": [p.parent.name for p in files]})
        m["split"] = ["valid" if i % 5 == 4 else "train" for i in range(len(m))]
    m = m.sort_values("path")
    m["_k"] = m.groupby("label").cumcount()
    m = m.sort_values(["_k", "label"]).head(n_songs)
    if (m["split"] == "valid").sum() == 0:  # a valid side, whatever the subset
        m.iloc[-max(1, len(m) // 5) :, m.columns.get_loc("split")] = "valid"
    path = work / "train-manifest.csv"
    m[["path", "label", "split"]].to_csv(path, index=False)
    return path


def train_run(manifest: Path, work: Path, *, model_type: str, use_gpu: bool, epochs: int, batch_size: int) -> dict:
    """``epochs`` epoch(s) of ``mgr-batch train --model-type model_type`` on the manifest's songs."""
    name = f"train-{model_type}-{'gpu' if use_gpu else 'cpu'}"
    out = work / f"ckpt-{name}"
    args = [
        "train",
        str(manifest),
        "--output",
        str(out),
        "--model-type",
        model_type,
        "--epochs",
        str(epochs),
        "--batch-size",
        str(batch_size),
        "--storage-path",
        str(work / "ray-train"),
        "--run-name",
        name,
    ]
    if use_gpu:
        args.append("--use-gpu")
    log = work / f"{name}.log"
    rc, wall = run_cli(args, log=log, cwd=work)
    if rc != 0:
        _fail(name, log)
    cfg = json.loads((out / "config.json").read_text())
    history = cfg.get("train", {}).get("history", [])
    return {
        "name": name,
        "model_type": model_type,
        "use_gpu": use_gpu,
        "epochs": epochs,
        "wall_s": wall,
        "history": history,
    }


def machine() -> dict:
    info = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.is_available()
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        info["torch"] = None
    info["cpu_model"] = cpu_name()
    return info


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# GPU path (`benchmarks/gpu.py`)",
        "",
        f"Machine: {', '.join(m.get('gpus') or ['no GPU'])}; {m['cpus']} CPUs ({m.get('cpu_model')}); torch "
        f"{m.get('torch')}. Catalog: {r['catalog_minutes']:.1f} min of audio, {r['catalog_files']} files."
        + (" **Smoke run on CPU: the figures mean nothing.**" if r["smoke"] else ""),
        "",
        f"Command: `{r['command']}`",
        "",
        "## Tagging (decode on CPU tasks, networks in the GPU actor pool)",
        "",
        "| actors | batch | GPU per actor | wall s | songs | clips | clips/s per GPU | GPU util mean / p90 % | "
        "share > 50% | GPU mem peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in r["tag"]:
        g = t["gpu"]
        util = f"{g['util_mean']:.0f} / {g['util_p90']:.0f}" if g["n_samples"] else "n/a"
        busy = f"{g['share_busy_over_50']:.2f}" if g["n_samples"] else "n/a"
        mem = f"{g['memory_peak_mib']:.0f}" if g["n_samples"] else "n/a"
        lines.append(
            f"| {t['actors']} | {t['batch_size']} | {t['gpus_per_actor']:.2f} | {t['wall_s']:.1f} | "
            f"{t['n_songs']} | {t['n_clips']} | {t['clips_per_s_per_gpu']:.1f} | {util} | {busy} | {mem} |"
        )
    best = max(r["tag"], key=lambda t: t["clips_per_s_per_gpu"])
    lines += [
        "",
        f"Fastest: {best['actors']} actor(s), batch {best['batch_size']}: "
        f"{best['clips_per_s_per_gpu']:.1f} clips/s per GPU.",
        "",
    ]
    if r["train"]:
        lines += [
            "## Fine-tuning through Ray Train, GPU against CPU",
            "",
            f"{r['train_songs']} songs, {r['train'][0]['epochs']} epoch(s).",
            "",
            "| model type | device | wall s (Ray start-up and featurization included) | last train loss |",
            "|---|---|---|---|",
        ]
        for t in r["train"]:
            loss = t["history"][-1].get("train_loss") if t["history"] else None
            loss_text = f"{loss:.3f}" if isinstance(loss, float) else "n/a"
            lines.append(
                f"| {t['model_type']} | {'GPU' if t['use_gpu'] else 'CPU'} | {t['wall_s']:.1f} | {loss_text} |"
            )
        by = {(t["model_type"], t["use_gpu"]): t["wall_s"] for t in r["train"]}
        for mt in dict.fromkeys(t["model_type"] for t in r["train"]):
            if (mt, True) in by and (mt, False) in by:
                lines.append(f"\n{mt}: GPU run {by[(mt, False)] / by[(mt, True)]:.1f}x faster than CPU (wall).")
    return "\n".join(lines) + "\n"


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="../shared/data, or any folder of audio")
    ap.add_argument("--minutes", type=float, default=240.0, help="audio in the tagging catalog (default 240)")
    ap.add_argument("--actors", default="1,2,4", help="inference actor counts to try (default 1,2,4)")
    ap.add_argument("--batch-sizes", default="64,256", help="clips per forward pass to try (default 64,256)")
    ap.add_argument("--model", help="--model of tag (default: the shipped model)")
    ap.add_argument("--model-types", default="musicnn", help="model types to fine-tune (default musicnn; '' skips)")
    ap.add_argument("--train-songs", type=int, default=200, help="labelled songs of the fine-tuning runs")
    ap.add_argument("--train-batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--sample-s", type=float, default=0.5, help="GPU sampling interval")
    ap.add_argument("--smoke", action="store_true", help="CPU only and tiny, the actor path forced")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where gpu.json and gpu.md go")
    args = ap.parse_args(argv)

    r_machine = machine()
    n_gpus = len(r_machine.get("gpus") or [])
    if not args.smoke and n_gpus == 0:
        print("gpu.py: no CUDA GPU here; use --smoke to check the script on CPU", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="mgr-gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        catalog, minutes = build_catalog(catalog_sources(args.data), work / "catalog", args.minutes)
        result = {
            "machine": r_machine,
            "smoke": args.smoke,
            "catalog_minutes": minutes,
            "catalog_files": len(list(catalog.iterdir())),
            "command": "python benchmarks/gpu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "tag": [],
            "train": [],
        }
        for actors in _ints(args.actors):
            for bs in _ints(args.batch_sizes):
                t = tag_run(
                    catalog,
                    work,
                    actors=actors,
                    batch_size=bs,
                    n_gpus=n_gpus,
                    model=args.model,
                    smoke=args.smoke,
                    sample_s=args.sample_s,
                )
                print(f"{t['name']}: {t['wall_s']:.1f} s, {t['clips_per_s_per_gpu']:.1f} clips/s per GPU", flush=True)
                result["tag"].append(t)
        types = [t for t in args.model_types.split(",") if t.strip()]
        if types:
            manifest = train_manifest(args.data, work, args.train_songs)
            result["train_songs"] = len(pd.read_csv(manifest))
            for mt in types:
                for use_gpu in [True, False] if not args.smoke else [False]:
                    t = train_run(
                        manifest,
                        work,
                        model_type=mt,
                        use_gpu=use_gpu,
                        epochs=args.epochs,
                        batch_size=args.train_batch_size,
                    )
                    print(f"{t['name']}: {t['wall_s']:.1f} s", flush=True)
                    result["train"].append(t)
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / "gpu.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.results / "gpu.md").write_text(markdown(result))
        print(f"wrote {args.results / 'gpu.md'}")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
