"""``ray job submit`` for real: a separate local Ray head with the job API, one tagging job, its Parquet output.

The head runs in its own process session, with its own temp dir, ports and auth token, and is stopped by
signalling exactly its processes (its session and their descendants, by pid): ``ray stop`` cannot be
restricted to one cluster and would also kill the test session's own Ray (and anyone else's on the machine).
This file never uses ``ray_cluster``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import ray
from audio_factory import write_noise, write_tone

REPO = Path(__file__).resolve().parents[1]
#: What the job does not need: uploading less makes the submission faster.
EXCLUDES = [".git", ".ci", ".ruff_cache", "**/__pycache__", "*.egg-info", "tests", "benchmarks", "docs", "tools"]
HEAD_START_S = 120
JOB_TIMEOUT_S = 180

for module in ("aiohttp", "aiohttp_cors", "grpc", "opencensus", "prometheus_client", "colorful", "smart_open"):
    pytest.importorskip(module, reason=f"the Ray job API (dashboard) needs ray[default]; {module} is missing")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, int, int, str]]:
    """pid -> (parent pid, session id, start time, state) of every process (Linux /proc)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2 :].split()  # the fields after "pid (comm) ": state, ppid, pgrp, session, ...
        out[int(entry)] = (int(f[1]), int(f[3]), int(f[19]), f[0])
    return out


def head_processes(leader: int) -> set[tuple[int, int]]:
    """(pid, start time) of the head's live processes: the leader's session and every descendant of it.

    Descendants count because Ray starts each job's driver in a session of its own.
    """
    procs = _processes()
    mine = {pid for pid, (_, sid, _, _) in procs.items() if sid == leader}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _, _, _) in procs.items() if ppid in mine} - mine
        mine |= more
        grew = bool(more)
    return {(pid, procs[pid][2]) for pid in mine if procs[pid][3] != "Z"}


def _alive(known: set[tuple[int, int]]) -> set[tuple[int, int]]:
    procs = _processes()
    return {(pid, start) for pid, start in known if pid in procs and procs[pid][2] == start and procs[pid][3] != "Z"}


def stop_head(leader: subprocess.Popen, grace_s: float = 5.0) -> set[tuple[int, int]]:
    """SIGTERM the head's processes, SIGKILL what is left after ``grace_s``; returns the survivors (none).

    Only processes seen as the head's (by pid and start time, so a reused pid is never hit) are signalled.
    """
    known = head_processes(leader.pid)
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        known |= head_processes(leader.pid)
        for pid, _ in _alive(known):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while _alive(known) and time.monotonic() < deadline:
            leader.poll()  # reap the leader as soon as it exits
            time.sleep(0.2)
    try:
        leader.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    return _alive(known)


