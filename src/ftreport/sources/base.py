"""What every source offers: a one-shot collection and a stream of snapshots on change.

A *snapshot* is the complete list of hypervisors (with their guests) a source sees at one moment,
already filtered by the source's host filters. Sources raise :class:`~ftreport.errors.SourceError`
for every failure they expect (unreachable, bad credentials, untrusted certificate...); the caller
decides whether to retry.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Protocol

from ..model import Hypervisor

__all__ = ["ProgressCallback", "Snapshot", "Source", "no_progress"]

Snapshot = list[Hypervisor]
ProgressCallback = Callable[[str], None]


def no_progress(_text: str) -> None:
    """A progress callback that shows nothing."""


class Source(Protocol):
    """A place hosts and guests are collected from."""

    @property
    def name(self) -> str:
        """The configuration section the source comes from."""
        ...

    def collect(self) -> Snapshot:
        """Connect, collect everything once, disconnect."""
        ...

    def watch(self, stop: threading.Event) -> Iterator[Snapshot]:
        """Yield a first snapshot, then a new one whenever something changes, until stop is set.

        Raises SourceError when the source becomes unusable; the caller reconnects by calling
        watch() again (with backoff).
        """
        ...

    def close(self) -> None:
        """Release connections (safe to call more than once, from another thread)."""
        ...
