"""Fault-tolerant groups: one consumer per FT instance, failover detection, and the successor answer.

The rules, so that partial, repeated or out-of-order reports have one outcome:

* A group is every consumer sharing a guest key (the normalised `virt.uuid`) that has an instance
  UUID. A consumer is created for each `(virt.uuid, instanceUUID)` the first time it is reported.
* If one instance is reported twice in one report, the entry from the hypervisor whose consumer
  UUID sorts first is used; the others are ignored for FT purposes (their guest rows still count).
* Failover is monotonic. The group's primary changes only when a report names a different,
  never-failed-over instance with role 0. The old primary is then failed over for good: a report that
  later names it primary again is stale and changes no role. If several instances claim role 0, the
  current primary keeps the role when it is among them; otherwise the smallest instance UUID wins.
* A report that does not mention an instance (partial report, another reporter) changes nothing
  for that instance: no role change, no entitlement removed.
* On failover the predecessor's entitlements are released and the successor receives the same
  products: first from a virt pool derived from its own hypervisor, else from any pool it may use
  (the predecessor's own pool included, since its quantity was just released). Backups receive the
  products the primary holds, but only from their own hypervisor's derived pools: each instance is
  entitled by where it runs, so each has its own compliance. Only a failed-over consumer (an
  instance that no longer runs) ever loses entitlements through a report.
* The successor's identity certificate is issued once, for the predecessor's public key, and then
  returned to every request made with any older identity of the group (A -> B -> C leads to C).
* The predecessor's content access certificate is revoked at the failover, and the successor
  inherits its content overrides, release, system purpose, autoheal and environments (what the
  guest chose is the VM's, not the instance's).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

from . import contentaccess, leases, overrides, shares, subscriptions
from .ca import CertificateAuthority
from .consumers import consumer_dto, get_row, issue_identity
from .store import Tx, dumps, loads, now_iso

__all__ = ["FtEntry", "failover_answer", "ft_entry", "reconcile_group", "sync_group_entitlements"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FtEntry:
    """One FT instance as a hypervisor report shows it."""

    hypervisor: str  # hypervisor consumer UUID
    guest_id: str
    guest_key: str
    instance: str  # lower-cased instance UUID
    instance_raw: str
    role: int
    instances: tuple[str, ...]


def ft_entry(hypervisor: str, guest_id: str, gkey: str, attrs: dict[str, Any]) -> FtEntry | None:
    """The FT instance a reported guest's attributes describe (None: not an FT instance)."""
    instance = attrs.get("instanceUUID")
    role = attrs.get("ftinfo.role")
    if not isinstance(instance, str) or not instance or role is None:
        return None
    try:
        role_n = int(role)
    except (TypeError, ValueError):
        log.warning("guest %s: ftinfo.role %r is not a number; FT data ignored", guest_id, role)
        return None
    instances = attrs.get("ftinfo.instanceUUIDs") or []
    if isinstance(instances, str):
        try:
            parsed = json.loads(instances)
        except ValueError:
            parsed = [s.strip() for s in instances.split(",") if s.strip()]
        instances = parsed if isinstance(parsed, list) else []
    return FtEntry(hypervisor, guest_id, gkey, instance.lower(), instance, role_n, tuple(str(i) for i in instances))


def _group(tx: Tx, org: str, gkey: str) -> list[sqlite3.Row]:
    # A group belongs to the org whose hypervisors report its instances; the org it is registered
    # to (its consumers' owner) may be another one that the reporting org shares with.
    return tx.all("SELECT * FROM consumers WHERE guest_key = ? AND reported_owner = ? AND instance_uuid IS NOT NULL "
                  "ORDER BY created, rowid", (gkey, org))


def _ft_facts(entry: FtEntry) -> dict[str, str]:
    return {
        "virt.uuid": entry.guest_id,
        "instanceUUID": entry.instance_raw,
        "ftinfo.role": str(entry.role),
        "ftinfo.instanceUUIDs": json.dumps(list(entry.instances)),
    }


