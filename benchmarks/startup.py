"""Where the fixed cost of a ``mgr-batch tag`` run goes: the interpreter, the driver's imports, Ray's own
start-up and shutdown, Ray Data's, and the whole command on a 1-file catalog.

Run from the repository root:

    python benchmarks/startup.py                  # 2 cores, 5 interleaved tries of each step (~4 min)
    python benchmarks/startup.py --cpus 1 --repeats 3

Each step is a fresh subprocess pinned to ``--cpus`` cores (with everything it starts: Ray's daemons and
workers inherit the pinning), with its own Ray temp dir. Steps:

- ``python``: the interpreter starting and exiting (``python -c pass``);
- ``imports``: the modules the ``tag`` command's driver imports (``import mgr_batch.execution.tag``);
- ``ray``: ``ray.init`` (an embedded Ray with ``--cpus`` CPUs, as ``tag`` starts it) and ``ray.shutdown``,
  nothing run in between;
- ``ray_session``: the same through mgr-batch's ``ray_session`` (its shutdown kills the idle monitors first);
- ``ray + Ray Data``: the same with a 1-row Ray Data graph in between (Ray Data's own actors, one worker);
- ``tag``: ``mgr-batch tag`` on one 30 s Ogg Vorbis file (written here), the fixed cost that
  ``benchmarks/throughput.py`` subtracts.

Reported per step: the median wall time, the process tree's CPU seconds, and for the Ray steps the
median ``ray.init``, graph and ``ray.shutdown`` times measured inside the subprocess. With
``--floor-from`` (default ``benchmarks/results/throughput-ogg.json``) it also works out the allowance that
the issue's target leaves the fixed cost on that catalog: (1.2 - the run's core-seconds over the decode
floor without the fixed cost) x the floor / the cores.

Writes benchmarks/results/<name>.json and <name>.md (``--name``, default ``startup``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import MODEL, RESULTS, ROOT, loadavg, run_pinned  # noqa: E402

#: A Ray step: ``ray.init`` as ``tag`` calls it, optionally a 1-row Ray Data graph, ``ray.shutdown``; prints
#: its own timings as one JSON line.
_RAY_STEP = """
import json, sys, time
t0 = time.perf_counter()
import ray
t1 = time.perf_counter()
ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False, log_to_driver=True)
t2 = time.perf_counter()
if sys.argv[2] == "data":
    import pandas as pd
    ray.data.from_pandas(pd.DataFrame({"x": [1]})).map_batches(lambda b: b, batch_format="pandas").take_all()
t3 = time.perf_counter()
ray.shutdown()
t4 = time.perf_counter()
print("MGR_STEP", json.dumps({"import_ray_s": t1 - t0, "init_s": t2 - t1, "graph_s": t3 - t2,
                              "shutdown_s": t4 - t3}), flush=True)
