"""Environments: named places within an org that content is promoted to, and that consumers live in.

As Candlepin's (and Satellite's lifecycle environments): an org may have environments, each with the
content sets promoted to it (``environmentContent``: content id and, optionally, whether it is
enabled there). A consumer may be in none or several (``environments``, in priority order). A
consumer in environments is granted only the content promoted to one of them, with the promotion's
``enabled`` where it gives one; a consumer in none is granted all of its org's content. This holds
for the content access certificate (SCA) and for entitlement certificates alike, so moving a
consumer between environments reissues its certificates.
"""

from __future__ import annotations

import re
import sqlite3
import uuid as uuidlib
from typing import Any

from . import dto
from .errors import BadRequest, NotFound
from .store import Tx, dumps, loads, now_iso
from .validate import opt_str, req_dict, req_str

__all__ = [
    "create",
    "delete",
    "environment_dto",
    "filter_content",
    "get_row",
    "ids_of",
    "list_for_owner",
    "of_consumer",
    "parse_ids",
    "promoted",
]

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def get_row(tx: Tx, env_id: str) -> sqlite3.Row:
    row = tx.one("SELECT * FROM environments WHERE id = ?", (env_id,))
    if row is None:
        raise NotFound(f"No such environment: {env_id}")
    return row


def environment_dto(tx: Tx, row: sqlite3.Row) -> dict[str, Any]:
    """EnvironmentDTO."""
    content = tx.all("SELECT content_id, enabled FROM environment_content WHERE environment = ? ORDER BY content_id",
                     (row["id"],))
    return {
        "created": row["created"],
        "updated": row["updated"],
        "id": row["id"],
        "name": row["name"],
        "type": row["type"],
        "description": row["description"],
        "contentPrefix": row["content_prefix"],
        "owner": dto.owner_by_key(tx, row["owner"]),
        "environmentContent": [{"contentId": c["content_id"],
                                "enabled": None if c["enabled"] is None else bool(c["enabled"])} for c in content],
    }


def list_for_owner(tx: Tx, owner: str, name: str | None = None) -> list[dict[str, Any]]:
    if name is not None:
        rows = tx.all("SELECT * FROM environments WHERE owner = ? AND name = ?", (owner, name))
    else:
        rows = tx.all("SELECT * FROM environments WHERE owner = ? ORDER BY name", (owner,))
    return [environment_dto(tx, r) for r in rows]