def reconcile_group(tx: Tx, ca: CertificateAuthority, gkey: str, entries: list[FtEntry],
                    reported_owner: str) -> dict[str, Any]:
    """Apply one report's view of an FT group; returns what changed (for the job result and logs)."""
    chosen: dict[str, FtEntry] = {}
    for entry in sorted(entries, key=lambda e: e.hypervisor):
        if entry.instance in chosen:
            log.warning("FT instance %s reported by several hypervisors; using %s",
                        entry.instance, chosen[entry.instance].hypervisor)
            continue
        chosen[entry.instance] = entry

    group = _group(tx, reported_owner, gkey)
    registered = next((c for c in group if c["owner"] and not c["failed_over_to"]), None)
    owner = registered["owner"] if registered else None
    name = registered["name"] if registered else None
    installed = registered["installed_products"] if registered else "[]"
    by_instance = {c["instance_uuid"]: c for c in group}
    now = now_iso()
    created = []
    for instance, entry in chosen.items():
        row = by_instance.get(instance)
        if row is None and entry.role == 0 and not group:
            row = _adopt_registered(tx, reported_owner, gkey, entry)
            if row is not None:
                group = [row]
                continue
        if row is None:
            uuid = str(uuidlib.uuid4())
            # Role 0 is only given by the primary rule below, so a new instance starts as a backup.
            tx.execute(
                "INSERT INTO consumers(uuid, name, owner, type, facts, created, updated, guest_key, "
                "instance_uuid, ft_role, reported_owner, installed_products) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
                (uuid, name or entry.guest_id, owner, "system",
                 dumps({**_ft_facts(entry), "ftinfo.role": str(max(entry.role, 1))}),
                 now, now, gkey, instance, max(entry.role, 1), reported_owner, installed),
            )
            created.append(uuid)
            log.info("FT group %s: consumer %s for instance %s", gkey, uuid, entry.instance_raw)
        elif not row["failed_over_to"]:
            facts = loads(row["facts"], {})
            new_facts = {**facts, **_ft_facts(entry), "ftinfo.role": facts.get("ftinfo.role", "1")}
            if new_facts != facts:
                tx.execute("UPDATE consumers SET facts=?, updated=? WHERE uuid=?",
                           (dumps(new_facts), now, row["uuid"]))
            if entry.role != 0 and row["ft_role"] != 0 and row["ft_role"] != entry.role:
                _set_role(tx, row["uuid"], entry.role)

    group = _group(tx, reported_owner, gkey)
    registered = next((c for c in group if c["owner"] and not c["failed_over_to"]), None)
    if registered is not None and any(c["owner"] is None for c in group):
        tx.execute("UPDATE consumers SET owner=?, installed_products=?, name=? WHERE guest_key=? AND reported_owner=? "
                   "AND instance_uuid IS NOT NULL AND owner IS NULL",
                   (registered["owner"], registered["installed_products"], registered["name"], gkey, reported_owner))
        group = _group(tx, reported_owner, gkey)
    by_instance = {c["instance_uuid"]: c for c in group}
    current = next((c for c in group if c["ft_role"] == 0 and not c["failed_over_to"]), None)
    candidates = sorted(i for i, e in chosen.items()
                        if e.role == 0 and not by_instance[i]["failed_over_to"])
    failed_over = None
    if candidates and not (current is not None and current["instance_uuid"] in candidates):
        successor = by_instance[candidates[0]]
        _set_role(tx, successor["uuid"], 0)
        if current is not None:
            tx.execute("UPDATE consumers SET failed_over_to=?, failed_over_at=?, updated=? WHERE uuid=?",
                       (successor["uuid"], now, now, current["uuid"]))
            failed_over = {"from": current["uuid"], "to": successor["uuid"]}
            log.warning("FT group %s failed over: consumer %s -> %s", gkey, current["uuid"],
                        successor["uuid"])
            _inherit_facts(tx, current, successor)
            _move_entitlements(tx, ca, get_row(tx, current["uuid"]), get_row(tx, successor["uuid"]))
            # The instance that failed no longer runs: its content access ends; the VM's repository
            # choices go on with it.
            contentaccess.revoke(tx, current["uuid"])
            overrides.inherit(tx, current["uuid"], successor["uuid"])
    sync_group_entitlements(tx, ca, reported_owner, gkey)
    return {"created": created, "failover": failed_over}


def _adopt_registered(tx: Tx, org: str, gkey: str, entry: FtEntry) -> sqlite3.Row | None:
    """A VM registered before any report names its FT group: its consumer becomes the primary.

    The VM may have registered in the reporting org or in an org the reporting org shares with."""
    orgs = [org, *shares.recipients_of(tx, org)]
    marks = ",".join("?" * len(orgs))
    row = tx.one(f"SELECT * FROM consumers WHERE guest_key = ? AND owner IN ({marks}) "  # noqa: S608
                 "AND instance_uuid IS NULL AND type = 'system' AND cert_pem IS NOT NULL "
                 "ORDER BY owner != ?, created, rowid LIMIT 1", (gkey, *orgs, org))
    if row is None:
        return None
    facts = {**loads(row["facts"], {}), **_ft_facts(entry)}
    tx.execute("UPDATE consumers SET instance_uuid=?, ft_role=0, facts=?, reported_owner=?, updated=? WHERE uuid=?",
               (entry.instance, dumps(facts), org, now_iso(), row["uuid"]))
    # Its own lease (a plain consumer shares none) becomes the group's: the heartbeat renews on.
    adopted = get_row(tx, row["uuid"])
    leases.regroup(tx, row["uuid"], leases.group_key_of(adopted))
    log.info("FT group %s: registered consumer %s is instance %s", gkey, row["uuid"], entry.instance_raw)
    return adopted