"""


#: The same through mgr-batch's own session (``execution.runtime.ray_session``): its local settings and its
#: shutdown, which kills the idle monitors first.
_SESSION_STEP = """
import json, sys, time
t0 = time.perf_counter()
import ray
from mgr_batch.config import RayConfig
from mgr_batch.execution.runtime import ray_session
t1 = time.perf_counter()
session = ray_session(RayConfig(num_cpus=int(sys.argv[1])))
session.__enter__()
t2 = time.perf_counter()
session.__exit__(None, None, None)
t3 = time.perf_counter()
print("MGR_STEP", json.dumps({"import_ray_s": t1 - t0, "init_s": t2 - t1, "shutdown_s": t3 - t2}), flush=True)
"""


def steps(cpus: int, catalog: Path, work: Path) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "python": [py, "-c", "pass"],
        "imports": [py, "-c", "import mgr_batch.execution.tag"],
        "ray": [py, "-c", _RAY_STEP, str(cpus), "none"],
        "ray_session": [py, "-c", _SESSION_STEP, str(cpus)],
        "ray + Ray Data": [py, "-c", _RAY_STEP, str(cpus), "data"],
        "tag": [
            py,
            "-m",
            "mgr_batch.cli",
            "tag",
            str(catalog),
            "--output",
            str(work / "out"),
            "--force",
            "--num-cpus",
            str(cpus),
            "--model",
            MODEL,
        ],
    }


def run_step(cmd: list[str], cpus: int, work: Path) -> dict:
    """One try (:func:`throughput.run_pinned`): wall time, process-tree CPU, and the step's own timings
    where it prints them."""
    log_path = work / "step.log"
    rc, wall, mon = run_pinned(cmd, cpus=cpus, cwd=work, log_path=log_path)
    text = log_path.read_text(errors="replace")
    if rc != 0:
        sys.exit(f"{cmd[:3]} failed (exit {rc}):\n{text[-3000:]}")
    inner = {}
    for line in text.splitlines():
        if line.startswith("MGR_STEP "):
            inner = json.loads(line.split(" ", 1)[1])
    return {"wall_s": wall, "cpu_s": mon.cpu_by_role()["total"], **inner}


def allowance(floor_file: Path, cpus: int) -> dict | None:
    """The fixed cost that keeps a ``cpus``-CPU run of that benchmark within 1.2x its decode floor."""
    if not floor_file.exists():
        return None
    res = json.loads(floor_file.read_text())
    run = res["summary"].get(f"tag_{cpus}cpu")
    if run is None:
        return None
    floor = res["decode_floor"]["wall_s"]["soundfile"]
    marginal = run["marginal_core_s_over_floor_wall"]
    return {
        "results": str(floor_file.resolve().relative_to(ROOT)),
        "floor_s": floor,
        "marginal_over_floor": marginal,
        "allowance_s": (1.2 - marginal) * floor / cpus,
        "fixed_run_wall_s": run["fixed_run_wall_s"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="tries of each step, interleaved (default 5)")
    ap.add_argument("--floor-from", type=Path, default=RESULTS / "throughput-ogg.json")
    ap.add_argument("--name", default="startup")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if (os.cpu_count() or 1) < args.cpus:
        ap.error(f"--cpus {args.cpus} is more than this machine's {os.cpu_count()} cores")
    rerun = " ".join(["python benchmarks/startup.py", *(argv if argv is not None else sys.argv[1:])])
    load0 = loadavg()
    with tempfile.TemporaryDirectory(prefix="mgr-batch-startup-") as tmp:
        work = Path(tmp)
        (work / "catalog").mkdir()
        rng = np.random.default_rng(0)
        t = np.arange(30 * 44100) / 44100
        y = 0.3 * np.sin(2 * np.pi * 440 * t)[:, None] + 0.05 * rng.standard_normal((len(t), 2))
        sf.write(work / "catalog" / "song.ogg", y.astype(np.float32), 44100, format="OGG", subtype="VORBIS")
        cmds = steps(args.cpus, work / "catalog", work)
        tries: dict[str, list[dict]] = {name: [] for name in cmds}
        run_step(cmds["ray"], args.cpus, work)  # warm the page cache; not counted
        for _ in range(args.repeats):
            for name, cmd in cmds.items():
                tries[name].append(run_step(cmd, args.cpus, work))
    med = {name: {k: statistics.median(t[k] for t in ts) for k in ts[0]} for name, ts in tries.items()}
    result = {
        "rerun": rerun,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_start": load0,
            "loadavg_end": loadavg(),
        },
        "cpus": args.cpus,
        "repeats": args.repeats,
        "median": med,
        "tries": tries,
        "allowance": allowance(args.floor_from, args.cpus),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    (args.results / f"{args.name}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    m, n = r["median"], r["cpus"]
    rows = [
        "# Fixed cost of a `mgr-batch tag` run",
        "",
        f"Rerun: `{r['rerun']}`  ",
        f"Machine: {r['machine']['cpus']} CPUs, {r['machine']['platform']}; load average {r['machine']['loadavg_start']:.1f} "
        f"at start, {r['machine']['loadavg_end']:.1f} at the end. Each step pinned to {n} core(s), median of "
        f"{r['repeats']} interleaved tries.",
        "",
        "| step | wall (s) | CPU (s) | `ray.init` (s) | graph (s) | `ray.shutdown` (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in m.items():
        inner = [f"{s[k]:.2f}" if k in s else "" for k in ("init_s", "graph_s", "shutdown_s")]
        rows.append(f"| {name} | {s['wall_s']:.2f} | {s['cpu_s']:.2f} | {' | '.join(inner)} |")
    ray_s = m["ray"]["wall_s"] - m["python"]["wall_s"]
    rows += [
        "",
        f"Ray alone (the `ray` step less the bare interpreter): {ray_s:.2f} s wall, of which `ray.init` "
        f"{m['ray']['init_s']:.2f} s and `ray.shutdown` {m['ray']['shutdown_s']:.2f} s. The driver's imports: "
        f"{m['imports']['wall_s'] - m['python']['wall_s']:.2f} s. The whole `tag` run on one file: {m['tag']['wall_s']:.2f} s.",
    ]
    a = r["allowance"]
    if a:
        rows += [
            "",
            f"Against the 1.2x target on `{a['results']}` with {n} cores: the run's work without the fixed cost "
            f"takes {a['marginal_over_floor']:.2f}x the decode floor ({a['floor_s']:.1f} s) in core-seconds, which "
            f"leaves the fixed cost {a['allowance_s']:.2f} s of wall time; Ray alone takes {ray_s:.2f} s of it "
            f"(that benchmark's own 1-file run: {a['fixed_run_wall_s']:.2f} s).",
        ]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.exit(main())