@dataclass
class Head:
    dashboard: str
    token: str
    temp_dir: str
    process: subprocess.Popen

    def log_tail(self, n: int = 40) -> str:
        logs = sorted(Path(self.temp_dir).glob("session_*/logs"))
        lines = [Path(self.temp_dir, "start.log").read_text(errors="replace")]
        for name in ("dashboard.log", "gcs_server.out", "raylet.out"):
            for f in logs[-1:]:
                if (f / name).exists():
                    lines.append(f"--- {name}\n" + (f / name).read_text(errors="replace"))
        return "\n".join("\n".join(text.splitlines()[-n:]) for text in lines)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[Head]:
    """A Ray head with the dashboard and job API on 127.0.0.1, 2 CPUs, token authentication."""
    # A short temp dir: Ray's unix sockets live under it, and their paths must stay under 108 bytes.
    temp_dir = tempfile.mkdtemp(prefix="mgr-job-", dir="/tmp")
    token = secrets.token_hex(32)
    ports = {
        name: free_port()
        for name in (
            "port",
            "dashboard-port",
            "dashboard-agent-listen-port",
            "ray-client-server-port",
            "metrics-export-port",
        )
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # no RAY_ADDRESS, no inherited auth
    env.update(
        RAY_AUTH_MODE="token",  # the Ray 2.60 default for new clusters, made explicit with a token of our own
        RAY_AUTH_TOKEN=token,
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # single-node mode: every address is 127.0.0.1, not the host's IP
        RAY_USAGE_STATS_ENABLED="0",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # `python` in the job = this one
    )
    ray_cli = Path(sys.executable).parent / "ray"
    cmd = [
        str(ray_cli) if ray_cli.exists() else "ray",
        "start",
        "--head",
        "--block",
        "--num-cpus=2",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--temp-dir={temp_dir}",
        "--object-store-memory=300000000",
        "--disable-usage-stats",
        *(f"--{name}={port}" for name, port in ports.items()),
    ]
    with open(os.path.join(temp_dir, "start.log"), "wb") as log:
        process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    head = Head(f"http://127.0.0.1:{ports['dashboard-port']}", token, temp_dir, process)
    try:
        _wait_for_job_api(head)
        yield head
    finally:
        survivors = stop_head(process)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not survivors, f"head processes still alive after SIGKILL: {survivors}"
    if ray.is_initialized():  # another Ray in this process (the suite's ray_cluster) must not have noticed
        assert ray.get(ray.put("still here"), timeout=60) == "still here"


def _wait_for_job_api(head: Head) -> None:
    from ray.job_submission import JobSubmissionClient

    deadline, last = time.monotonic() + HEAD_START_S, None
    while time.monotonic() < deadline:
        if head.process.poll() is not None:
            pytest.skip(f"`ray start --head` exited with {head.process.returncode} in this sandbox:\n{head.log_tail()}")
        try:
            JobSubmissionClient(head.dashboard, headers=_auth(head)).list_jobs()
            return
        except (OSError, RuntimeError) as exc:  # not up yet: refused (ConnectionError), an HTTP error, a 5xx
            last = exc
            time.sleep(1.0)
    pytest.skip(f"the job API at {head.dashboard} did not answer in {HEAD_START_S} s ({last!r}):\n{head.log_tail()}")


def _auth(head: Head) -> dict[str, str]:
    return {"Authorization": f"Bearer {head.token}"}


def test_tag_catalog_job_runs_on_the_cluster(ray_head, tiny_model, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    songs_in, out = tmp_path / "in", tmp_path / "out"
    write_tone(songs_in / "tone.wav", seconds=7.0)
    write_noise(songs_in / "noise.flac", seconds=4.0, sr=44100, channels=2)
    write_tone(songs_in / "sub" / "short.ogg", seconds=1.5, sr=48000)
    (songs_in / "broken.wav").write_text("not a RIFF file")

    client = JobSubmissionClient(ray_head.dashboard, headers=_auth(ray_head))
    entrypoint = shlex.join(
        [
            "python",
            "jobs/tag_catalog.py",
            str(songs_in),
            "--output",
            str(out),
            "--model",
            tiny_model,
            "--songs-per-task",
            "2",
            "-v",
            "--progress-seconds",
            "0.5",
        ]
    )
    job_id = client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": str(REPO), "excludes": EXCLUDES})

    deadline = time.monotonic() + JOB_TIMEOUT_S
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            pytest.fail(f"job {job_id} still {status} after {JOB_TIMEOUT_S} s:\n{client.get_job_logs(job_id)[-4000:]}")
        time.sleep(1.0)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, f"job {job_id} {status}:\n{logs[-4000:]}"
    # The driver joined this head over loopback (RAY_ADDRESS -> address="auto"); it did not start a Ray of its own
    # (Ray says so with -v only).
    assert "Connecting to existing Ray cluster at address: 127.0.0.1:" in logs, logs[-4000:]
    # The driver's log is no terminal: the progress comes as periodic lines, then the summary.
    assert re.search(r"^tag: 4/4 files \(100%\), .* 1 errors", logs, re.M), logs[-4000:]
    assert "Tagged 3 songs (4 clips) of 4 files; 1 error (AudioDecodeError 1)" in logs

    songs, clips, errors = (pd.read_parquet(out / t) for t in ("songs", "clips", "errors"))
    assert sorted(Path(p).name for p in songs["path"]) == ["noise.flac", "short.ogg", "tone.wav"]
    assert songs.set_index(songs["path"].map(lambda p: Path(p).name))["n_clips"].to_dict() == {
        "tone.wav": 2,
        "noise.flac": 1,
        "short.ogg": 1,
    }
    assert errors[["error_type", "stage"]].values.tolist() == [["AudioDecodeError", "decode"]]
    assert len(clips) == songs["n_clips"].sum()
    run = json.loads((out / "run.json").read_text())
    assert (run["n_files"], run["n_songs"], run["n_errors"], run["n_clips"]) == (4, 3, 1, 4)
