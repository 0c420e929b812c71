"""FT groups over their life: the end of a group at unregistration, and instances that depart.

The rules (docs/design.md, "An FT group over its life"):

* Deleting the group's live registered consumer (the guest's own identity) deletes every consumer
  of the group, and leaves a tombstone (reporting org, guest key) under which reports create no
  consumer for the group; they still store its guest rows. A registration with that ``virt.uuid``
  lifts the tombstone and rebuilds the group from the stored rows first, so that it joins the
  group as any registration does.
* An instance is present while a hypervisor of the reporting org lists it. One listed nowhere is
  marked departed (``departed_at``) and, once ``departed_grace`` has passed without it coming
  back, retired: its entitlements are returned and its consumer is deleted when the server made it
  (no identity certificate), or keeps only what belongs to the guest (group attributes cleared).
  The group's registered primary that is still reported as a plain guest (FT turned off) keeps its
  entitlements too. A failed-over consumer the guest holds is left as it is: it answers the 308.
* Departures are evaluated after each report of the org and by the server's periodic sweep.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

from . import consumers, shares, subscriptions
from .ca import CertificateAuthority
from .failover import FtEntry, ft_entry, reconcile_group
from .guestids import guest_key
from .store import Tx, dumps, loads, now_iso

__all__ = [
    "LifecycleSettings",
    "delete_consumer",
    "evaluate_departures",
    "load_settings",
    "registering",
    "remove",
    "save_settings",
    "tombstoned",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LifecycleSettings:
    """The server's lifecycle and protection timings (``ftmock serve`` options)."""

    departed_grace: float = 3600.0
    inactive_days: int = 397
    guest_silent_after: float = 10800.0

    @property
    def sweep_interval(self) -> float:
        """How often the sweep runs: every grace/2, at least once a second and at most once a minute."""
        return min(60.0, max(1.0, self.departed_grace / 2))


_META_KEYS = {"departed_grace": float, "inactive_days": int, "guest_silent_after": float}


def save_settings(tx: Tx, settings: LifecycleSettings) -> None:
    """Record the running server's settings, so that offline commands judge as the server does."""
    for key in _META_KEYS:
        tx.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                   (f"lifecycle.{key}", str(getattr(settings, key))))


def load_settings(tx: Tx) -> LifecycleSettings:
    """The settings the server last ran with (the defaults before it ever ran)."""
    values: dict[str, Any] = {}
    for key, kind in _META_KEYS.items():
        row = tx.one("SELECT value FROM meta WHERE key = ?", (f"lifecycle.{key}",))
        if row is not None:
            values[key] = kind(row["value"])
    return LifecycleSettings(**values)


# -- the end of a group ---------------------------------------------------------------------------

def tombstoned(tx: Tx, org: str) -> set[str]:
    """Guest keys of the org's groups that reports must not make consumers for."""
    return {r["guest_key"] for r in tx.all("SELECT guest_key FROM ft_tombstones WHERE reported_owner = ?", (org,))}


def _is_guest_identity(row: sqlite3.Row) -> bool:
    """The group's live consumer whose identity the guest holds."""
    return bool(row["instance_uuid"] and row["reported_owner"] and row["cert_pem"] and not row["failed_over_to"])


def delete_consumer(tx: Tx, row: sqlite3.Row) -> list[str]:
    """Delete a consumer; for the guest's own consumer of an FT group, the whole group.

    Returns the UUIDs deleted."""
    if not _is_guest_identity(row):
        consumers.delete(tx, row)
        return [row["uuid"]]
    org, gkey = row["reported_owner"], row["guest_key"]
    group = tx.all("SELECT * FROM consumers WHERE guest_key = ? AND reported_owner = ? AND instance_uuid IS NOT NULL "
                   "ORDER BY created, rowid", (gkey, org))
    for member in group:
        consumers.delete(tx, member)
    tx.execute("INSERT OR REPLACE INTO ft_tombstones(reported_owner, guest_key, created) VALUES(?,?,?)",
               (org, gkey, now_iso()))
    log.warning("FT group %s (reported by %s) unregistered: deleted its %d consumers (%s); reports make none "
                "until a guest of it registers again", gkey, org, len(group), ", ".join(m["uuid"] for m in group))
    return [m["uuid"] for m in group]


def registering(tx: Tx, ca: CertificateAuthority, owner: str | None, body: Any) -> None:
    """Before a registration: lift the tombstones of the group its ``virt.uuid`` names and rebuild
    the group from the latest reports, so that the registration then joins it as any does.

    Only the tombstones a registration in ``owner`` could adopt are lifted: the org's own group, or
    one of an org that shares with it. The request's transaction undoes this if it fails."""
    facts = body.get("facts") if isinstance(body, dict) else None
    virt_uuid = facts.get("virt.uuid") if isinstance(facts, dict) else None
    if not owner or not isinstance(virt_uuid, str) or not virt_uuid.strip():
        return
    gkey = guest_key(virt_uuid)
    for stone in tx.all("SELECT reported_owner FROM ft_tombstones WHERE guest_key = ? "
                        "ORDER BY reported_owner != ?, reported_owner", (gkey, owner)):
        org = stone["reported_owner"]
        if org != owner and not shares.shares_with(tx, org, owner):
            continue
        tx.execute("DELETE FROM ft_tombstones WHERE reported_owner = ? AND guest_key = ?", (org, gkey))
        entries = _reported_entries(tx, org, gkey)
        log.info("FT group %s (reported by %s): a guest registers again in %s; group rebuilt from %d reported "
                 "instances", gkey, org, owner, len(entries))
        if entries:
            reconcile_group(tx, ca, gkey, entries, org)
        return


