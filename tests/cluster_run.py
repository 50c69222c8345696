"""Run ``mgr-batch tag`` on a real multi-node Ray cluster of this machine and SIGKILL a worker node mid-run.

Run by tests/test_faults.py in a subprocess of its own, so that the cluster (a head and two worker nodes of
``ray.cluster_utils.Cluster``, one CPU each) never meets the test session's Ray. Usage:
``python cluster_run.py SRC OUT MODEL RESULT_JSON``; the result names the killed node's processes and the
parts written when it died.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from mgr_batch.cli import main

STORE = 80 * 1024 * 1024  # object store per node: small, this machine is shared


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (a raylet's workers)."""
    found = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                stat = Path(f"/proc/{e}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(e))
    return found


#: Titles of a node's Ray processes that run no task of the run: an idle worker and the node's agents.
NOT_TASKS = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _title(pid: int) -> str:
    """The process title: a Ray worker's is ``ray::IDLE`` between tasks, ``ray::<task>`` while it runs one."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed and not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def main_(src: str, out: str, model: str, result: str) -> int:
    # The GCS declares a node dead after failed health checks: every 0.5 s, 3 in a row, not Ray's 3 s x 5.
    health = {
        "health_check_initial_delay_ms": 0,
        "health_check_period_ms": 500,
        "health_check_timeout_ms": 500,
        "health_check_failure_threshold": 3,
    }
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "object_store_memory": STORE,
            "include_dashboard": False,
            "_system_config": health,
        },
    )
    victim = cluster.add_node(num_cpus=1, object_store_memory=STORE)
    cluster.add_node(num_cpus=1, object_store_memory=STORE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False)
    info: dict = {"nodes": len(ray.nodes())}
    done = threading.Event()

    def kill_when_busy() -> None:
        songs = Path(out) / "songs"
        while not done.is_set():
            parts = len(list(songs.glob("part-*.parquet"))) if songs.is_dir() else 0
            workers = _children(victim.all_processes["raylet"][0].process.pid)
            busy = [t for t in map(_title, workers) if t.startswith("ray::") and t not in NOT_TASKS]
            if parts >= 2 and busy:  # killed while the node runs a task of the run, not between tasks
                info.update(parts_at_kill=parts, victim_workers=len(workers), victim_busy=busy, killed_at=time.time())
                for pid in workers:  # SIGKILL of the node's workers, mid-task, and then of its raylet and the rest
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                cluster.remove_node(victim, allow_graceful=False)
                deadline = time.time() + 10
                while time.time() < deadline and any(_alive(p) for p in workers):
                    time.sleep(0.1)
                info["victim_alive_after"] = any(_alive(p) for p in workers)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_busy, daemon=True)
    killer.start()
    started = time.time()
    try:
        info["code"] = main(["tag", src, "--output", out, "--model", model, "--songs-per-task", "1"])
    except (ray.exceptions.RayError, RuntimeError, OSError) as exc:  # a failed run: the test reads what it said
        info["code"], info["error"] = 1, f"{type(exc).__name__}: {exc}"[:2000]
    info["wall_s"] = round(time.time() - started, 2)
    done.set()
    killer.join(timeout=5)
    Path(result).write_text(json.dumps(info))
    ray.shutdown()
    cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main_(*sys.argv[1:5]))
