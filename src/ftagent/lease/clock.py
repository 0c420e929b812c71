"""Clocks for the lease heartbeat: a monotonic clock that counts suspend, injectable for tests.

Every lease timer (renewal schedule, deadline, fencing budget) uses :meth:`Clock.now`, which is
``CLOCK_BOOTTIME`` where the platform has it (Linux): it never jumps with the wall clock and keeps
counting while a guest is suspended, so a guest that slept past its deadline knows it did.  Where
``CLOCK_BOOTTIME`` is missing, ``time.monotonic`` is used.  :meth:`Clock.wall` is only for
human-readable timestamps in the status file and logs; no decision depends on it.

``CLOCK_BOOTTIME`` is system-wide, so a deadline written to the status file by one process can be
compared by another one on the same boot (:func:`boot_id` tells boots apart).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock", "boot_id", "clock_name"]


class Clock(Protocol):
    """What the heartbeat needs from a clock."""

    def now(self) -> float:
        """Seconds on a monotonic clock that counts suspend; only differences are meaningful."""
        ...

    def wall(self) -> float:
        """Wall-clock seconds since the epoch, for display only."""
        ...


_BOOTTIME: int | None = getattr(time, "CLOCK_BOOTTIME", None)


def clock_name() -> str:
    """``"boottime"`` or ``"monotonic"``: the clock :class:`SystemClock` uses here."""
    if _BOOTTIME is not None:
        try:
            time.clock_gettime(_BOOTTIME)
            return "boottime"
        except OSError:
            pass
    return "monotonic"


class SystemClock:
    """``CLOCK_BOOTTIME`` (or ``time.monotonic``) and ``time.time``."""

    def __init__(self) -> None:
        self.name = clock_name()
        self._id = _BOOTTIME if self.name == "boottime" else None

    def now(self) -> float:
        if self._id is not None:
            return time.clock_gettime(self._id)
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


class ManualClock:
    """A clock tests drive by hand: :meth:`advance` moves both clocks, :meth:`jump_wall` only the wall."""

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall = wall
        self._lock = threading.Lock()
        self.name = "manual"

    def now(self) -> float:
        with self._lock:
            return self._now

    def wall(self) -> float:
        with self._lock:
            return self._wall

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
            self._wall += seconds

    def jump_wall(self, seconds: float) -> None:
        with self._lock:
            self._wall += seconds


def boot_id() -> str | None:
    """This boot's identifier (Linux ``/proc/sys/kernel/random/boot_id``), or ``None``."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            value = fh.read().strip()
        return str(uuid.UUID(value))
    except (OSError, ValueError):
        return None