def _reported_entries(tx: Tx, org: str, gkey: str) -> list[FtEntry]:
    """The group's FT instances as the org's hypervisors last reported them."""
    rows = tx.all("SELECT g.hypervisor, g.guest_id, g.attributes FROM guests g JOIN consumers h "
                  "ON h.uuid = g.hypervisor WHERE h.owner = ? AND g.guest_key = ? AND g.instance_key != '' "
                  "ORDER BY h.uuid", (org, gkey))
    entries = (ft_entry(r["hypervisor"], r["guest_id"], gkey, loads(r["attributes"], {})) for r in rows)
    return [e for e in entries if e is not None]


# -- departures -----------------------------------------------------------------------------------

def _iso(when: dt.datetime) -> str:
    return when.isoformat(timespec="milliseconds")


def evaluate_departures(tx: Tx, org: str, settings: LifecycleSettings,
                        now: dt.datetime | None = None) -> dict[str, list[str]]:
    """Mark, forgive and retire the org's FT instances by whether its hypervisors report them.

    Returns what was done (``departed``, ``returned``, ``deleted``, ``detached``, ``plain``), by
    consumer UUID."""
    when = now or dt.datetime.now(dt.timezone.utc)
    now_text = _iso(when)
    expired = _iso(when - dt.timedelta(seconds=settings.departed_grace))
    done: dict[str, list[str]] = {"departed": [], "returned": [], "deleted": [], "detached": [], "plain": []}
    members = tx.all("SELECT * FROM consumers WHERE reported_owner = ? AND instance_uuid IS NOT NULL "
                     "ORDER BY created, rowid", (org,))
    if not members:
        return done
    present = {(r["guest_key"], r["instance_key"]) for r in tx.all(
        "SELECT DISTINCT g.guest_key, g.instance_key FROM guests g JOIN consumers h ON h.uuid = g.hypervisor "
        "WHERE h.owner = ? AND g.instance_key != ''", (org,))}
    for row in members:
        if (row["guest_key"], row["instance_uuid"]) in present:
            if row["departed_at"] is not None:
                tx.execute("UPDATE consumers SET departed_at = NULL WHERE uuid = ?", (row["uuid"],))
                done["returned"].append(row["uuid"])
            continue
        if row["failed_over_to"] and row["cert_pem"]:
            continue  # the guest's former identity: kept to answer the 308, already without entitlements
        if row["departed_at"] is None:
            tx.execute("UPDATE consumers SET departed_at = ? WHERE uuid = ?", (now_text, row["uuid"]))
            done["departed"].append(row["uuid"])
            log.info("FT instance %s (consumer %s, group %s) is in no report of %s; it departs in %g s unless "
                     "reported again", row["instance_uuid"], row["uuid"], row["guest_key"], org,
                     settings.departed_grace)
            continue
        if row["departed_at"] > expired:
            continue
        done[_retire(tx, row, org)].append(row["uuid"])
    return done


def _plain_reported(tx: Tx, org: str, gkey: str) -> bool:
    """Whether the org's hypervisors report this ``virt.uuid`` as a guest without FT attributes."""
    return tx.one("SELECT 1 FROM guests g JOIN consumers h ON h.uuid = g.hypervisor "
                  "WHERE h.owner = ? AND g.guest_key = ? AND g.instance_key = '' LIMIT 1", (org, gkey)) is not None


def _retire(tx: Tx, row: sqlite3.Row, org: str) -> str:
    """Retire an instance whose grace has passed; says which way (``deleted``, ``plain``, ``detached``)."""
    live_primary = row["ft_role"] == 0 and not row["failed_over_to"]
    if live_primary and row["owner"] and _plain_reported(tx, org, row["guest_key"]):
        _leave_group(tx, row)
        log.warning("FT group %s: FT is off; primary consumer %s stays as a plain guest's, with its entitlements",
                    row["guest_key"], row["uuid"])
        return "plain"
    released = _release(tx, row)
    if row["cert_pem"] is None:
        remove(tx, row)
        log.warning("FT instance %s of group %s departed: consumer %s deleted (%d entitlements returned)",
                    row["instance_uuid"], row["guest_key"], row["uuid"], released)
        return "deleted"
    _leave_group(tx, row)
    log.warning("FT instance %s of group %s departed: the guest's consumer %s is kept as a plain guest's "
                "(%d entitlements returned)", row["instance_uuid"], row["guest_key"], row["uuid"], released)
    return "detached"


def remove(tx: Tx, row: sqlite3.Row) -> None:
    """Delete one consumer (entitlements, derived pools, guest rows), keeping failover paths whole."""
    if row["failed_over_to"]:
        # Every older identity keeps its path to the current one (A -> B -> C becomes A -> C).
        tx.execute("UPDATE consumers SET failed_over_to = ? WHERE failed_over_to = ?",
                   (row["failed_over_to"], row["uuid"]))
    consumers.delete(tx, row)


def _release(tx: Tx, row: sqlite3.Row) -> int:
    ents = tx.all("SELECT id FROM entitlements WHERE consumer = ?", (row["uuid"],))
    for ent in ents:
        subscriptions.remove_entitlement(tx, ent["id"])
    return len(ents)


def _leave_group(tx: Tx, row: sqlite3.Row) -> None:
    """The consumer stays the guest's, outside any FT group: no instance, role or FT facts."""
    facts = {k: v for k, v in loads(row["facts"], {}).items() if k not in consumers.FT_FACTS}
    tx.execute("UPDATE consumers SET instance_uuid = NULL, ft_role = NULL, reported_owner = NULL, departed_at = NULL, "
               "facts = ?, updated = ? WHERE uuid = ?", (dumps(facts), now_iso(), row["uuid"]))
