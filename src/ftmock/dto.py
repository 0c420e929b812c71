"""Candlepin's DTO shapes for what ftmock answers: owners, jobs, and the org's content access modes.

Every field of a Candlepin DTO is in ftmock's answer, ``null`` where it has no value, as Candlepin's
Jackson serialisation writes it: the API layer completes each answer from :mod:`ftmock.dtoschema`.
The builders here fill what ftmock knows.
"""

from __future__ import annotations

import sqlite3
import uuid as uuidlib
from typing import Any

from .store import Tx

__all__ = [
    "CONTENT_ACCESS_MODES",
    "DEFAULT_CONTENT_ACCESS_MODE",
    "ENTITLEMENT_MODE",
    "HYPERVISOR_JOB_KEY",
    "SCA_MODE",
    "job",
    "nested_owner",
    "owner_dto",
    "owner_id",
]

# Candlepin's two content access modes: content by entitlement certificates of attached pools, or
# Simple Content Access ("org_environment"): one content access certificate per system for all of
# the org's content. New orgs are SCA, as Candlepin's have been since Red Hat moved every account.
ENTITLEMENT_MODE = "entitlement"
SCA_MODE = "org_environment"
CONTENT_ACCESS_MODES = (ENTITLEMENT_MODE, SCA_MODE)
DEFAULT_CONTENT_ACCESS_MODE = SCA_MODE
HYPERVISOR_JOB_KEY = "HypervisorUpdateJob"
HEARTBEAT_JOB_KEY = "HypervisorHeartbeatUpdateJob"
_FINAL_STATES = ("FINISHED", "FAILED", "CANCELED", "ABORTED")


def owner_id(key: str) -> str:
    """A stable 32-hex-digit id for an org, the form of Candlepin's database ids."""
    return uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"ftmock:owner:{key}").hex


def nested_owner(key: str, display_name: str | None = None, mode: str = ENTITLEMENT_MODE) -> dict[str, Any]:
    """NestedOwnerDTO: how consumers, pools and keys name their org (with its content access mode)."""
    return {"id": owner_id(key), "key": key, "displayName": display_name or key, "href": f"/owners/{key}",
            "contentAccessMode": mode}


def owner_dto(row: sqlite3.Row) -> dict[str, Any]:
    """OwnerDTO."""
    return {
        "id": owner_id(row["key"]),
        "key": row["key"],
        "displayName": row["display_name"],
        "created": row["created"],
        "updated": row["updated"] or row["created"],
        "contentAccessMode": row["content_access_mode"],
        "contentAccessModeList": row["content_access_mode_list"],
        "autobindDisabled": False,
        "autobindHypervisorDisabled": False,
        "anonymous": False,
        "claimed": False,
    }


def owner_by_key(tx: Tx, key: str) -> dict[str, Any]:
    row = tx.one("SELECT * FROM owners WHERE key = ?", (key,))
    if row is None:
        return nested_owner(key)
    return nested_owner(key, row["display_name"], row["content_access_mode"])


def content_access_mode(tx: Tx, key: str | None) -> str | None:
    """The content access mode of an org (None for no org, or an unknown one)."""
    if not key:
        return None
    row = tx.one("SELECT content_access_mode FROM owners WHERE key = ?", (key,))
    return str(row["content_access_mode"]) if row else None


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
