"""Prometheus metrics of the server: FT groups by protection status and reason, per org.

Served at ``GET /candlepin/fleet/metrics`` (users; a superadmin sees every org, an org's admin its
own) in Prometheus' text format, rendered by prometheus_client from a collector that computes the
values when scraped (:mod:`ftmock.protection`), so a scrape is never older than the data.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from . import protection
from .lifecycle import load_settings
from .store import Tx

__all__ = ["CONTENT_TYPE", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Protection:
    """A prometheus_client collector of the protection of the given orgs' FT groups."""

    def __init__(self, tx: Tx, orgs: Iterable[str]) -> None:
        self.tx = tx
        self.orgs = list(orgs)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        groups = GaugeMetricFamily("ftmock_ft_groups", "FT groups reported by the org, by protection status",
                                   labels=["org", "protection"])
        reasons = GaugeMetricFamily("ftmock_ft_groups_unprotected", "Unprotected FT groups of the org with this "
                                    "reason (a group may have several)", labels=["org", "reason"])
        silent_after = load_settings(self.tx).guest_silent_after
        for org in self.orgs:
            counts = protection.summary(protection.org_groups(self.tx, org, silent_after))
            for status in (protection.PROTECTED, protection.UNPROTECTED):
                groups.add_metric([org, status], counts[status])
            for reason, count in counts["reasons"].items():
                reasons.add_metric([org, reason], count)
        yield groups
        yield reasons


def render(tx: Tx, orgs: Iterable[str]) -> bytes:
    """The text exposition of the metrics of these orgs."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Protection(tx, orgs))
    return bytes(generate_latest(registry))
