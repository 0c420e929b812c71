"""Content overrides: per-consumer settings that clients apply to a content set's repository.

Candlepin's calls: ``GET /consumers/{uuid}/content_overrides`` lists them, ``PUT`` adds or replaces
``[{contentLabel, name, value}]`` and ``DELETE`` removes ``[{contentLabel[, name]}]`` (every override
of a label without ``name``; all of them with an empty body); each answers the consumer's list.
Names are stored lower-case; ``name`` and ``label`` cannot be overridden (the client writes them
itself). An FT successor inherits the overrides of the consumer it succeeds: it is the same VM.
"""

from __future__ import annotations

from typing import Any

from .errors import BadRequest
from .store import Tx, now_iso

__all__ = ["delete", "forget", "inherit", "list_for", "put"]

BLOCKED = ("name", "label")
MAX_LABEL = 255
MAX_NAME = 255
MAX_VALUE = 2048


def list_for(tx: Tx, consumer_uuid: str) -> list[dict[str, Any]]:
    """The consumer's overrides as ContentOverrideDTOs, by label then name."""
    rows = tx.all("SELECT * FROM content_overrides WHERE consumer = ? ORDER BY label, name", (consumer_uuid,))
    return [{"contentLabel": r["label"], "name": r["name"], "value": r["value"], "created": r["created"],
             "updated": r["updated"]} for r in rows]


def _entries(body: Any, need_value: bool) -> list[tuple[str, str | None, str | None]]:
    if body is None:
        return []
    if not isinstance(body, list):
        raise BadRequest("content overrides must be a JSON list")
    out: list[tuple[str, str | None, str | None]] = []
    for item in body:
        if not isinstance(item, dict):
            raise BadRequest("each content override must be an object with contentLabel, name and value")
        label, name, value = item.get("contentLabel"), item.get("name"), item.get("value")
        if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL:
            raise BadRequest(f"contentLabel must be a non-empty string of at most {MAX_LABEL} characters")
        if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME):
            raise BadRequest(f"name must be a non-empty string of at most {MAX_NAME} characters")
        if need_value:
            if name is None:
                raise BadRequest(f"the override of {label} names no property")
            if not isinstance(value, str) or len(value) > MAX_VALUE:
                raise BadRequest(f"value must be a string of at most {MAX_VALUE} characters")
            if name.strip().lower() in BLOCKED:
                raise BadRequest(f"Not allowed to override values for: {name.strip().lower()}")
        out.append((label, name.strip().lower() if isinstance(name, str) else None,
                    value if isinstance(value, str) else None))
    return out


def put(tx: Tx, consumer_uuid: str, body: Any) -> list[dict[str, Any]]:
    """Add or replace overrides; the whole list is checked before anything is stored."""
    now = now_iso()
    for label, name, value in _entries(body, need_value=True):
        tx.execute("INSERT INTO content_overrides(consumer, label, name, value, created, updated) VALUES(?,?,?,?,?,?) "
                   "ON CONFLICT(consumer, label, name) DO UPDATE SET value=excluded.value, updated=excluded.updated",
                   (consumer_uuid, label, name, value, now, now))
    return list_for(tx, consumer_uuid)


def delete(tx: Tx, consumer_uuid: str, body: Any) -> list[dict[str, Any]]:
    """Remove the named overrides (a label's all without a name; every one for an empty body)."""
    entries = _entries(body, need_value=False)
    if not entries:
        tx.execute("DELETE FROM content_overrides WHERE consumer = ?", (consumer_uuid,))
    for label, name, _value in entries:
        if name is None:
            tx.execute("DELETE FROM content_overrides WHERE consumer = ? AND label = ?", (consumer_uuid, label))
        else:
            tx.execute("DELETE FROM content_overrides WHERE consumer = ? AND label = ? AND name = ?",
                       (consumer_uuid, label, name))
    return list_for(tx, consumer_uuid)


def inherit(tx: Tx, predecessor: str, successor: str) -> None:
    """The successor takes the predecessor's overrides (its own, if any, give way)."""
    now = now_iso()
    tx.execute("INSERT OR REPLACE INTO content_overrides(consumer, label, name, value, created, updated) "
               "SELECT ?, label, name, value, created, ? FROM content_overrides WHERE consumer = ?",
               (successor, now, predecessor))


def forget(tx: Tx, consumer_uuid: str) -> None:
    """A deleted consumer's overrides go with it."""
    tx.execute("DELETE FROM content_overrides WHERE consumer = ?", (consumer_uuid,))
