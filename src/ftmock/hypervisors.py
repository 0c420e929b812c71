"""Hypervisor check-in as virt-who sends it, processed as an asynchronous job.

The report is validated while the client waits (a malformed one is a 400, not a failed job), stored
with the job, and applied by one worker thread in a single transaction, so a report is applied whole
or not at all. Rules for odd reports: a hypervisor that appears twice in one report is applied once
(the first entry) and the duplicate is listed in `failedUpdate`; hypervisors a report leaves out keep
their guests (reports may be partial, one per reporter).

Reporters send their full report on every change, so a report of tens of thousands of guests is
mostly what the last one said. It is parsed once (the worker gets the parsed form with the job),
and each hypervisor consumer stores the digest of the guest list its guest rows were made from: a
hypervisor whose reported list has that digest again has its rows left as they are, uncompared.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from . import lifecycle
from .ca import CertificateAuthority
from .consumers import require_owner
from .errors import BadRequest, NotFound
from .failover import FtEntry, ft_entry, reconcile_group
from .guestids import guest_key
from .lifecycle import LifecycleSettings
from .store import Database, Tx, dumps, loads, now_iso
from .validate import check_nesting, facts_map, parse_json

__all__ = ["HypervisorEntry", "JobRunner", "apply_report", "get_job", "heartbeat", "job_dto", "parse_report", "submit"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GuestEntry:
    guest_id: str
    key: str
    state: int | None
    attributes: dict[str, Any]


# Bumped when what a digest covers, or how guest rows are derived from it, changes: a stored digest
# of an older kind then never matches, and the guest list is compared row by row once.
_DIGEST_KIND = "1:"


@dataclass(frozen=True)
class HypervisorEntry:
    """One hypervisor of a report, validated; its guests are turned into rows only when needed."""

    hypervisor_id: str
    name: str
    facts: dict[str, str]
    reported_guests: tuple[Any, ...]  # as reported: guest objects or bare guest ids
    ft_indexes: tuple[int, ...] = ()  # the reported guests that carry FT attributes

    @cached_property
    def guests(self) -> tuple[GuestEntry, ...]:
        return tuple(_guest_entry(g) for g in self.reported_guests)

    @property
    def ft_guests(self) -> list[GuestEntry]:
        return [_guest_entry(self.reported_guests[i]) for i in self.ft_indexes]

    @cached_property
    def guests_digest(self) -> str:
        """A fingerprint of the guest list as reported: equal digests mean equal guest rows.

        ``repr`` of decoded JSON tells every value apart (1, 1.0, True and "1" differ); a list that
        differs only in order or spelling gets another digest, which costs a comparison, never a
        missed change."""
        return _DIGEST_KIND + hashlib.sha256(repr(self.reported_guests).encode()).hexdigest()


MAX_FT_ROLE = 64


def _ft_texts(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes with a numeric instanceUUID as text: Candlepin's guest attributes are strings, and
    it takes a number where a string is due."""
    instance = attrs.get("instanceUUID")
    if isinstance(instance, (int, float)) and not isinstance(instance, bool):
        return {**attrs, "instanceUUID": str(instance)}
    return attrs


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
    attrs = _ft_texts(attrs)
    _ft_attributes(attrs, where)
    return GuestEntry(gid, guest_key(gid), state, attrs)


def _guest_entry(item: Any) -> GuestEntry:
    """The row-to-be of a guest that `_check_guests` accepted."""
    if isinstance(item, str):
        return GuestEntry(item, guest_key(item), None, {})
    gid = item["guestId"]
    return GuestEntry(gid, guest_key(gid), item.get("state"), _ft_texts(item.get("attributes") or {}))


WHAT = "hypervisor report"
_GUEST_KEYS = frozenset(("guestId", "state", "attributes"))
_FT_KEYS = frozenset(("instanceUUID", "ftinfo.role", "ftinfo.instanceUUIDs"))
_FLAT = frozenset((str, int, float, bool, type(None)))
# Depth of a guest object in a report: {"hypervisors": [{"guestIds": [{...}]}]}.
_GUEST_DEPTH = 5


