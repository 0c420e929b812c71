"""Organizations: creation, updates and their content access mode.

An org's ``contentAccessMode`` is ``org_environment`` (Simple Content Access: every system gets one
content access certificate for all of the org's content, and auto-attach binds nothing) or
``entitlement`` (content comes from the entitlement certificates of attached pools). The mode must
be one of the org's ``contentAccessModeList`` (comma-separated, as Candlepin stores it). Leaving
SCA revokes the org's content access certificates at once; entering it issues them as each system
next asks for its certificates.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from . import contentaccess, dto, subscriptions
from .consumers import require_owner
from .errors import BadRequest
from .store import Tx, loads, now_iso

__all__ = ["create_owner", "owner_info", "parse_mode", "update_owner"]

log = logging.getLogger(__name__)

_OWNER_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ALL_MODES = ",".join(dto.CONTENT_ACCESS_MODES)


def parse_mode(value: Any, what: str = "contentAccessMode") -> str:
    """A content access mode name, or BadRequest naming the accepted ones."""
    if not isinstance(value, str) or value not in dto.CONTENT_ACCESS_MODES:
        raise BadRequest(f"{what} must be one of {', '.join(dto.CONTENT_ACCESS_MODES)}, not {value!r}")
    return value


def _parse_list(value: Any) -> str:
    """contentAccessModeList: a comma-separated string (Candlepin's OwnerDTO) or a list of modes."""
    items = value if isinstance(value, list) else str(value).split(",") if isinstance(value, str) else None
    if not items:
        raise BadRequest(f"contentAccessModeList must name modes from {ALL_MODES}")
    modes = [parse_mode(str(m).strip(), "contentAccessModeList entry") for m in items]
    return ",".join(dict.fromkeys(modes))


def create_owner(tx: Tx, key: Any, display_name: Any = None, mode: Any = None, mode_list: Any = None) -> dict[str, Any]:
    """Create an org; its mode defaults to SCA, its mode list to both modes."""
    if not isinstance(key, str) or not _OWNER_KEY.match(key):
        raise BadRequest("Organization key must be 1-64 letters, digits, '.', '_' or '-'")
    if display_name is not None and not isinstance(display_name, str):
        raise BadRequest("displayName must be a string")
    if tx.one("SELECT 1 FROM owners WHERE key = ?", (key,)):
        raise BadRequest(f"Organization '{key}' already exists")
    modes = _parse_list(mode_list) if mode_list is not None else ALL_MODES
    chosen = parse_mode(mode) if mode is not None else dto.DEFAULT_CONTENT_ACCESS_MODE
    if chosen not in modes.split(","):
        raise BadRequest(f"contentAccessMode {chosen} is not in the org's contentAccessModeList {modes}")
    now = now_iso()
    tx.execute("INSERT INTO owners(key, display_name, created, updated, content_access_mode, content_access_mode_list) "
               "VALUES(?,?,?,?,?,?)", (key, display_name or key, now, now, chosen, modes))
    return dto.owner_dto(require_owner(tx, key))


def update_owner(tx: Tx, key: str, body: Any) -> dict[str, Any]:
    """PUT /owners/{key}: displayName, contentAccessMode, contentAccessModeList (others ignored)."""
    if not isinstance(body, dict):
        raise BadRequest("owner must be a JSON object")
    row = require_owner(tx, key)
    name = body.get("displayName", row["display_name"])
    if not isinstance(name, str) or not name:
        raise BadRequest("displayName must be a non-empty string")
    modes = _parse_list(body["contentAccessModeList"]) if body.get("contentAccessModeList") is not None \
        else row["content_access_mode_list"]
    mode = body.get("contentAccessMode")
    if mode is None:
        # As Candlepin: a list that drops the current mode moves the org to the default, else the first.
        mode = row["content_access_mode"]
        if mode not in modes.split(","):
            mode = dto.DEFAULT_CONTENT_ACCESS_MODE if dto.DEFAULT_CONTENT_ACCESS_MODE in modes.split(",") \
                else modes.split(",")[0]
    mode = parse_mode(mode)
    if mode not in modes.split(","):
        raise BadRequest(f"contentAccessMode {mode} is not in the org's contentAccessModeList {modes}")
    tx.execute("UPDATE owners SET display_name=?, content_access_mode=?, content_access_mode_list=?, updated=? "
               "WHERE key=?", (name, mode, modes, now_iso(), key))
    if mode != row["content_access_mode"]:
        revoked = contentaccess.revoke_org(tx, key) if mode != dto.SCA_MODE else 0
        log.info("org %s: content access mode %s -> %s (%d content access certificates revoked)",
                 key, row["content_access_mode"], mode, revoked)
    return dto.owner_dto(require_owner(tx, key))


def owner_info(tx: Tx, key: str) -> dict[str, Any]:
    """OwnerInfo: how many consumers of each type, guests and physical systems, entitlements consumed
    by consumer type, and consumers by compliance status."""
    require_owner(tx, key)
    counts: dict[str, int] = {}
    guests = {"guest": 0, "physical": 0}
    by_status: dict[str, int] = {}
    for row in tx.all("SELECT * FROM consumers WHERE owner = ?", (key,)):
        counts[row["type"]] = counts.get(row["type"], 0) + 1
        if row["type"] == "system":
            guest = str(loads(row["facts"], {}).get("virt.is_guest", "")).lower() == "true"
            guests["guest" if guest else "physical"] += 1
        status = subscriptions.compliance(tx, row)["status"]
        by_status[status] = by_status.get(status, 0) + 1
    consumed = {r["type"]: int(r["n"]) for r in tx.all(
        "SELECT c.type AS type, SUM(e.quantity) AS n FROM entitlements e JOIN consumers c ON c.uuid = e.consumer "
        "WHERE c.owner = ? GROUP BY c.type", (key,))}
    return {"consumerCounts": counts, "consumerGuestCounts": guests, "entitlementsConsumedByType": consumed,
            "consumerTypeCountByPool": {}, "enabledConsumerTypeCountByPool": {},
            "consumerCountsByComplianceStatus": by_status, "entitlementsConsumedByFamily": {}}
