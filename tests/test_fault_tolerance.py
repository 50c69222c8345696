"""A worker killed mid-run must not fail ``mgr-batch tag``: the worker running the model is SIGKILLed once,
mid-batch, on both inference paths.

- Actor pool (GPU runs; here on CPU with ``in_decode_tasks: false``): Ray Data's actor pools default to
  ``max_restarts=-1`` and ``max_task_retries=-1`` (``ActorPoolMapOperator``), so Ray restarts the actor (its
  ``__init__`` loads the model again) and retries the batch it was running.
- Decode tasks (CPU runs): Ray retries a task whose worker died, in a new worker that loads the model again.

Part names derive from the batch's song ids, so a retried batch overwrites its own parts and nothing is
written twice.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from audio_factory import write_noise, write_tone

from mgr_batch.cli import main

pytestmark = pytest.mark.usefixtures("ray_cluster")

N_SONGS = 40
SECONDS = 15.0  # 5 clips a song: with the packaged CNN a batch of 2 songs takes ~0.1 s of inference
SONGS_PER_TASK = 2  # 21 batches


def _title(pid: int) -> str:
    """The process title (Ray workers set it to ``ray::<actor class>[.<method running>]``); '' once gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _descends_from(pid: int, ancestor: int) -> bool:
    """Whether ``ancestor`` is on ``pid``'s parent chain (only this test session's Ray workers qualify)."""
    try:
        while pid > 1:
            pid = _parent(pid)
            if pid == ancestor:
                return True
    except (OSError, ValueError, IndexError):
        pass
    return False


def predictor_pids(marker: str = "Predictor") -> list[int]:
    """Live workers of this process's own Ray (under our raylet) whose title names ``marker``: the inference
    actors for ``Predictor``; decode tasks running the model (while they run a batch) for ``call_cached``."""
    return [
        int(e)
        for e in os.listdir("/proc")
        if e.isdigit()
        and (t := _title(int(e))).startswith("ray::")
        and marker in t
        and _descends_from(int(e), os.getpid())
    ]


@dataclass
class Killer:
    """SIGKILLs the worker running the model while it runs a batch, its ``kill_at``-th seen or a later one (an
    actor's title then ends in ``.submit``; a decode task's names ``call_cached`` only while it runs), and keeps
    the title read just before the kill as the evidence; then watches for the worker that takes over."""

    out: Path
    marker: str = "Predictor"
    kill_at: int = 3  # batches 1..kill_at-1 are done (or started), ~18 of 21 are still to come
    timeout_s: float = 240.0
    done: threading.Event = field(default_factory=threading.Event)  # set by the test when main() returns
    batches_seen: int = 0
    killed: int | None = None
    killed_title: str = ""
    killed_before_done: bool = False
    parts_at_kill: int = -1
    replacements: set[int] = field(default_factory=set)

    def busy(self, title: str) -> bool:
        """Whether a worker of this title runs a batch now."""
        return title.endswith(".submit") if self.marker == "Predictor" else self.marker in title

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        stale = set(predictor_pids(self.marker))  # workers of earlier runs in this session, still exiting: not ours
        busy = self.busy

        def ours() -> list[int]:
            return [p for p in predictor_pids(self.marker) if p not in stale]

        pids: list[int] = []
        while not pids and time.monotonic() < deadline and not self.done.is_set():
            pids = ours()
            time.sleep(0.05)
        running = False
        songs = self.out / "songs"
        while self.killed is None and time.monotonic() < deadline and not self.done.is_set():
            title = _title(pids[0]) if pids else ""  # poll the one actor often: a batch lasts ~0.1 s
            if not title.startswith("ray::"):  # gone (an actor of an earlier run exiting): find the live one
                pids, running = ours(), False
                time.sleep(0.01)
                continue
            if busy(title) and not running:
                self.batches_seen += 1
            parts = len(list(songs.glob("part-*.parquet"))) if songs.is_dir() else 0
            # mid-batch, as its title shows, once kill_at batches were seen starting or kill_at - 1 written (a
            # decode task that runs batches back to back can keep its title between them: seen as one)
            if busy(title) and (self.batches_seen >= self.kill_at or parts >= self.kill_at - 1):
                try:
                    os.kill(pids[0], signal.SIGKILL)
                except ProcessLookupError:  # it exited just now: look again
                    pids = []
                    continue
                self.killed, self.killed_title, self.killed_before_done = pids[0], title, not self.done.is_set()
                self.parts_at_kill = parts
            running = busy(title)
            time.sleep(0.001)
        while self.killed is not None and time.monotonic() < deadline and not self.done.is_set():
            self.replacements.update(set(ours()) - {self.killed})
            time.sleep(0.05)


@pytest.mark.parametrize("path", ["actors", "tasks"])
def test_inference_worker_killed_mid_batch(tmp_path, path):
    src, out = tmp_path / "in", tmp_path / "out"
    marker, flags = "call_cached", []
    if path == "actors":
        (tmp_path / "actors.yaml").write_text("inference:\n  in_decode_tasks: false\n")
        marker, flags = "Predictor", ["--config", str(tmp_path / "actors.yaml")]
    for i in range(N_SONGS):
        if i % 2:
            write_noise(src / f"noise_{i:02d}.wav", seconds=SECONDS, seed=i)
        else:
            write_tone(src / f"tone_{i:02d}.flac", seconds=SECONDS, freq=200.0 + 20 * i)
    (src / "broken.wav").write_bytes(b"RIFF....WAVEfmt ")
    killer = Killer(out, marker=marker)
    thread = threading.Thread(target=killer.run, daemon=True)
    thread.start()
    try:  # the packaged CNN: real inference work in the actor, so the actor is caught mid-batch
        code = main(
            [
                "tag",
                str(src),
                "--output",
                str(out),
                "--model",
                "logmel-cnn",
                "--songs-per-task",
                str(SONGS_PER_TASK),
                *flags,
            ]
        )
    finally:
        killer.done.set()
        thread.join(timeout=10)

    print("kill:", killer)
    # The fault hit the run: the model's worker died while it ran a batch, with batches left.
    assert killer.killed is not None and killer.killed_before_done, f"not killed mid-batch: {killer}"
    assert killer.busy(killer.killed_title), f"the kill landed between batches: {killer.killed_title!r}"
    assert killer.parts_at_kill < N_SONGS // SONGS_PER_TASK, "killed after all batches were written"
    assert killer.replacements, "no other worker ran the model after the kill"
    assert code == 0

    songs, clips, errors = (pd.read_parquet(out / t) for t in ("songs", "clips", "errors"))
    listed = {str(p) for p in src.rglob("*") if p.is_file()}
    assert set(songs["path"]) | set(errors["path"]) == listed
    assert not set(songs["path"]) & set(errors["path"])
    assert songs["song_id"].is_unique and errors["song_id"].is_unique and clips["clip_id"].is_unique
    n_clips = int(SECONDS // 3)
    assert (len(songs), len(errors), len(clips)) == (N_SONGS, 1, n_clips * N_SONGS)
    assert (songs["n_clips"] == n_clips).all()
    assert clips.groupby("song_id").size().reindex(songs["song_id"]).tolist() == songs["n_clips"].tolist()
    run = json.loads((out / "run.json").read_text())
    assert (run["n_files"], run["n_songs"], run["n_errors"]) == (N_SONGS + 1, N_SONGS, 1)
    assert run["n_clips"] == n_clips * N_SONGS