def _check_guests(guests: list[Any], where: str) -> tuple[int, ...]:
    """Check a hypervisor's guest list; the indexes of its guests with FT attributes.

    Reports hold tens of thousands of guests, nearly all a guest id, a state and a few flat
    attributes: those are accepted by the inline test; anything else (and every FT guest) goes
    through `_parse_guest`, which names the fault, and the nesting bound."""
    ft = []
    for j, item in enumerate(guests):
        if type(item) is dict and item.keys() <= _GUEST_KEYS:
            gid, state, attrs = item.get("guestId"), item.get("state"), item.get("attributes")
            if (type(gid) is str and 0 < len(gid) <= 255 and gid.strip() and (state is None or type(state) is int)
                    and (not attrs or (type(attrs) is dict and _FT_KEYS.isdisjoint(attrs)
                                       and _FLAT.issuperset(map(type, attrs.values()))))):
                continue
        _parse_guest(item, f"{where}.guestIds[{j}]")
        check_nesting(item, WHAT, _GUEST_DEPTH)
        if isinstance(item, dict) and isinstance(item.get("attributes"), dict) \
                and not _FT_KEYS.isdisjoint(item["attributes"]):
            ft.append(j)
    return tuple(ft)


def parse_report(text: bytes) -> list[HypervisorEntry]:
    body = parse_json(text, WHAT, nesting=False)
    try:
        return _parse_hypervisors(body)
    except BadRequest:
        # The whole document's nesting is judged first, as when it was walked before being read.
        check_nesting(body, WHAT)
        raise


def _parse_hypervisors(body: Any) -> list[HypervisorEntry]:
    if not isinstance(body, dict) or not isinstance(body.get("hypervisors"), list):
        raise BadRequest('A hypervisor report must be {"hypervisors": [...]}')
    for key, value in body.items():
        if key != "hypervisors":
            check_nesting(value, WHAT, 2)
    out = []
    for i, item in enumerate(body["hypervisors"]):
        where = f"hypervisors[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object")
        for key, value in item.items():
            if key != "guestIds":
                check_nesting(value, WHAT, 4)
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
        facts = facts_map(item.get("facts"), f"{where}.facts")
        out.append(HypervisorEntry(hid.strip(), name, facts, tuple(guests), _check_guests(guests, where)))
    return out


def submit(tx: Tx, owner: str, reporter_id: str | None, raw: bytes) -> tuple[dict[str, Any], list[HypervisorEntry]]:
    """Accept a report as a job: the job as the client sees it, and the report as the job applies it."""
    require_owner(tx, owner)
    entries = parse_report(raw)  # reject bad input now, while the client waits
    job_id = f"hypervisor_update_{uuidlib.uuid4().hex}"
    now = now_iso()
    tx.execute("INSERT INTO jobs(id, owner, reporter_id, state, payload, created, updated) "
               "VALUES(?,?,?,?,?,?,?)", (job_id, owner, reporter_id, "CREATED", raw.decode("utf-8-sig"), now, now))
    if reporter_id:
        _seen(tx, owner, reporter_id)
    row = tx.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
    assert row is not None
    return job_dto(row), entries


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