def _set_role(tx: Tx, uuid: str, role: int) -> None:
    row = get_row(tx, uuid)
    facts = loads(row["facts"], {})
    facts["ftinfo.role"] = str(role)
    tx.execute("UPDATE consumers SET ft_role=?, facts=?, updated=? WHERE uuid=?",
               (role, dumps(facts), now_iso(), uuid))


def _inherit_facts(tx: Tx, old: sqlite3.Row, new: sqlite3.Row) -> None:
    """The successor is the same VM: it keeps what the guest registered, with its own FT facts."""
    facts = loads(old["facts"], {})
    facts.update({k: v for k, v in loads(get_row(tx, new["uuid"])["facts"], {}).items()
                  if k in ("instanceUUID", "ftinfo.role", "ftinfo.instanceUUIDs")})
    # What the guest set on itself (release, system purpose, autoheal, environments) is the VM's too.
    tx.execute("UPDATE consumers SET facts=?, name=?, installed_products=?, release_ver=?, service_level=?, "
               "autoheal=?, role=?, usage=?, addons=?, service_type=?, environments=?, updated=? WHERE uuid=?",
               (dumps(facts), old["name"], old["installed_products"], old["release_ver"], old["service_level"],
                old["autoheal"], old["role"], old["usage"], old["addons"], old["service_type"], old["environments"],
                now_iso(), new["uuid"]))


def _held_products(tx: Tx, consumer_uuid: str) -> list[str]:
    rows = tx.all("SELECT DISTINCT p.product_id FROM entitlements e JOIN pools p ON p.id = e.pool "
                  "WHERE e.consumer = ? ORDER BY p.product_id", (consumer_uuid,))
    return [r["product_id"] for r in rows]


def _move_entitlements(tx: Tx, ca: CertificateAuthority, old: sqlite3.Row, new: sqlite3.Row) -> None:
    products = _held_products(tx, old["uuid"])
    for ent in tx.all("SELECT id FROM entitlements WHERE consumer = ?", (old["uuid"],)):
        subscriptions.remove_entitlement(tx, ent["id"])
    if new["owner"] is None or not products:
        return
    attached = subscriptions.auto_attach(tx, ca, new, only_products=products)
    got = {p["productId"] for e in attached for p in e["pool"]["providedProducts"]}
    missing = [p for p in products if p not in got and p not in subscriptions.products_covered(tx, new["uuid"])]
    if missing:
        log.warning("FT successor %s could not be entitled to %s", new["uuid"], ", ".join(missing))


def sync_group_entitlements(tx: Tx, ca: CertificateAuthority, org: str, gkey: str) -> None:
    """Give every live backup of a registered group the primary's products from its own host."""
    group = _group(tx, org, gkey)
    primary = next((c for c in group if c["ft_role"] == 0 and not c["failed_over_to"]), None)
    if primary is None or primary["owner"] is None:
        return
    products = _held_products(tx, primary["uuid"])
    if not products:
        return
    for backup in group:
        if backup["uuid"] == primary["uuid"] or backup["failed_over_to"] or backup["owner"] is None:
            continue
        subscriptions.auto_attach(tx, ca, backup, only_products=products, host_only=True)


def failover_answer(tx: Tx, ca: CertificateAuthority, row: sqlite3.Row) -> dict[str, Any]:
    """The body of the 308 for a request made as a failed-over consumer."""
    seen = {row["uuid"]}
    current = row
    while current["failed_over_to"] and current["failed_over_to"] not in seen:
        seen.add(current["failed_over_to"])
        current = get_row(tx, current["failed_over_to"])
    if current["owner"] is None and row["owner"] is not None:
        tx.execute("UPDATE consumers SET owner=? WHERE uuid=?", (row["owner"], current["uuid"]))
        current = get_row(tx, current["uuid"])
    if current["cert_pem"] is None:
        # FT instances share memory and disk, hence the key: the successor's certificate is issued for
        # the predecessor's public key, so no private key crosses the wire.
        issue_identity(tx, ca, current, row["public_key_pem"])
        # The live guest asked for it just now: the successor's identity starts out live (ftmock.takeover).
        tx.execute("UPDATE consumers SET last_checkin=? WHERE uuid=?", (now_iso(), current["uuid"]))
        current = get_row(tx, current["uuid"])
        log.info("issued identity for FT successor %s (from %s)", current["uuid"], row["uuid"])
    return {
        "displayMessage": f"Consumer {row['uuid']} has failed over to {current['uuid']}.",
        "failover": {"from": row["uuid"], "to": current["uuid"], "consumer": consumer_dto(tx, current)},
    }
