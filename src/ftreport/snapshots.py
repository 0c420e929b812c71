"""The latest snapshot (or error) of every source, where the daemon's source threads publish and its
delivery loop gathers.

Every publication that changes something bumps a version the loop waits on, so a change wakes the
loop at once and nothing wakes it otherwise.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .metrics import ReportMetrics
from .model import Hypervisor
from .sources import Snapshot

__all__ = ["Snapshots", "counts"]


def counts(hypervisors: Sequence[Hypervisor]) -> tuple[int, int]:
    """(hypervisors, guests) of a snapshot."""
    return len(hypervisors), sum(len(h.guests) for h in hypervisors)


@dataclass
class _SourceState:
    snapshot: Snapshot | None = None
    error: str | None = None
    updated: float = 0.0
    first: float | None = None  # when its first snapshot arrived


class Snapshots:
    """The latest snapshot (or error) of every source, shared by source threads and the reporter."""

    def __init__(self, metrics: ReportMetrics | None = None) -> None:
        self._cond = threading.Condition()
        self._states: dict[str, _SourceState] = {}
        self.version = 0
        self.metrics = metrics

    def publish(self, name: str, snapshot: Snapshot) -> bool:
        """Record a snapshot; returns whether it differs from the previous one."""
        if self.metrics is not None:
            self.metrics.collected(name)
        with self._cond:
            state = self._states.setdefault(name, _SourceState())
            changed = state.snapshot != snapshot
            state.snapshot = snapshot
            state.error = None
            state.updated = time.monotonic()
            if state.first is None:
                state.first = state.updated
            if changed:
                self.version += 1
                self._cond.notify_all()
            return changed

    def fail(self, name: str, error: str) -> None:
        """Record a source failure; its last snapshot (if any) is kept."""
        if self.metrics is not None:
            self.metrics.source_error(name)
        with self._cond:
            state = self._states.setdefault(name, _SourceState())
            first = state.error is None and state.snapshot is None
            state.error = error
            if first:
                self.version += 1
                self._cond.notify_all()

    def forget(self, names: Sequence[str]) -> None:
        with self._cond:
            for name in names:
                self._states.pop(name, None)
            self.version += 1
            self._cond.notify_all()

    def wait(self, version: int, timeout: float) -> int:
        """Wait until the version differs from ``version`` (or timeout); returns the version."""
        with self._cond:
            self._cond.wait_for(lambda: self.version != version, timeout=max(0.0, timeout))
            return self.version

    def poke(self) -> None:
        """Wake up waiters (used for stop and reload)."""
        with self._cond:
            self._cond.notify_all()

    def gather(self, names: Sequence[str], wait: float = math.inf) -> tuple[list[Snapshot], list[str]]:
        """(snapshots of these sources, the sources still collecting for the first time).

        While some are still collecting, the list of snapshots is empty, unless the first snapshot
        of these sources arrived ``wait`` seconds ago or more: one slow vCenter then no longer
        holds back the others' report (the server keeps hypervisors a report leaves out)."""
        with self._cond:
            snaps = []
            pending = []
            first = math.inf
            for name in names:
                state = self._states.get(name)
                if state is None:
                    pending.append(name)
                    continue
                if state.snapshot is not None:
                    snaps.append(state.snapshot)
                    first = min(first, state.first or math.inf)
            if pending and time.monotonic() - first < wait:
                snaps = []
            return snaps, pending

    def describe(self) -> dict[str, dict[str, Any]]:
        with self._cond:
            out = {}
            for name, st in self._states.items():
                hvs, guests = counts(st.snapshot or [])
                out[name] = {"ok": st.error is None, "error": st.error, "hypervisors": hvs, "guests": guests}
            return out

    def counts(self, names: Sequence[str]) -> dict[str, tuple[int, int]]:
        """(hypervisors, guests) of these sources' latest snapshots."""
        with self._cond:
            return {n: counts(self._states[n].snapshot or []) for n in names if n in self._states}