def apply_report(tx: Tx, ca: CertificateAuthority, owner: str, reporter_id: str | None,
                 entries: list[HypervisorEntry], settings: LifecycleSettings | None = None) -> dict[str, Any]:
    result: dict[str, list[Any]] = {"created": [], "updated": [], "unchanged": [], "failedUpdate": []}
    seen: set[str] = set()
    ft: dict[str, list[FtEntry]] = {}
    now = now_iso()
    # Where each FT instance ran before this report: a failed primary is no longer reported.
    previous_hosts = {r["instance_key"]: r["hypervisor"] for r in tx.all(
        "SELECT g.instance_key, g.hypervisor FROM guests g JOIN consumers c ON c.uuid = g.hypervisor "
        "WHERE c.owner = ? AND g.instance_key != ''", (owner,))}
    known = {r["hypervisor_id"]: r for r in tx.all(
        "SELECT uuid, name, facts, hypervisor_id, guests_digest FROM consumers "
        "WHERE owner = ? AND hypervisor_id IS NOT NULL", (owner,))}
    for entry in entries:
        hid = entry.hypervisor_id.lower()
        if hid in seen:
            result["failedUpdate"].append({"hypervisorId": entry.hypervisor_id,
                                           "reason": "hypervisor appears more than once in the report"})
            continue
        seen.add(hid)
        row = known.get(hid)
        if row is None:
            uuid = str(uuidlib.uuid4())
            tx.execute(
                "INSERT INTO consumers(uuid, name, owner, type, facts, created, updated, last_checkin, "
                "hypervisor_id, reporter_id, guests_digest) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                (uuid, entry.name, owner, "hypervisor", dumps(entry.facts), now, now, now, hid, reporter_id,
                 entry.guests_digest),
            )
            _replace_guests(tx, uuid, entry.guests, now)
            kind = "created"
        else:
            uuid = row["uuid"]
            changed = row["name"] != entry.name or loads(row["facts"], {}) != entry.facts
            # The digest of the list the stored rows were made from: when it matches, so do the rows.
            if row["guests_digest"] != entry.guests_digest and _replace_guests(tx, uuid, entry.guests, now):
                changed = True
            tx.execute("UPDATE consumers SET name=?, facts=?, last_checkin=?, reporter_id=?, guests_digest=?, "
                       "updated=CASE WHEN ? THEN ? ELSE updated END WHERE uuid=?",
                       (entry.name, dumps(entry.facts), now, reporter_id, entry.guests_digest, changed, now, uuid))
            kind = "updated" if changed else "unchanged"
        result[kind].append({"uuid": uuid, "name": entry.name, "owner": {"key": owner},
                             "hypervisorId": {"hypervisorId": hid}})
        for guest in entry.ft_guests:
            ft_entry = _ft_entry(uuid, guest)
            if ft_entry is not None:
                ft.setdefault(ft_entry.guest_key, []).append(ft_entry)
    failovers = []
    # An unregistered group's VM is still mapped to its hosts (the guest rows above), but gets no consumer.
    ended = lifecycle.tombstoned(tx, owner)
    for gkey in sorted(ft):
        if gkey in ended:
            continue
        outcome = reconcile_group(tx, ca, gkey, ft[gkey], owner)
        if outcome["failover"]:
            failovers.append(_describe_failover(tx, outcome["failover"], ft[gkey], previous_hosts))
    lifecycle.evaluate_departures(tx, owner, settings or LifecycleSettings())
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
    return ft_entry(hypervisor, guest.guest_id, guest.key, guest.attributes)


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
    """One worker thread applying queued check-ins in order; jobs left over by a stop are resumed.

    A report accepted by this process is handed over already parsed; one resumed after a restart
    is parsed again from the payload stored with its job, which stays there until the job is
    FINISHED. A parsed report of 45,000 guests takes about 25 MB, so only a few wait parsed: the
    others of a burst wait as their stored payload, as resumed ones do."""

    MAX_PARSED_WAITING = 2

    def __init__(self, db: Database, ca: CertificateAuthority,
                 on_done: Callable[[str], None] | None = None, settings: LifecycleSettings | None = None) -> None:
        self.db = db
        self.ca = ca
        self.on_done = on_done
        self.settings = settings or LifecycleSettings()
        self.queue: queue.Queue[tuple[str, list[HypervisorEntry] | None] | None] = queue.Queue()
        self._parsed_waiting = 0
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="ftmock-jobs", daemon=True)

    def start(self) -> None:
        with self.db.transaction() as tx:
            pending = tx.all("SELECT id FROM jobs WHERE state IN ('CREATED', 'RUNNING') ORDER BY created")
        for row in pending:
            self.queue.put((row["id"], None))
        self.thread.start()

    def enqueue(self, job_id: str, entries: list[HypervisorEntry] | None = None) -> None:
        with self._lock:
            if entries is not None and self._parsed_waiting >= self.MAX_PARSED_WAITING:
                entries = None
            if entries is not None:
                self._parsed_waiting += 1
        self.queue.put((job_id, entries))

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if item[1] is not None:
                with self._lock:
                    self._parsed_waiting -= 1
            try:
                self._process(*item)
            except Exception:
                log.exception("job %s could not be recorded", item[0])

    def _process(self, job_id: str, entries: list[HypervisorEntry] | None = None) -> None:
        with self.db.transaction() as tx:
            row = tx.one("SELECT owner, reporter_id, state FROM jobs WHERE id = ?", (job_id,))
            if row is None or row["state"] not in ("CREATED", "RUNNING"):
                return
            tx.execute("UPDATE jobs SET state='RUNNING', updated=? WHERE id=?", (now_iso(), job_id))
        try:
            with self.db.transaction() as tx:
                if entries is None:
                    payload = tx.one("SELECT payload FROM jobs WHERE id = ?", (job_id,))
                    entries = parse_report(payload["payload"].encode() if payload else b"")
                result = apply_report(tx, self.ca, row["owner"], row["reporter_id"], entries, self.settings)
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
