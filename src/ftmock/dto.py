"""Candlepin's DTO shapes for what ftmock answers: owners, jobs, and the rules every answer follows.

Candlepin serialises its DTOs leaving out null fields (Jackson's NON_NULL inclusion); its API
description types no field as nullable. ftmock's Candlepin-compatible answers go through
:func:`without_nulls` for the same reason. The fault-tolerance and lease additions keep their nulls
(their contract is docs/design.md's, where ``holder: null`` means something).
"""

from __future__ import annotations

import sqlite3
import uuid as uuidlib
from typing import Any

from .store import Tx

__all__ = [
    "CONTENT_ACCESS_MODE",
    "HYPERVISOR_JOB_KEY",
    "job",
    "nested_owner",
    "owner_dto",
    "owner_id",
    "without_nulls",
]

# ftmock grants content by entitlement certificates only (no simple content access).
CONTENT_ACCESS_MODE = "entitlement"
HYPERVISOR_JOB_KEY = "HypervisorUpdateJob"
HEARTBEAT_JOB_KEY = "HypervisorHeartbeatUpdateJob"
_FINAL_STATES = ("FINISHED", "FAILED", "CANCELED", "ABORTED")


def without_nulls(value: Any) -> Any:
    """The value with every null-valued object member removed, at every depth."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def owner_id(key: str) -> str:
    """A stable 32-hex-digit id for an org, the form of Candlepin's database ids."""
    return uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"ftmock:owner:{key}").hex


def nested_owner(key: str, display_name: str | None = None) -> dict[str, Any]:
    """NestedOwnerDTO: how consumers, pools and keys name their org."""
    return {"id": owner_id(key), "key": key, "displayName": display_name or key, "href": f"/owners/{key}",
            "contentAccessMode": CONTENT_ACCESS_MODE}


def owner_dto(row: sqlite3.Row) -> dict[str, Any]:
    """OwnerDTO."""
    return {
        "id": owner_id(row["key"]),
        "key": row["key"],
        "displayName": row["display_name"],
        "created": row["created"],
        "updated": row["created"],
        "contentAccessMode": CONTENT_ACCESS_MODE,
        "contentAccessModeList": CONTENT_ACCESS_MODE,
        "autobindDisabled": False,
        "autobindHypervisorDisabled": False,
        "anonymous": False,
        "claimed": False,
    }


def owner_by_key(tx: Tx, key: str) -> dict[str, Any]:
    row = tx.one("SELECT * FROM owners WHERE key = ?", (key,))
    return nested_owner(key, row["display_name"] if row else None)


def job(tx: Tx, dto: dict[str, Any]) -> dict[str, Any]:
    """AsyncJobStatusDTO: a job answer completed with Candlepin's key, principal and run times."""
    out = dict(dto)
    heartbeat = str(out.get("id", "")).startswith("hypervisor_heartbeat_")
    out["key"] = HEARTBEAT_JOB_KEY if heartbeat else HYPERVISOR_JOB_KEY
    out["group"] = "hypervisors"
    row = tx.one("SELECT principal FROM job_principals WHERE job_id = ?", (out.get("id"),))
    if row is not None:
        out["principal"] = row["principal"]
    state = out.get("state")
    if state not in ("CREATED", "QUEUED"):
        out["startTime"] = out.get("created")
    if state in _FINAL_STATES:
        out["endTime"] = out.get("updated")
    return out


def record_principal(tx: Tx, job_id: str, principal: str) -> None:
    tx.execute("INSERT OR REPLACE INTO job_principals(job_id, principal) VALUES(?,?)", (job_id, principal))
