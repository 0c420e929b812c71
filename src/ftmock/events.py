"""The organization's event list: who replaced which system's identity, and when.

Candlepin records what happens to an org's consumers as events; ftmock records the ones an
administrator must be able to audit after the fact: an identity certificate replaced by a
registration (forced, or of a system that had stopped checking in) or by a user's regeneration,
and an FT VM's live identity unregistered by a user.
Each event is also logged at warning level. Events are read by the org's administrators
(``GET /owners/{owner}/events``, ``ftmock event list``).
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from .store import Tx, now_iso

__all__ = ["IDENTITY_DELETED", "IDENTITY_REPLACED", "list_for_owner", "record"]

log = logging.getLogger(__name__)

#: A consumer's identity certificate was replaced for someone other than the system holding it.
IDENTITY_REPLACED = "IDENTITY_REPLACED"
#: A user unregistered an FT VM's consumer whose identity was live.
IDENTITY_DELETED = "IDENTITY_DELETED"


def record(tx: Tx, owner: str, kind: str, consumer: sqlite3.Row, principal: tuple[str, str], message: str) -> None:
    """Store one event about ``consumer`` in ``owner``'s list; ``principal`` is (type, name)."""
    when = now_iso()
    tx.execute(
        "INSERT INTO events(owner, type, target, target_name, consumer, principal_type, principal_name, message, "
        "timestamp) VALUES(?,?,?,?,?,?,?,?,?)",
        (owner, kind, "CONSUMER", consumer["name"], consumer["uuid"], principal[0], principal[1], message, when),
    )
    log.warning("event %s in %s by %s %s: %s", kind, owner, principal[0], principal[1], message)


def _event_dto(row: sqlite3.Row) -> dict[str, Any]:
    """An EventDTO-like shape: Candlepin's field names where it has the field."""
    return {
        "id": str(row["id"]),
        "type": row["type"],
        "target": row["target"],
        "targetName": row["target_name"],
        "consumerUuid": row["consumer"],
        "entityId": row["consumer"],
        "ownerKey": row["owner"],
        "principal": {"type": row["principal_type"], "name": row["principal_name"]},
        "timestamp": row["timestamp"],
        "messageText": row["message"],
    }


def list_for_owner(tx: Tx, owner: str) -> list[dict[str, Any]]:
    """The org's events, oldest first."""
    return [_event_dto(r) for r in tx.all("SELECT * FROM events WHERE owner = ? ORDER BY id", (owner,))]
