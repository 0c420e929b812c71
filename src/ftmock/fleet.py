"""The operator's view of the server: organizations, consumers, FT groups, their protection and
their leases.

Read-only summaries shared by the ``ftmock org/consumer/ftgroup/lease list`` commands and the
``/fleet/...`` resources, so both show the same thing. Protection is judged with the timings the
server last ran with (:func:`ftmock.lifecycle.load_settings`).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from . import protection
from .consumers import require_owner
from .leases import fingerprint
from .lifecycle import load_settings
from .store import Tx, loads
from .subscriptions import host_of

__all__ = ["consumer_list", "ft_groups", "lease_list", "org_list", "protection_report"]


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def org_list(tx: Tx) -> list[dict[str, Any]]:
    """Every organization with how many systems, hypervisors and FT groups it has, and its content access mode."""
    out = []
    for row in tx.all("SELECT * FROM owners ORDER BY key"):
        key = row["key"]
        counts = tx.one(
            "SELECT SUM(type = 'hypervisor') AS hyps, SUM(type != 'hypervisor') AS systems, "
            "COUNT(DISTINCT CASE WHEN instance_uuid IS NOT NULL THEN guest_key END) AS groups "
            "FROM consumers WHERE owner = ? OR (owner IS NULL AND reported_owner = ?)", (key, key))
        assert counts is not None
        out.append({"key": key, "displayName": row["display_name"],
                    "systems": counts["systems"] or 0, "hypervisors": counts["hyps"] or 0,
                    "ftGroups": counts["groups"] or 0, "contentAccessMode": row["content_access_mode"]})
    return out


def _org_consumers(tx: Tx, owner: str, *, ft_only: bool = False) -> list[sqlite3.Row]:
    rows = tx.all("SELECT * FROM consumers WHERE (owner = ? OR (owner IS NULL AND reported_owner = ?)) "
                  "ORDER BY created, rowid", (owner, owner))
    return [r for r in rows if r["instance_uuid"] is not None] if ft_only else rows


def consumer_list(tx: Tx, owner: str) -> list[dict[str, Any]]:
    """The org's consumers: type, whether a system registered, last check-in, FT instance."""
    require_owner(tx, owner)
    out = []
    for row in _org_consumers(tx, owner):
        out.append({
            "uuid": row["uuid"], "name": row["name"], "type": row["type"],
            "registered": row["owner"] is not None and row["cert_serial"] is not None,
            "lastCheckin": row["last_checkin"],
            "instanceUUID": row["instance_uuid"], "failedOver": row["failed_over_to"] is not None,
        })
    return out


def _lease_dto(row: sqlite3.Row, now: float) -> dict[str, Any]:
    return {"group": row["group_key"], "holderFingerprint": fingerprint(row["holder"]), "consumer": row["consumer"],
            "generation": row["generation"], "ttl": row["ttl"], "expires": _iso(row["expires"]),
            "expiresIn": round(max(0.0, row["expires"] - now), 3), "valid": row["expires"] > now}


def ft_groups(tx: Tx, owner: str) -> list[dict[str, Any]]:
    """The org's FT groups, each instance with its role, host, registration and failover, and the lease."""
    require_owner(tx, owner)
    now = time.time()
    groups: dict[str, list[sqlite3.Row]] = {}
    for row in _org_consumers(tx, owner, ft_only=True):
        groups.setdefault(row["guest_key"], []).append(row)
    by_org: dict[str, dict[str, list[sqlite3.Row]]] = {}
    for gkey, rows in groups.items():
        by_org.setdefault(rows[0]["reported_owner"] or rows[0]["owner"], {})[gkey] = rows
    silent_after = load_settings(tx).guest_silent_after
    status = {gkey: found for org, org_groups in by_org.items()
              for gkey, found in protection.for_groups(tx, org, org_groups, silent_after, now).items()}
    out = []
    for gkey, rows in groups.items():
        instances = []
        for row in rows:
            host = host_of(tx, row)
            facts = loads(row["facts"], {})
            instances.append({
                "consumer": row["uuid"], "instanceUUID": row["instance_uuid"], "role": row["ft_role"],
                "host": host["name"] if host is not None else None,
                "hostUuid": host["uuid"] if host is not None else None,
                "registered": row["owner"] is not None and row["cert_serial"] is not None,
                "failedOver": row["failed_over_to"] is not None,
                "failedOverTo": row["failed_over_to"], "failedOverAt": row["failed_over_at"],
                "lastCheckin": row["last_checkin"], "virtUuid": facts.get("virt.uuid"),
                "departedAt": row["departed_at"],
            })
        lease_org = rows[0]["reported_owner"] or rows[0]["owner"]
        lease = tx.one("SELECT * FROM leases WHERE group_key = ?", (f"{lease_org}/{gkey}",))
        primary = next((i["consumer"] for i in instances if i["role"] == 0 and not i["failedOver"]), None)
        out.append({"guestId": instances[0]["virtUuid"] or gkey, "primary": primary,
                    **status[gkey].to_json(), "instances": instances,
                    "lease": _lease_dto(lease, now) if lease is not None else None})
    return out


def protection_report(tx: Tx, owner: str) -> dict[str, Any]:
    """An org's FT groups by protection: the counts, and each unprotected group with its reasons."""
    require_owner(tx, owner)
    groups = protection.org_groups(tx, owner, load_settings(tx).guest_silent_after)
    unprotected = []
    for group in groups:
        if group.reasons:
            row = tx.one("SELECT facts FROM consumers WHERE reported_owner = ? AND guest_key = ? "
                         "AND instance_uuid IS NOT NULL ORDER BY created, rowid LIMIT 1", (owner, group.guest_key))
            virt_uuid = loads(row["facts"], {}).get("virt.uuid") if row is not None else None
            unprotected.append({"guestId": virt_uuid or group.guest_key, "primary": group.primary,
                                **group.to_json()})
    return {"org": owner, **protection.summary(groups), "unprotectedGroups": unprotected}


def lease_list(tx: Tx, owner: str) -> list[dict[str, Any]]:
    """Leases of the org's groups and consumers: holder, generation, expiry."""
    require_owner(tx, owner)
    now = time.time()
    rows = tx.all(
        "SELECT l.* FROM leases l LEFT JOIN consumers c ON c.uuid = l.consumer "
        "WHERE l.group_key LIKE ? ESCAPE '\\' OR c.owner = ? OR (c.owner IS NULL AND c.reported_owner = ?) "
        "ORDER BY l.group_key",
        (owner.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%", owner, owner))
    return [_lease_dto(r, now) for r in rows]
