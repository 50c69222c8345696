"""What a person sees while a job runs: a progress bar on a terminal (tqdm), elsewhere (a log file, CI, the
driver's log of a cluster job) one line every :attr:`Settings.interval_s` seconds with the same numbers.

Counts come from what the job knows (files listed, files finished as their table parts are written), never
from Ray Data's blocks. Plain Python, no Ray.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from tqdm import tqdm


@dataclass
class Settings:
    """Set once per process by the command line (``-v``, ``--progress-seconds``); not part of any job config.

    ``verbose``: show Ray's and the workers' output and debug logs. ``interval_s``: seconds between the
    lines of a non-interactive output. ``enabled``: show progress at all (``--json`` keeps it, on stderr).
    """

    verbose: bool = False
    interval_s: float = 10.0
    enabled: bool = True


SETTINGS = Settings()

#: Seconds between refreshes of the bar on a terminal (so elapsed time and time left move between files).
TTY_REFRESH_S = 0.5


def hours(seconds: float) -> str:
    """``seconds`` of audio or wall time for a person: ``42 s``, ``3.5 min``, ``1.25 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


class Progress:
    """Files done of ``total``, audio hours, errors, rates and time left, for one stage of a command.

    Use as a context manager and call :meth:`update` with each finished part's counts; safe to call from one
    thread while the ticker thread redraws.
    """

    def __init__(
        self,
        total: int,
        *,
        desc: str = "tag",
        stream: TextIO | None = None,
        interactive: bool | None = None,
        settings: Settings = SETTINGS,
        poll: Callable[[], tuple[int, int, float] | None] | None = None,
    ) -> None:
        self.total, self.desc, self.settings = total, desc, settings
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.files = self.errors = 0
        self.audio_s = 0.0
        #: Finer counts than :meth:`update`'s, read at every redraw: files, errors and audio seconds decoded so
        #: far (the decode tasks report each song as they finish it); the bar shows whichever is further.
        self.poll = poll
        self._written = (0, 0, 0.0)
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bar: tqdm | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Progress:
        if not self.settings.enabled:
            return self
        if self.interactive:
            self._bar = tqdm(
                total=self.total,
                desc=self.desc,
                unit="file",
                file=self.stream,
                dynamic_ncols=True,
                bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} files "
                "[{elapsed}<{remaining}, {rate_fmt}]{postfix}",
            )
            self._bar.set_postfix_str(self._extras(), refresh=True)
        else:
            self._print_line()
        self._thread = threading.Thread(target=self._tick, name="mgr-batch-progress", daemon=True)
        self._thread.start()
        return self

    def update(self, *, files: int, audio_s: float = 0.0, errors: int = 0) -> None:
        """``files`` more finished (of which ``errors`` failed) holding ``audio_s`` seconds of audio."""
        with self._lock:
            f, e, a = self._written
            self._written = (f + files, e + errors, a + audio_s)
            self._show(self._written)

    def _show(self, counts: tuple[int, int, float]) -> None:
        """Move the bar on to ``counts`` (files, errors, audio seconds) where they are further than it is."""
        files = min(max(self.files, counts[0]), self.total)
        self.errors = max(self.errors, counts[1])
        self.audio_s = max(self.audio_s, counts[2])
        moved, self.files = files - self.files, files
        if self._bar is not None:
            self._bar.set_postfix_str(self._extras(), refresh=False)
            self._bar.update(moved)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self._bar is not None:
                self._bar.set_postfix_str(self._extras(), refresh=False)
                self._bar.close()
            elif self.settings.enabled and exc[0] is None:
                self._print_line()

    def _tick(self) -> None:
        wait = TTY_REFRESH_S if self.interactive else self.settings.interval_s
        while not self._stop.wait(wait):
            seen = self.poll() if self.poll is not None else None
            with self._lock:
                if seen is not None:
                    self._show(seen)
                if self._bar is not None:
                    self._bar.set_postfix_str(self._extras(), refresh=False)
                    self._bar.refresh()
                else:
                    self._print_line()

    def _extras(self) -> str:
        """Audio, errors and the audio rate: what tqdm's own fields do not show."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return f"{hours(self.audio_s)} audio, {self.errors} errors, {self.audio_s / elapsed:.0f} audio h/h"

    def line(self) -> str:
        """The periodic line: ``tag: 120/1000 files (12%), 3.40 h audio, 2 errors, 410 audio h/h, 2.1 files/s, 7.0 min left``."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        pct = 100.0 * self.files / self.total if self.total else 100.0
        rate = self.files / elapsed
        left = hours((self.total - self.files) / rate) if self.files else "?"
        return (
            f"{self.desc}: {self.files}/{self.total} files ({pct:.0f}%), {self._extras()}, "
            f"{rate:.2f} files/s, {left} left, {hours(elapsed)} elapsed"
        )

    def _print_line(self) -> None:
        print(self.line(), file=self.stream, flush=True)


def say(text: str, *, stream: TextIO | None = None) -> None:
    """One line of a command's running account (e.g. an epoch's loss), on stderr beside the progress."""
    if SETTINGS.enabled:
        print(text, file=stream or sys.stderr, flush=True)
