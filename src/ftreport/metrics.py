"""Per-source Prometheus metrics of the reporter, for node_exporter's textfile collector.

``[global] metrics_file`` names the file (off by default).  For every source: when a report
covering it was last accepted, how long that check-in took, how many hypervisors and
guests it reported, how many failovers the server saw in its reports, and how many collection or
delivery errors it had.  Counters continue from the file's previous values, so one-shot runs add
up like the daemon does.  Writing goes through :class:`ftagent.metrics.MetricsFile` (atomic,
prometheus_client's exposition format).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ReportMetrics"]

log = logging.getLogger(__name__)


@dataclass
class _Source:
    up: bool = False
    last_success: float | None = None
    duration: float | None = None
    hypervisors: int | None = None
    guests: int | None = None
    new_failovers: int = 0
    new_errors: int = 0


class ReportMetrics:
    """What the reporter has done, per source; :meth:`write` replaces the metrics file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._sources: dict[str, _Source] = {}
        self._last_write = 0.0

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def _get(self, name: str) -> _Source:
        return self._sources.setdefault(name, _Source())

    def collected(self, name: str) -> None:
        with self._lock:
            self._get(name).up = True

    def source_error(self, name: str) -> None:
        with self._lock:
            src = self._get(name)
            src.up = False
            src.new_errors += 1

    def delivered(self, counts: dict[str, tuple[int, int]], duration: float, failovers: int) -> None:
        """A report covering these sources was accepted after ``duration`` seconds."""
        now = time.time()
        with self._lock:
            for name, (hvs, guests) in counts.items():
                src = self._get(name)
                src.last_success = now
                src.duration = duration
                src.hypervisors, src.guests = hvs, guests
                src.new_failovers += failovers

    def delivery_failed(self, names: list[str]) -> None:
        with self._lock:
            for name in names:
                self._get(name).new_errors += 1

    def write(self, *, every: float = 0.0) -> None:
        """Replace the file (at most once per ``every`` seconds)."""
        if self.path is None or time.monotonic() - self._last_write < every:
            return
        # Imported on the first write, which only a configured metrics_file makes: prometheus_client
        # adds ~30 ms to every start.
        from prometheus_client import Counter, Gauge

        from ftagent.metrics import MetricsFile

        self._last_write = time.monotonic()
        mf = MetricsFile(self.path, ("ftreport_",))
        with self._lock, mf.update() as registry:
            gauges: dict[str, Any] = {}

            def gauge(name: str, doc: str) -> Any:
                if name not in gauges:
                    gauges[name] = Gauge(name, doc, ["source"], registry=registry)
                return gauges[name]

            for name, src in sorted(self._sources.items()):
                gauge("ftreport_source_up", "1 if the source's last collection succeeded.").labels(name).set(
                    1 if src.up else 0)
                last = src.last_success or mf.previous("ftreport_source_last_success_timestamp_seconds",
                                                       source=name) or None
                if last is not None:
                    gauge("ftreport_source_last_success_timestamp_seconds",
                          "When the server last accepted a report covering the source."
                          ).labels(name).set(last)
                keep = {"ftreport_source_last_report_duration_seconds": src.duration,
                        "ftreport_source_hypervisors": src.hypervisors, "ftreport_source_guests": src.guests}
                docs = {"ftreport_source_last_report_duration_seconds":
                        "Seconds the last accepted check-in took, job included.",
                        "ftreport_source_hypervisors": "Hypervisors in the last accepted report.",
                        "ftreport_source_guests": "Guests in the last accepted report."}
                for metric, value in keep.items():
                    if value is None:
                        value = mf.previous(metric, float("nan"), source=name)
                    if value == value:  # not NaN: known now or from an earlier run
                        gauge(metric, docs[metric]).labels(name).set(value)
                for metric, doc, new in (
                        ("ftreport_source_failovers", "Failovers the server saw in this source's reports.",
                         src.new_failovers),
                        ("ftreport_source_errors", "Collection and delivery errors of the source.",
                         src.new_errors)):
                    if metric not in gauges:
                        gauges[metric] = Counter(metric, doc, ["source"], registry=registry)
                    gauges[metric].labels(name).inc(mf.previous(metric + "_total", source=name) + new)
                src.new_failovers = src.new_errors = 0
