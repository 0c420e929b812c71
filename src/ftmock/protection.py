"""Whether each FT group is protected: its VM runs as a primary with a live secondary, and the
guest that owns it is registered, checking in and holding its lease.

A group is ``protected`` when every condition holds, otherwise ``unprotected`` with one reason code
per condition that fails (docs/design.md, "Protection status"):

* ``needSecondary``: the reported ``faultToleranceState`` of the primary (else of any instance) is
  not ``running``; not judged when the reporter does not send the attribute;
* ``secondaryNotReported``: the role-0 instance or every backup is in no hypervisor's report;
* ``guestNotRegistered``: the role-0 consumer has no identity the guest holds (never registered, or
  a successor the guest has not taken yet);
* ``guestSilent``: the guest neither checked in (as the role-0 consumer or an identity it held
  before a failover) nor renewed the lease as the role-0 consumer within ``guest_silent_after``
  seconds;
* ``leaseNotHeld``: the group has a lease (it uses one) and it has expired or was released;
* ``staleLeaseHolder``: the lease is live but held through another consumer than the role-0 one.

Everything is computed from what is stored, in a few queries per org, when asked.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .store import Tx, loads

__all__ = ["PROTECTED", "REASONS", "UNPROTECTED", "GroupProtection", "for_groups", "org_groups", "summary"]

PROTECTED, UNPROTECTED = "protected", "unprotected"
REASONS = ("needSecondary", "secondaryNotReported", "guestNotRegistered", "guestSilent", "leaseNotHeld",
           "staleLeaseHolder")
RUNNING = "running"


@dataclass(frozen=True)
class GroupProtection:
    """One group's protection as the server sees it."""

    org: str  # the reporting org
    guest_key: str
    primary: str | None
    state: str | None  # vSphere's faultToleranceState as reported, None when not sent
    reasons: tuple[str, ...]

    @property
    def protection(self) -> str:
        return UNPROTECTED if self.reasons else PROTECTED

    def to_json(self) -> dict[str, Any]:
        return {"protection": self.protection, "reasons": list(self.reasons), "faultToleranceState": self.state}


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _reported(tx: Tx, org: str) -> dict[tuple[str, str], str | None]:
    """(guest key, instance key) -> reported faultToleranceState, for the org's reported FT instances."""
    out: dict[tuple[str, str], str | None] = {}
    for r in tx.all("SELECT g.guest_key, g.instance_key, g.attributes FROM guests g JOIN consumers h "
                    "ON h.uuid = g.hypervisor WHERE h.owner = ? AND g.instance_key != ''", (org,)):
        state = loads(r["attributes"], {}).get("faultToleranceState")
        key = (r["guest_key"], r["instance_key"])
        if out.get(key) is None:
            out[key] = state if isinstance(state, str) else None
    return out


def for_groups(tx: Tx, org: str, groups: dict[str, list[sqlite3.Row]], silent_after: float,
               now: float | None = None) -> dict[str, GroupProtection]:
    """The protection of the given groups of one reporting org (guest key -> its consumers)."""
    now = time.time() if now is None else now
    reported = _reported(tx, org)
    leases = {r["group_key"]: r for r in tx.all("SELECT * FROM leases WHERE group_key LIKE ? ESCAPE '\\'",
                                                (_like_prefix(org),))}
    out = {}
    for gkey, rows in groups.items():
        live = [r for r in rows if r["instance_uuid"] and not r["failed_over_to"]]
        primary = next((r for r in live if r["ft_role"] == 0), None)
        present = [r for r in live if (gkey, r["instance_uuid"]) in reported]
        present_roles = {r["ft_role"] for r in present}
        reasons = []
        state = None
        if primary is not None and (gkey, primary["instance_uuid"]) in reported:
            state = reported[gkey, primary["instance_uuid"]]
        if state is None:
            state = next((reported[gkey, r["instance_uuid"]] for r in present
                          if reported[gkey, r["instance_uuid"]] is not None), None)
        if state is not None and state != RUNNING:
            reasons.append("needSecondary")
        if primary is None or 0 not in present_roles or not present_roles - {0}:
            reasons.append("secondaryNotReported")
        registered = primary is not None and primary["owner"] is not None and primary["cert_pem"] is not None
        if not registered:
            reasons.append("guestNotRegistered")
        lease = leases.get(f"{org}/{gkey}")
        if registered:
            assert primary is not None
            # The guest is the same VM through its failovers: its check-ins as an older identity count.
            contact = max((t for t in (_epoch(r["last_checkin"]) for r in rows
                                       if r is primary or (r["failed_over_to"] and r["cert_pem"])) if t is not None),
                          default=None)
            if lease is not None and lease["consumer"] == primary["uuid"]:
                # A live lease was last renewed a ttl before it expires; an ended one was released
                # when it expired (or it ran out, at most a ttl after the last renewal).
                renewed = lease["expires"] - lease["ttl"] if lease["expires"] > now else lease["expires"]
                contact = renewed if contact is None else max(contact, renewed)
            if contact is None or now - contact > silent_after:
                reasons.append("guestSilent")
        if lease is not None:
            if lease["expires"] <= now:
                reasons.append("leaseNotHeld")
            elif primary is None or lease["consumer"] != primary["uuid"]:
                reasons.append("staleLeaseHolder")
        out[gkey] = GroupProtection(org, gkey, primary["uuid"] if primary is not None else None, state,
                                    tuple(reasons))
    return out


def _like_prefix(org: str) -> str:
    return org.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"


def org_groups(tx: Tx, org: str, silent_after: float, now: float | None = None) -> list[GroupProtection]:
    """The protection of every FT group an org reports, in guest key order."""
    groups: dict[str, list[sqlite3.Row]] = defaultdict(list)
    for row in tx.all("SELECT * FROM consumers WHERE reported_owner = ? AND instance_uuid IS NOT NULL "
                      "ORDER BY created, rowid", (org,)):
        groups[row["guest_key"]].append(row)
    found = for_groups(tx, org, dict(groups), silent_after, now)
    return [found[k] for k in sorted(found)]


def summary(found: Iterable[GroupProtection]) -> dict[str, Any]:
    """Counts: groups per status, and unprotected groups per reason (every reason, zeros too)."""
    counts = {PROTECTED: 0, UNPROTECTED: 0}
    reasons = dict.fromkeys(REASONS, 0)
    for group in found:
        counts[group.protection] += 1
        for reason in group.reasons:
            reasons[reason] += 1
    return {**counts, "reasons": reasons}
