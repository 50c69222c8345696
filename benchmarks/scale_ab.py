"""A rerun of the code at a git commit against the working tree's, back to back on the same output, so that both
see the same load of a shared machine (``benchmarks/scale.py`` times one version at a time).

Run from the repository root, after ``benchmarks/scale.py`` has built the output under ``--root``:

    python benchmarks/scale_ab.py --base 959703c --songs 1000000 --rounds 3

Each round runs ``mgr-batch tag INPUTS --output OUT --json --no-embeddings`` (``--step report``: ``mgr-batch
report OUT``) once with the code of ``--base`` (``git archive`` into a temporary folder, run from there) and once
with the working tree, each in a fresh process, in alternating order. With nothing to do the run is a no-op
rerun; the output is left as it was (a report is written again).

Writes benchmarks/results/<name>.json and <name>.md (``--name``, default ``scale-ab``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name  # noqa: E402
from scale import ROOT, timed, write_rounds  # noqa: E402


def run(tree: Path, args: list[str]) -> dict[str, float]:
    """One CLI command with the package of ``tree`` (run from there, so that its ``mgr_batch`` is imported)."""
    return timed(args, env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the git commit to compare the working tree with")
    parser.add_argument("--songs", type=int, default=1_000_000)
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", default="/work/bench_scale", help="where benchmarks/scale.py keeps its outputs")
    parser.add_argument("--name", default="scale-ab")
    parser.add_argument("--step", choices=("noop", "report"), default="noop", help="a no-op rerun, or the report")
    args = parser.parse_args()
    built = Path(args.root) / f"{args.songs}-{args.clips}"
    if not (built / ".built").exists():
        sys.exit(f"scale_ab: no output under {built}: run benchmarks/scale.py --songs {args.songs} first")
    tag = ["tag", str(built / "inputs"), "--output", str(built / "out"), "--json", "--no-embeddings"]
    if args.step == "report":
        tag = ["report", str(built / "out")]
    commit = subprocess.run(["git", "rev-parse", "--short", args.base], capture_output=True, text=True, check=True)
    base_id = commit.stdout.strip()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", base_id], capture_output=True, check=True, cwd=ROOT).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        trees = {base_id: Path(tmp), "working tree": ROOT}
        for k in range(args.rounds):
            for label in list(trees) if k % 2 == 0 else list(trees)[::-1]:
                rows.append({"round": k + 1, "code": label, **run(trees[label], tag)})
                print(rows[-1], flush=True)
    record = {
        "command": "python benchmarks/scale_ab.py " + " ".join(sys.argv[1:]),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "songs": args.songs,
        "clips_per_song": args.clips,
        "step": args.step,
        "results": rows,
    }
    intro = (
        f"`{record['command']}` on {record['cpu']} ({record['cores']} cores): "
        f"{'a no-op rerun' if args.step == 'noop' else '`mgr-batch report`'} over {args.songs:,} songs "
        f"({args.clips} clips each), the code of {base_id} and the working tree back to back, each a fresh process."
    )
    write_rounds(args.name, record, intro, ("code", "code"))


if __name__ == "__main__":
    main()
