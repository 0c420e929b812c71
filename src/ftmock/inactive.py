"""The inactive consumer cleaner: Candlepin's ``InactiveConsumerCleanerJob``, run by the server.

Candlepin deletes consumers whose last check-in is older than a retention (397 days by default),
and those that never checked in and were not updated for 30 days; it keeps consumers of a
manifest type (``candlepin``: the distributors that export manifests) and consumers that hold an
entitlement. ftmock does the same. An FT instance that a hypervisor of its reporting org still
reports counts as checking in with that report: a backup never checks in itself, and an instance
that leaves every report is the departure rule's (:mod:`ftmock.lifecycle`).

Every run is recorded in ``server_jobs`` (``ftmock job list``) and logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid as uuidlib
from typing import Any

from .lifecycle import remove
from .store import Tx, dumps, loads, now_iso

__all__ = ["JOB_KEY", "MANIFEST_TYPES", "NEVER_CHECKED_IN_DAYS", "job_list", "run"]

log = logging.getLogger(__name__)

JOB_KEY = "InactiveConsumerCleanerJob"
#: Consumer types Candlepin's job never deletes (its manifest types).
MANIFEST_TYPES = ("candlepin",)
#: Candlepin's retention for consumers that never checked in, by their last update.
NEVER_CHECKED_IN_DAYS = 30


def _iso(when: dt.datetime) -> str:
    return when.isoformat(timespec="milliseconds")


def run(tx: Tx, inactive_days: int, now: dt.datetime | None = None) -> dict[str, Any]:
    """Delete the inactive consumers; the run as ``ftmock job list`` shows it."""
    when = now or dt.datetime.now(dt.timezone.utc)
    started = now_iso()
    checked_in_before = _iso(when - dt.timedelta(days=inactive_days))
    updated_before = _iso(when - dt.timedelta(days=NEVER_CHECKED_IN_DAYS))
    marks = ",".join("?" * len(MANIFEST_TYPES))
    rows = tx.all(
        f"SELECT * FROM consumers c WHERE c.type NOT IN ({marks}) "  # noqa: S608 - placeholders only
        "AND NOT EXISTS (SELECT 1 FROM entitlements e WHERE e.consumer = c.uuid) "
        "AND ((c.last_checkin IS NOT NULL AND c.last_checkin < ?) OR (c.last_checkin IS NULL AND c.updated < ?)) "
        "ORDER BY c.created, c.rowid", (*MANIFEST_TYPES, checked_in_before, updated_before))
    removed = []
    for row in rows:
        if row["instance_uuid"] and _reported(tx, row):
            continue
        if tx.one("SELECT 1 FROM consumers WHERE uuid = ?", (row["uuid"],)) is None:
            continue  # went with another one
        remove(tx, row)
        removed.append({"uuid": row["uuid"], "name": row["name"], "type": row["type"],
                        "owner": row["owner"] or row["reported_owner"], "lastCheckin": row["last_checkin"]})
    message = (f"Inactive Consumer Cleaner completed: {len(removed)} consumers removed "
               f"(no check-in for {inactive_days} days)")
    job_id = f"inactive_consumer_cleaner_{uuidlib.uuid4().hex}"
    tx.execute("INSERT INTO server_jobs(id, key, started, finished, result) VALUES(?,?,?,?,?)",
               (job_id, JOB_KEY, started, now_iso(), dumps({"message": message, "removed": removed})))
    if removed:
        log.warning("%s: %s", message, ", ".join(f"{r['uuid']} ({r['name']})" for r in removed))
    else:
        log.info("%s", message)
    return _job_dto(tx.one("SELECT * FROM server_jobs WHERE id = ?", (job_id,)))


def _reported(tx: Tx, row: Any) -> bool:
    org = row["reported_owner"] or row["owner"]
    return tx.one("SELECT 1 FROM guests g JOIN consumers h ON h.uuid = g.hypervisor WHERE h.owner = ? "
                  "AND g.guest_key = ? AND g.instance_key = ? LIMIT 1",
                  (org, row["guest_key"], row["instance_uuid"])) is not None


def _job_dto(row: Any) -> dict[str, Any]:
    result = loads(row["result"], {})
    return {"id": row["id"], "key": row["key"], "started": row["started"], "finished": row["finished"],
            "message": result.get("message"), "removed": result.get("removed", [])}


def job_list(tx: Tx, limit: int = 50) -> list[dict[str, Any]]:
    """The server's latest job runs, newest first."""
    return [_job_dto(r) for r in tx.all("SELECT * FROM server_jobs ORDER BY started DESC, rowid DESC LIMIT ?",
                                        (limit,))]
