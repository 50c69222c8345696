"""What a person sees: the progress bar and summary of ``mgr-batch tag`` in a real terminal (tmux), the
periodic lines in a pipe, and no Ray chatter or decoder note on either; the notes stay with their files."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from audio_factory import write_noise, write_random_bytes, write_spliced_mp3, write_tone

from mgr_batch.execution.progress import Progress, Settings, hours

ROOT = Path(__file__).resolve().parent.parent
N_FILES = 12
#: What must never reach the screen without -v: Ray's and Ray Data's start-up notes, and decoder notes.
CHATTER = (
    "Illegal Audio-MPEG-Header",
    "Trying to resync",
    "Note:",
    "Token authentication",
    "Started a local Ray",
    "progress UI",
    "Truncating long operator",
    "Total Progress",
    "tqdm is not installed",
    "INFO",
    "WARNING",
    "Progress bars disabled",
    "pid=",
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A dozen short files: 9 good, one mp3 damaged but decodable, one damaged so that only its start decodes
    (a truncated song), one not audio."""
    root = tmp_path_factory.mktemp("dozen")
    for i in range(6):
        write_tone(root / f"tone{i}.wav", seconds=3.0, freq=220.0 * (i + 1))
    for i in range(3):
        write_noise(root / f"noise{i}.flac", seconds=3.0, seed=i)
    write_spliced_mp3(root / "resynced.mp3", garbage=300)
    write_spliced_mp3(root / "broken.mp3", garbage=3000)
    write_random_bytes(root / "garbage.mp3", n_bytes=4000, mpeg_sync=False)
    assert len(list(root.iterdir())) == N_FILES
    return root


@pytest.fixture
def raytmp():
    """Ray's temp dir for a subprocess's own embedded Ray: short, as Ray's socket paths must fit 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="mgrp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(raytmp: Path) -> dict[str, str]:
    """A subprocess that starts an embedded Ray of its own, its session files under ``raytmp``."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return env | {"RAY_TMPDIR": str(raytmp), "PYTHONUNBUFFERED": "1"}


def _tag_cmd(folder: Path, out: Path, model: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mgr_batch.cli",
        "tag",
        str(folder),
        "-o",
        str(out),
        "--model",
        model,
        "--num-cpus",
        "2",
        "--songs-per-task",
        "2",
        *extra,
    ]


def _tables(out: Path) -> dict[str, int]:
    return {t: pq.read_table(out / t).num_rows for t in ("songs", "clips", "errors")}


def _check_notes_kept(out: Path) -> None:
    songs = pq.read_table(out / "songs").to_pandas().set_index("path")
    errors = pq.read_table(out / "errors").to_pandas().set_index("path")
    resynced = songs.loc[next(p for p in songs.index if p.endswith("resynced.mp3")), "decode_notes"]
    assert "Illegal Audio-MPEG-Header" in resynced and "resync" in resynced
    assert (songs.loc[[p for p in songs.index if p.endswith((".wav", ".flac"))], "decode_notes"] == "").all()
    broken = songs.loc[next(p for p in songs.index if p.endswith("broken.mp3"))]
    assert broken["truncated"] and "Illegal Audio-MPEG-Header" in broken["decode_notes"]
    garbage = errors.loc[next(p for p in errors.index if p.endswith("garbage.mp3")), "error_type"]
    assert garbage == "AudioDecodeError"


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (Debian package tmux; .ci/run installs it)")
def test_tag_in_a_terminal_shows_a_bar_and_a_summary_only(folder, tiny_model, tmp_path, raytmp):
    out = tmp_path / "out"
    sock = f"mgr-test-{os.getpid()}"
    tmux = ["tmux", "-L", sock]
    script = " ".join(map(repr, _tag_cmd(folder, out, tiny_model))) + "; echo MGR_EXIT=$?; sleep 600"
    env = _env(raytmp)
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "t", "-x", "150", "-y", "60", script], env=env, check=True, cwd=ROOT
    )
    frames = []
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            screen = subprocess.run([*tmux, "capture-pane", "-p", "-t", "t"], capture_output=True, text=True).stdout
            frames.append(screen)
            if "MGR_EXIT=" in screen:
                break
            time.sleep(0.2)
        history = subprocess.run(
            [*tmux, "capture-pane", "-p", "-t", "t", "-S", "-"], capture_output=True, text=True
        ).stdout
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
    assert "MGR_EXIT=0" in history, history[-3000:]
    # While it ran: the bar, short of the total.
    running = [f for f in frames[:-1] if re.search(rf"tag +\d+%\|.*\| (\d+)/{N_FILES} files", f)]
    assert running, frames[-1]
    # per song, not per batch: the dozen files are one batch, and the bar still stops between 0 and 12
    assert any(0 < int(re.search(rf"(\d+)/{N_FILES} files", f).group(1)) < N_FILES for f in running), running
    # At the end: the bar at the total, and the summary; nothing else of note, and at most 25 lines.
    lines = [line for line in history.splitlines() if line.strip()]
    assert len(lines) <= 25, history
    assert re.search(rf"tag 100%\|.*\| {N_FILES}/{N_FILES} files", history), history
    for word in CHATTER:
        assert word not in history, (word, history)
    tables = _tables(out)
    match = re.search(r"Tagged (\d+) songs \((\d+) clips\) of (\d+) files; (\d+) errors?", history)
    assert match, history
    assert [int(x) for x in match.groups()] == [tables["songs"], tables["clips"], N_FILES, tables["errors"]]
    assert tables["songs"] + tables["errors"] == N_FILES and tables["errors"] == 1
    assert "Read: python -c" in history and str(out / "songs") in history
    _check_notes_kept(out)


