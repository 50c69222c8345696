"""``mgr-batch compact`` in two threads of the driver against its merges as Ray tasks of a running local cluster,
back to back on copies of one output built by ``benchmarks/scale.py``.

Run from the repository root, after ``python benchmarks/scale.py --songs 100000`` has built the output:

    python benchmarks/compaction.py --songs 100000 --rounds 2

Starts a local cluster (``ray start --head --num-cpus N``), then each round compacts a fresh copy of the output
once without ``--address`` (threads) and once with ``--address auto`` (tasks), in alternating order, each in a
fresh process: wall seconds, the driver's peak memory and CPU seconds (the tasks' memory is the workers', not
counted there). Stops the cluster at the end. Writes benchmarks/results/<name>.json and <name>.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name  # noqa: E402
from scale import timed, write_rounds  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, default=100_000)
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
    parser.add_argument("--root", default="/work/bench_scale", help="where benchmarks/scale.py keeps its outputs")
    parser.add_argument("--name", default="compaction")
    args = parser.parse_args()
    built = Path(args.root) / f"{args.songs}-{args.clips}"
    if not (built / ".built").exists():
        sys.exit(f"compaction: no output under {built}: run benchmarks/scale.py --songs {args.songs} first")
    ray = str(Path(sys.executable).parent / "ray")
    subprocess.run([ray, "start", "--head", f"--num-cpus={args.num_cpus}", "--include-dashboard=false"], check=True)
    rows: list[dict] = []
    copy = Path(args.root) / "compaction-copy"
    try:
        ways = {"threads": [], "ray tasks": ["--address", "auto"]}
        for k in range(args.rounds):
            for way in list(ways) if k % 2 == 0 else list(ways)[::-1]:
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(built / "out", copy)
                rows.append({"round": k + 1, "way": way, **timed(["compact", str(copy), *ways[way]])})
                print(rows[-1], flush=True)
    finally:
        subprocess.run([ray, "stop"], check=False)
        shutil.rmtree(copy, ignore_errors=True)
    record = {
        "command": "python benchmarks/compaction.py " + " ".join(sys.argv[1:]),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "songs": args.songs,
        "clips_per_song": args.clips,
        "results": rows,
    }
    intro = (
        f"`{record['command']}` on {record['cpu']} ({record['cores']} cores): `mgr-batch compact` of {args.songs:,} "
        f"songs ({args.clips} clips each) in two threads of the driver, and with `--address auto` as Ray tasks of a "
        f"local cluster of {args.num_cpus} CPUs started beforehand, each on a fresh copy, in a fresh process."
    )
    write_rounds(args.name, record, intro, ("merges in", "way"))


if __name__ == "__main__":
    main()