def _content_entries(value: Any) -> list[tuple[str, bool | None]]:
    """``[{"contentId": ID, "enabled": bool?}]`` (EnvironmentContentDTO or ContentToPromoteDTO)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest("environment content must be a list of {contentId, enabled}")
    out = []
    for item in value:
        if not isinstance(item, dict):
            raise BadRequest("environment content entries must be objects with a contentId")
        cid = req_str(item, "contentId", "contentId")
        enabled = item.get("enabled")
        if enabled is not None and not isinstance(enabled, bool):
            raise BadRequest("enabled must be true, false or absent")
        out.append((cid, enabled))
    return out


def create(tx: Tx, owner: str, body: Any) -> dict[str, Any]:
    """POST /owners/{owner}/environments: an environment, with content promoted to it if given."""
    body = req_dict(body, "environment")
    env_id = opt_str(body, "id", 64) or uuidlib.uuid4().hex
    if not _ID.match(env_id):
        raise BadRequest("Environment id must be 1-64 letters, digits, '.', '_' or '-'")
    name = req_str(body, "name", "environment name")
    if tx.one("SELECT 1 FROM environments WHERE id = ?", (env_id,)):
        raise BadRequest(f"An environment with id {env_id} already exists")
    if tx.one("SELECT 1 FROM environments WHERE owner = ? AND name = ?", (owner, name)):
        raise BadRequest(f"Organization {owner} already has an environment named {name}")
    now = now_iso()
    tx.execute("INSERT INTO environments(id, owner, name, type, description, content_prefix, created, updated) "
               "VALUES(?,?,?,?,?,?,?,?)",
               (env_id, owner, name, opt_str(body, "type"), opt_str(body, "description", 4096),
                opt_str(body, "contentPrefix"), now, now))
    _promote(tx, env_id, _content_entries(body.get("environmentContent")))
    return environment_dto(tx, get_row(tx, env_id))


def _promote(tx: Tx, env_id: str, entries: list[tuple[str, bool | None]]) -> None:
    for cid, enabled in entries:
        tx.execute("INSERT OR REPLACE INTO environment_content(environment, content_id, enabled) VALUES(?,?,?)",
                   (env_id, cid, None if enabled is None else int(enabled)))
    tx.execute("UPDATE environments SET updated = ? WHERE id = ?", (now_iso(), env_id))


def delete(tx: Tx, env_id: str) -> list[str]:
    """Delete an environment; its consumers leave it. The UUIDs of the consumers that were in it."""
    row = get_row(tx, env_id)
    members = []
    for consumer in tx.all("SELECT uuid, environments FROM consumers WHERE owner = ? AND environments IS NOT NULL",
                           (row["owner"],)):
        ids = loads(consumer["environments"], [])
        if env_id in ids:
            members.append(consumer["uuid"])
            tx.execute("UPDATE consumers SET environments = ? WHERE uuid = ?",
                       (dumps([i for i in ids if i != env_id]) if len(ids) > 1 else None, consumer["uuid"]))
    tx.execute("DELETE FROM environment_content WHERE environment = ?", (env_id,))
    tx.execute("DELETE FROM environments WHERE id = ?", (env_id,))
    return members


def parse_ids(tx: Tx, owner: str, value: Any) -> list[str]:
    """The environment ids a registration or update names (``[{"id": ...}]``, ids, or a comma list),
    each an environment of ``owner``; the order is the consumer's priority."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list):
        raise BadRequest("environments must be a list of {id}")
    out: list[str] = []
    for item in value:
        env_id = item.get("id") if isinstance(item, dict) else item
        if not isinstance(env_id, str) or not env_id:
            raise BadRequest("environments entries need an id")
        row = tx.one("SELECT owner FROM environments WHERE id = ?", (env_id,))
        if row is None or row["owner"] != owner:
            raise NotFound(f"Environment {env_id} could not be found in organization {owner}")
        if env_id not in out:
            out.append(env_id)
    return out


def ids_of(consumer: sqlite3.Row) -> list[str]:
    """The ids of the environments a consumer is in, by priority."""
    return list(loads(consumer["environments"], []) or [])


def of_consumer(tx: Tx, consumer: sqlite3.Row) -> list[dict[str, Any]]:
    """EnvironmentDTOs of the environments a consumer is in, by priority."""
    out = []
    for env_id in ids_of(consumer):
        row = tx.one("SELECT * FROM environments WHERE id = ?", (env_id,))
        if row is not None:
            out.append(environment_dto(tx, row))
    return out


def promoted(tx: Tx, consumer: sqlite3.Row) -> dict[str, bool | None] | None:
    """Content id -> enabled (None: the content's own) of what the consumer's environments hold,
    the first environment that names a content winning; None when it is in no environment."""
    ids = ids_of(consumer)
    if not ids:
        return None
    out: dict[str, bool | None] = {}
    for env_id in ids:
        for row in tx.all("SELECT content_id, enabled FROM environment_content WHERE environment = ?", (env_id,)):
            out.setdefault(row["content_id"], None if row["enabled"] is None else bool(row["enabled"]))
    return out


def filter_content(content: list[dict[str, Any]], allowed: dict[str, bool | None] | None) -> list[dict[str, Any]]:
    """Certificate content entries (``id``, ``enabled``) as the consumer's environments grant them."""
    if allowed is None:
        return content
    out = []
    for entry in content:
        cid = str(entry.get("id"))
        if cid in allowed:
            enabled = allowed[cid]
            out.append(entry if enabled is None else {**entry, "enabled": enabled})
    return out
