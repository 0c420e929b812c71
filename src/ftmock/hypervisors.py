"""Hypervisor check-in as virt-who sends it, processed as an asynchronous job.

The report is validated while the client waits (a malformed one is a 400, not a failed job), stored
with the job, and applied by one worker thread in a single transaction, so a report is applied whole
or not at all. Rules for odd reports: a hypervisor that appears twice in one report is applied once
(the first entry) and the duplicate is listed in `failedUpdate`; hypervisors a report leaves out keep
their guests (reports may be partial, one per reporter).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .ca import CertificateAuthority
from .consumers import require_owner
from .errors import BadRequest, NotFound
from .failover import FtEntry, reconcile_group
from .guestids import guest_key
from .store import Database, Tx, dumps, loads, now_iso
from .validate import facts_map, parse_json

__all__ = ["HypervisorEntry", "JobRunner", "apply_report", "get_job", "heartbeat", "job_dto", "parse_report", "submit"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GuestEntry:
    guest_id: str
    key: str
    state: int | None
    attributes: dict[str, Any]


@dataclass(frozen=True)
class HypervisorEntry:
    hypervisor_id: str
    name: str
    facts: dict[str, str]
    guests: tuple[GuestEntry, ...]


MAX_FT_ROLE = 64


def _ft_attributes(attrs: dict[str, Any], where: str) -> None:
    """The FT attributes must have the types the FT rules use; the rest of `attributes` is opaque."""
    instance = attrs.get("instanceUUID")
    if instance is not None and (not isinstance(instance, str) or len(instance) > 255):
        raise BadRequest(f"{where}: attribute instanceUUID must be a string of at most 255 characters")
    role = attrs.get("ftinfo.role")
    if role is not None:
        if isinstance(role, str) and role.strip().isascii() and role.strip().isdigit() and len(role.strip()) < 4:
            role = int(role)
        if not isinstance(role, int) or isinstance(role, bool) or not 0 <= role <= MAX_FT_ROLE:
            raise BadRequest(f"{where}: attribute ftinfo.role must be an integer from 0 to {MAX_FT_ROLE}")
    instances = attrs.get("ftinfo.instanceUUIDs")
    if instances is None:
        return
    if isinstance(instances, str):
        try:
            parsed = json.loads(instances)
        except (ValueError, RecursionError):
            parsed = [part.strip() for part in instances.split(",") if part.strip()]
        instances = parsed
    if not isinstance(instances, list) or not all(isinstance(i, str) and len(i) <= 255 for i in instances):
        raise BadRequest(f"{where}: attribute ftinfo.instanceUUIDs must be a list of instance UUID strings")


def _parse_guest(item: Any, where: str) -> GuestEntry:
    if isinstance(item, str):
        item = {"guestId": item}
    if not isinstance(item, dict):
        raise BadRequest(f"{where}: a guest must be an object with guestId")
    gid = item.get("guestId")
    if not isinstance(gid, str) or not gid.strip() or len(gid) > 255:
        raise BadRequest(f"{where}: guestId must be a non-empty string")
    where = f"{where} (guest {gid})"
    state = item.get("state")
    if state is not None and (not isinstance(state, int) or isinstance(state, bool)):
        raise BadRequest(f"{where}: state must be an integer")
    attrs = item.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise BadRequest(f"{where}: attributes must be an object")
    _ft_attributes(attrs, where)
    return GuestEntry(gid, guest_key(gid), state, attrs)


def parse_report(text: bytes) -> list[HypervisorEntry]:
    body = parse_json(text, "hypervisor report")
    if not isinstance(body, dict) or not isinstance(body.get("hypervisors"), list):
        raise BadRequest('A hypervisor report must be {"hypervisors": [...]}')
    out = []
    for i, item in enumerate(body["hypervisors"]):
        where = f"hypervisors[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object")
        hid = item.get("hypervisorId")
        if isinstance(hid, dict):
            hid = hid.get("hypervisorId")
        if not isinstance(hid, str) or not hid.strip() or len(hid) > 255:
            raise BadRequest(f"{where}: hypervisorId.hypervisorId must be a non-empty string")
        where = f"{where} (hypervisor {hid.strip()})"
        name = item.get("name") or hid
        if not isinstance(name, str) or len(name) > 255:
            raise BadRequest(f"{where}: name must be a string of at most 255 characters")
        guests = item.get("guestIds") or []
        if not isinstance(guests, list):
            raise BadRequest(f"{where}: guestIds must be a list")
        out.append(HypervisorEntry(
            hid.strip(), name, facts_map(item.get("facts"), f"{where}.facts"),
            tuple(_parse_guest(g, f"{where}.guestIds[{j}]") for j, g in enumerate(guests)),
        ))
    return out


def submit(tx: Tx, owner: str, reporter_id: str | None, raw: bytes) -> dict[str, Any]:
    require_owner(tx, owner)
    parse_report(raw)  # reject bad input now, while the client waits
    job_id = f"hypervisor_update_{uuidlib.uuid4().hex}"
    now = now_iso()
    tx.execute("INSERT INTO jobs(id, owner, reporter_id, state, payload, created, updated) "
               "VALUES(?,?,?,?,?,?,?)", (job_id, owner, reporter_id, "CREATED", raw.decode("utf-8-sig"), now, now))
    if reporter_id:
        _seen(tx, owner, reporter_id)
    row = tx.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
    assert row is not None
    return job_dto(row)


def _seen(tx: Tx, owner: str, reporter_id: str) -> None:
    tx.execute("INSERT INTO reporters(owner, reporter_id, last_seen) VALUES(?,?,?) "
               "ON CONFLICT(owner, reporter_id) DO UPDATE SET last_seen=excluded.last_seen",
               (owner, reporter_id, now_iso()))


def heartbeat(tx: Tx, owner: str, reporter_id: str | None) -> dict[str, Any]:
    require_owner(tx, owner)
    if not reporter_id:
        raise BadRequest("reporter_id is required")
    _seen(tx, owner, reporter_id)
    now = now_iso()
    tx.execute("UPDATE consumers SET last_checkin=? WHERE owner=? AND reporter_id=?", (now, owner, reporter_id))
    job_id = f"hypervisor_heartbeat_{uuidlib.uuid4().hex}"
    tx.execute("INSERT INTO jobs(id, owner, reporter_id, state, result, created, updated) "
               "VALUES(?,?,?,?,?,?,?)", (job_id, owner, reporter_id, "FINISHED", dumps({}), now, now))
    row = tx.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
    assert row is not None
    return job_dto(row)


def job_dto(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": "Hypervisor Update",
        "state": row["state"],
        "owner": {"key": row["owner"]},
        "resultData": loads(row["result"]),
        "result": row["message"],
        "statusPath": f"/jobs/{row['id']}",
        "created": row["created"],
        "updated": row["updated"],
    }


def get_job(tx: Tx, job_id: str) -> dict[str, Any]:
    row = tx.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
    if row is None:
        raise NotFound(f"Job with ID '{job_id}' could not be found.")
    return job_dto(row)


def _brief(row: Any) -> dict[str, Any]:
    return {"uuid": row["uuid"], "name": row["name"], "owner": {"key": row["owner"]},
            "hypervisorId": {"hypervisorId": row["hypervisor_id"]}}


def apply_report(tx: Tx, ca: CertificateAuthority, owner: str, reporter_id: str | None,
                 entries: list[HypervisorEntry]) -> dict[str, Any]:
    result: dict[str, list[Any]] = {"created": [], "updated": [], "unchanged": [], "failedUpdate": []}
    seen: set[str] = set()
    ft: dict[str, list[FtEntry]] = {}
    now = now_iso()
    # Where each FT instance ran before this report: a failed primary is no longer reported.
    previous_hosts = {r["instance_key"]: r["hypervisor"] for r in tx.all(
        "SELECT g.instance_key, g.hypervisor FROM guests g JOIN consumers c ON c.uuid = g.hypervisor "
        "WHERE c.owner = ? AND g.instance_key != ''", (owner,))}
    for entry in entries:
        hid = entry.hypervisor_id.lower()
        if hid in seen:
            result["failedUpdate"].append({"hypervisorId": entry.hypervisor_id,
                                           "reason": "hypervisor appears more than once in the report"})
            continue
        seen.add(hid)
        row = tx.one("SELECT * FROM consumers WHERE owner = ? AND hypervisor_id = ?", (owner, hid))
        if row is None:
            uuid = str(uuidlib.uuid4())
            tx.execute(
                "INSERT INTO consumers(uuid, name, owner, type, facts, created, updated, last_checkin, "
                "hypervisor_id, reporter_id) VALUES(?,?,?,?,?,?,?,?,?,?)",
                (uuid, entry.name, owner, "hypervisor", dumps(entry.facts), now, now, now, hid, reporter_id),
            )
            kind = "created"
        else:
            uuid = row["uuid"]
            changed = row["name"] != entry.name or loads(row["facts"], {}) != entry.facts
            tx.execute("UPDATE consumers SET name=?, facts=?, last_checkin=?, reporter_id=? WHERE uuid=?",
                       (entry.name, dumps(entry.facts), now, reporter_id, uuid))
            kind = "updated" if changed else "unchanged"
        if _replace_guests(tx, uuid, entry.guests, now) and kind == "unchanged":
            kind = "updated"
        if kind != "unchanged":
            tx.execute("UPDATE consumers SET updated=? WHERE uuid=?", (now, uuid))
        hyp = tx.one("SELECT * FROM consumers WHERE uuid = ?", (uuid,))
        result[kind].append(_brief(hyp))
        for guest in entry.guests:
            ft_entry = _ft_entry(uuid, guest)
            if ft_entry is not None:
                ft.setdefault(ft_entry.guest_key, []).append(ft_entry)
    failovers = []
    for gkey in sorted(ft):
        outcome = reconcile_group(tx, ca, gkey, ft[gkey], owner)
        if outcome["failover"]:
            failovers.append(_describe_failover(tx, outcome["failover"], ft[gkey], previous_hosts))
    out: dict[str, Any] = dict(result)
    if failovers:
        out["failovers"] = failovers
    return out


def _hypervisor_brief(tx: Tx, uuid: str | None) -> dict[str, Any] | None:
    row = tx.one("SELECT * FROM consumers WHERE uuid = ?", (uuid,)) if uuid else None
    if row is None:
        return None
    return {"uuid": row["uuid"], "hypervisorId": row["hypervisor_id"], "name": row["name"]}


def _describe_failover(tx: Tx, failover: dict[str, Any], entries: list[FtEntry],
                       previous_hosts: dict[str, str]) -> dict[str, Any]:
    """A failover as the job result shows it: the consumers (``from``, ``to``) plus what a reporter
    logs: the VM (``guestId`` = its virt.uuid, ``name``), the old and new primary instances and
    the hypervisors they run (or last ran) on."""
    old = tx.one("SELECT * FROM consumers WHERE uuid = ?", (failover["from"],))
    new = tx.one("SELECT * FROM consumers WHERE uuid = ?", (failover["to"],))
    reported = {e.instance: e.hypervisor for e in entries}
    out = dict(failover)
    if new is not None:
        # as the report spells it (the consumer's facts keep the spelling the guest registered with)
        out["guestId"] = entries[0].guest_id if entries else loads(new["facts"], {}).get("virt.uuid")
        out["name"] = new["name"]
        out["toInstance"] = loads(new["facts"], {}).get("instanceUUID") or new["instance_uuid"]
        out["toHypervisor"] = _hypervisor_brief(tx, reported.get(new["instance_uuid"]))
    if old is not None:
        out["fromInstance"] = loads(old["facts"], {}).get("instanceUUID") or old["instance_uuid"]
        key = old["instance_uuid"] or ""
        out["fromHypervisor"] = _hypervisor_brief(tx, previous_hosts.get(key) or reported.get(key))
    return out


def _ft_entry(hypervisor: str, guest: GuestEntry) -> FtEntry | None:
    attrs = guest.attributes
    instance = attrs.get("instanceUUID")
    role = attrs.get("ftinfo.role")
    if not isinstance(instance, str) or not instance or role is None:
        return None
    try:
        role_n = int(role)
    except (TypeError, ValueError):
        log.warning("guest %s: ftinfo.role %r is not a number; FT data ignored", guest.guest_id, role)
        return None
    instances = attrs.get("ftinfo.instanceUUIDs") or []
    if isinstance(instances, str):
        try:
            parsed = json.loads(instances)
        except ValueError:
            parsed = [s.strip() for s in instances.split(",") if s.strip()]
        instances = parsed if isinstance(parsed, list) else []
    return FtEntry(hypervisor, guest.guest_id, guest.key, instance.lower(), instance, role_n,
                   tuple(str(i) for i in instances))


def _replace_guests(tx: Tx, hypervisor: str, guests: tuple[GuestEntry, ...], now: str) -> bool:
    """Make the stored guest list equal to the reported one; True when anything changed."""
    def instance_key(g: GuestEntry) -> str:
        value = g.attributes.get("instanceUUID")
        return value.lower() if isinstance(value, str) else ""

    new = {(g.key, instance_key(g)): g for g in guests}
    old = {(r["guest_key"], r["instance_key"]): r
           for r in tx.all("SELECT * FROM guests WHERE hypervisor = ?", (hypervisor,))}
    gone = [k for k in old if k not in new]
    changed_rows = []
    for key, g in new.items():
        prev = old.get(key)
        attrs = dumps(g.attributes)
        if prev is None or prev["state"] != g.state or prev["attributes"] != attrs or prev["guest_id"] != g.guest_id:
            changed_rows.append((hypervisor, key[0], key[1], g.guest_id, g.state, attrs, now))
    if gone:
        tx.executemany("DELETE FROM guests WHERE hypervisor=? AND guest_key=? AND instance_key=?",
                       [(hypervisor, k[0], k[1]) for k in gone])
    if changed_rows:
        tx.executemany(
            "INSERT INTO guests(hypervisor, guest_key, instance_key, guest_id, state, attributes, updated) "
            "VALUES(?,?,?,?,?,?,?) ON CONFLICT(hypervisor, guest_key, instance_key) DO UPDATE SET "
            "guest_id=excluded.guest_id, state=excluded.state, attributes=excluded.attributes, "
            "updated=excluded.updated", changed_rows)
    return bool(gone or changed_rows)


class JobRunner:
    """One worker thread applying queued check-ins in order; jobs left over by a stop are resumed."""

    def __init__(self, db: Database, ca: CertificateAuthority,
                 on_done: Callable[[str], None] | None = None) -> None:
        self.db = db
        self.ca = ca
        self.on_done = on_done
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="ftmock-jobs", daemon=True)

    def start(self) -> None:
        with self.db.transaction() as tx:
            pending = tx.all("SELECT id FROM jobs WHERE state IN ('CREATED', 'RUNNING') ORDER BY created")
        for row in pending:
            self.queue.put(row["id"])
        self.thread.start()

    def enqueue(self, job_id: str) -> None:
        self.queue.put(job_id)

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            job_id = self.queue.get()
            if job_id is None:
                return
            try:
                self._process(job_id)
            except Exception:
                log.exception("job %s could not be recorded", job_id)

    def _process(self, job_id: str) -> None:
        with self.db.transaction() as tx:
            row = tx.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
            if row is None or row["state"] not in ("CREATED", "RUNNING"):
                return
            tx.execute("UPDATE jobs SET state='RUNNING', updated=? WHERE id=?", (now_iso(), job_id))
        try:
            with self.db.transaction() as tx:
                entries = parse_report(row["payload"].encode())
                result = apply_report(tx, self.ca, row["owner"], row["reporter_id"], entries)
                tx.execute("UPDATE jobs SET state='FINISHED', result=?, payload=NULL, updated=? WHERE id=?",
                           (dumps(result), now_iso(), job_id))
            log.info("job %s finished: %d created, %d updated, %d unchanged", job_id,
                     len(result["created"]), len(result["updated"]), len(result["unchanged"]))
        except Exception as exc:
            log.exception("job %s failed", job_id)
            with self.db.transaction() as tx:
                tx.execute("UPDATE jobs SET state='FAILED', message=?, updated=? WHERE id=?",
                           (str(exc), now_iso(), job_id))
        if self.on_done:
            self.on_done(job_id)
