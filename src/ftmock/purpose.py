"""System purpose: the values an org's subscriptions offer, and the checks on what a consumer sets.

A consumer's purpose is its service level, service type, role, usage and add-ons. As in Candlepin,
what an org offers comes from the products of its active pools (the pool's own attributes over its
product's): ``support_level`` (service levels), ``support_type``, ``roles``, ``usage`` and ``addons``
(comma-separated lists). A service level a consumer sets must be one the org offers (compared
without case), or empty to unset it; the other values are free text, as Candlepin stores them.
Levels whose product says ``support_level_exempt=true`` are listed only when asked with ``exempt``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from . import dto
from .errors import BadRequest
from .store import Tx, loads

__all__ = ["check_service_level", "service_levels", "system_purpose_attributes"]

# SystemPurposeAttributesDTO's keys, each with the product attribute it comes from.
_ATTRIBUTES = {"roles": "roles", "usage": "usage", "addons": "addons", "support_level": "support_level",
               "support_type": "support_type"}


def _active_attributes(tx: Tx, owner: str) -> list[dict[str, str]]:
    """The merged attributes (pool over product) of every active pool of the org."""
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    rows = tx.all(
        "SELECT p.attributes AS pool_attrs, pr.attributes AS product_attrs FROM pools p "
        "LEFT JOIN products pr ON pr.owner = p.owner AND pr.id = p.product_id "
        "WHERE p.owner = ? AND p.start_date <= ? AND p.end_date > ?", (owner, now, now))
    return [{**loads(r["product_attrs"], {}), **loads(r["pool_attrs"], {})} for r in rows]


def service_levels(tx: Tx, owner: str, exempt: bool = False) -> list[str]:
    """The org's service levels (``support_level`` of its active pools), once each whatever the case."""
    seen: dict[str, str] = {}
    for attrs in _active_attributes(tx, owner):
        level = attrs.get("support_level", "").strip()
        is_exempt = attrs.get("support_level_exempt", "").lower() == "true"
        if level and is_exempt == exempt:
            seen.setdefault(level.lower(), level)
    return sorted(seen.values(), key=str.lower)


def check_service_level(tx: Tx, owner: str | None, level: str) -> str:
    """``level`` if the org offers it (or it is empty: unset); else BadRequest naming it."""
    if not level or owner is None:
        return level
    offered = service_levels(tx, owner) + service_levels(tx, owner, exempt=True)
    if level.lower() not in {o.lower() for o in offered}:
        raise BadRequest(f"Service level '{level}' is not available to units of organization {owner}.")
    return level


def system_purpose_attributes(tx: Tx, owner: str) -> dict[str, Any]:
    """SystemPurposeAttributesDTO: every purpose value the org's active subscriptions offer."""
    found: dict[str, dict[str, str]] = {key: {} for key in _ATTRIBUTES}
    for attrs in _active_attributes(tx, owner):
        for key, attr in _ATTRIBUTES.items():
            for value in attrs.get(attr, "").split(","):
                if value.strip():
                    found[key].setdefault(value.strip().lower(), value.strip())  # once each, whatever the case
    return {"owner": dto.owner_by_key(tx, owner),
            "systemPurposeAttributes": {k: sorted(v.values(), key=str.lower) for k, v in found.items()}}
