"""How a report reaches one destination: the one path for the one-shot run and the daemon alike.

A :class:`Delivery` is a destination (server and owner) with what it has sent: given the newest
report for it, it decides whether the report is due, sends it, records what the server accepted,
counts it in the metrics and logs it. The one-shot run makes one delivery; the daemon makes one per
cycle and retries failures with backoff.

A full report goes at start and at least every ``interval`` (virt-who's meaning), whatever was sent
before: a server restored from a backup, or a new one, knows every hypervisor again within one
interval even if nothing changes in the sources. In between, a report is sent when it differs from
the last one the server accepted; the same report again within the interval is not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from .encoding import EncodedReport
from .metrics import ReportMetrics
from .sender import Destination

__all__ = ["Delivery", "describe_result", "log_failovers"]

log = logging.getLogger(__name__)


def describe_result(result: Mapping[str, Any]) -> str:
    """A check-in job's result in a few words: ``2 created, 1 updated, 1 failovers``."""
    parts = []
    for key in ("created", "updated", "unchanged", "failedUpdate"):
        value = result.get(key)
        if isinstance(value, list):
            parts.append(f"{len(value)} {key}")
    failovers = result.get("failovers")
    if isinstance(failovers, list) and failovers:
        parts.append(f"{len(failovers)} failovers")
    return ", ".join(parts) or "accepted"


def _failovers(result: Mapping[str, Any]) -> int:
    value = result.get("failovers")
    return len(value) if isinstance(value, list) else 0


def _host_label(host: Any) -> str:
    if not isinstance(host, Mapping):
        return "unknown host"
    name, hid = host.get("name"), host.get("hypervisorId")
    if name and hid and name != hid:
        return f"{name} ({hid})"
    return str(name or hid or host.get("uuid") or "unknown host")


def log_failovers(result: Mapping[str, Any], label: str) -> None:
    """Log, at warning, every FT failover the check-in job says it caused: VM, virt.uuid, old
    primary instance and host -> new primary instance and host."""
    failovers = result.get("failovers")
    if not isinstance(failovers, list):
        return
    for fo in failovers:
        if not isinstance(fo, Mapping):
            continue
        log.warning("FT failover at %s: VM %s (virt.uuid %s): primary instance %s on %s -> %s on %s",
                    label, fo.get("name") or "?", fo.get("guestId") or "?",
                    fo.get("fromInstance") or fo.get("from") or "?", _host_label(fo.get("fromHypervisor")),
                    fo.get("toInstance") or fo.get("to") or "?", _host_label(fo.get("toHypervisor")))


class Delivery:
    """One destination's reports.

    ``interval``: the longest time between two full reports the server accepted. The first
    delivery always sends (the start)."""

    def __init__(self, destination: Destination, metrics: ReportMetrics, *, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.destination = destination
        self.metrics = metrics
        self.interval = interval
        self._clock = clock
        self._accepted: tuple[str, float] | None = None  # the last accepted report's digest, and when

    @property
    def label(self) -> str:
        return self.destination.label

    def due(self, report: EncodedReport) -> str | None:
        """Why this report is to be sent now (``start``, ``changed``, ``interval``), or None."""
        if self._accepted is None:
            return "start"
        digest, when = self._accepted
        if report.digest != digest:
            return "changed"
        if self._clock() - when >= self.interval:
            return "interval"
        return None

    def deliver(self, report: EncodedReport, sizes: dict[str, tuple[int, int]]) -> bool:
        """Send this report if it is due (:meth:`due`); returns whether it was sent.

        ``sizes``: (hypervisors, guests) by source, for the metrics. Raises SendError, having
        recorded nothing."""
        why = self.due(report)
        if why is None:
            return False
        dest = self.destination
        started = self._clock()
        result = dest.check_in(report.data)
        self._accepted = (report.digest, started)
        dest.record.set(report.digest)
        took = self._clock() - started
        self.metrics.delivered(sizes, took, _failovers(result))
        log.info("report accepted by %s: %d hypervisors, %d guests (%s) in %.2f s (sent: %s)", dest.label,
                 report.hypervisors, report.guests, describe_result(result), took, why)
        log_failovers(result, dest.label)
        return True

    def close(self) -> None:
        self.destination.close()
