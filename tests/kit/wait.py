"""Waiting in tests: poll a condition up to a deadline, or watch one hold for a real duration.

``wait_until`` is the one way a test waits for something another process or thread does: it polls
and fails with a message naming what never happened.  A bare sleep as synchronisation
passes on a fast machine and fails on a loaded one (or waits longer than needed everywhere).
``hold_for`` is for the other case, where a duration is the thing tested ("still HELD three
seconds later", "nothing was sent during three wake-ups"): it samples while the time passes.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

__all__ = ["hold_for", "wait_for_file", "wait_until"]

T = TypeVar("T")

#: How often a condition is polled: short against the tests' timings (renewals every 0.5 s), long
#: enough that polling costs nothing on a loaded machine.
STEP = 0.05


def wait_until(predicate: Callable[[], T], timeout: float, message: str | Callable[[], str], *,
               step: float = STEP) -> T:
    """Poll ``predicate`` until it returns a true value, and return that value.

    Raises ``AssertionError`` saying what was awaited (``message``, or what ``message()`` says at the
    deadline: a log's tail, a count) once ``timeout`` seconds have passed without it.  The predicate
    is tried once more at the deadline, so a slow poll never loses a late success."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message if isinstance(message, str) else message()
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)  # the poll interval, not a synchronisation


def hold_for(seconds: float, *, step: float = 0.2) -> Iterator[float]:
    """Yield every ``step`` seconds until ``seconds`` have passed (the seconds elapsed so far).

    For assertions that must hold during a real duration: ``for _ in hold_for(3): assert ...``.
    It yields at once, then after each step, and last at (or just after) the end."""
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        yield elapsed
        if elapsed >= seconds:
            return
        time.sleep(min(step, seconds - elapsed))  # a real duration is what the caller tests


def wait_for_file(path: Path, process: subprocess.Popen[bytes], timeout: float, name: str, log: Path) -> str:
    """The text ``process`` (called ``name``, logging to ``log``) writes into ``path`` once it is ready.

    Fails at once, pointing at the log, if the process exits before it wrote the file."""

    def written() -> str:
        text = path.read_text().strip() if path.exists() else ""
        if not text and process.poll() is not None:
            raise AssertionError(f"{name} exited with {process.returncode}; see {log}")
        return text

    return wait_until(written, timeout, f"{name} to write {path}")
