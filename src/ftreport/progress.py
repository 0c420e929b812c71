"""A one-line progress display on a terminal for long first collections.

Nothing is drawn unless the stream is a TTY and the collection has run for ``delay`` seconds;
the line is erased when the collection ends, so logs and ``--print`` output stay clean.
"""

from __future__ import annotations

import threading
import time
from typing import TextIO

from .sources.base import ProgressCallback

__all__ = ["Progress"]


class Progress:
    """Per-source status texts redrawn on one terminal line."""

    def __init__(self, stream: TextIO, *, enabled: bool | None = None, delay: float = 1.0,
                 period: float = 0.2) -> None:
        self._stream = stream
        self._enabled = stream.isatty() if enabled is None else enabled
        self._delay = delay
        self._period = period
        self._texts: dict[str, str] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._drawn = False
        self._start = time.monotonic()
        self._thread: threading.Thread | None = None

    def callback(self, name: str) -> ProgressCallback:
        """A callback sources call with short texts ("connecting", "1200 VMs"...)."""
        with self._lock:
            self._texts.setdefault(name, "waiting")

        def report(text: str) -> None:
            with self._lock:
                self._texts[name] = text

        return report

    def finish(self, name: str, text: str = "done") -> None:
        with self._lock:
            self._texts[name] = text

    def start(self) -> None:
        if not self._enabled or self._thread is not None:
            return
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()

    def _line(self) -> str:
        with self._lock:
            parts = [f"{name}: {text}" for name, text in sorted(self._texts.items())]
        return f"ftreport: collecting ({time.monotonic() - self._start:.0f} s) " + " | ".join(parts)

    def _run(self) -> None:
        if self._done.wait(self._delay):
            return
        while not self._done.is_set():
            line = self._line()
            width = 200
            self._stream.write("\r\x1b[K" + line[:width])
            self._stream.flush()
            self._drawn = True
            self._done.wait(self._period)

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn = False