@pytest.mark.e2e
def test_tag_in_a_pipe_prints_periodic_lines_and_json(folder, tiny_model, tmp_path, raytmp):
    out = tmp_path / "out"
    proc = subprocess.run(
        _tag_cmd(folder, out, tiny_model, "--progress-seconds", "0.5", "--json"),
        capture_output=True,
        text=True,
        env=_env(raytmp),
        cwd=ROOT,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # --json: the result, as scripts read it, and nothing else on stdout
    assert result["n_songs"] == _tables(out)["songs"] and "config" not in result
    periodic = re.findall(
        rf"^tag: (\d+)/{N_FILES} files \(\d+%\), .* audio, (\d+) errors, .* files/s, .* left", proc.stderr, re.M
    )
    assert len(periodic) >= 2, proc.stderr
    assert periodic[-1] == (str(N_FILES), "1")
    for word in CHATTER:
        assert word not in proc.stderr + proc.stdout, (word, proc.stderr)
    # The decoder notes went to the Ray session's log files (the worker's stderr), with the file they are about.
    logged = "".join(p.read_text(errors="replace") for p in raytmp.glob("**/logs/worker-*.err"))
    assert re.search(r"decoder notes on \S*resynced\.mp3: .*Illegal Audio-MPEG-Header", logged)
    _check_notes_kept(out)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_counts_rates_and_time_left():
    stream = io.StringIO()
    settings = Settings(interval_s=3600.0)
    with Progress(10, desc="tag", stream=stream, settings=settings) as progress:
        progress.started -= 100.0  # as if it had run 100 s
        progress.update(files=4, errors=1, audio_s=7200.0)
        line = progress.line()
    assert line.startswith("tag: 4/10 files (40%), 2.00 h audio, 1 errors, 72 audio h/h, 0.04 files/s, 2.5 min left")
    first, last = stream.getvalue().splitlines()  # one at the start, one at the end (the interval is an hour)
    assert first.startswith("tag: 0/10 files (0%)") and last.startswith("tag: 4/10 files (40%)")


def test_progress_on_a_terminal_is_a_tqdm_bar():
    stream = _Tty()
    with Progress(3, desc="segment", stream=stream) as progress:
        progress.update(files=3, audio_s=30.0)
    text = stream.getvalue()
    assert "segment 100%|" in text and "3/3 files" in text and "30 s audio, 0 errors" in text


def test_hours_reads_well():
    assert [hours(s) for s in (42, 210, 3 * 3600)] == ["42 s", "3.5 min", "3.00 h"]
