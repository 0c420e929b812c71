"""Package profiles: what a consumer says it has installed, kept as it sent it.

Candlepin 5 no longer stores package profiles (its ``PUT /consumers/{uuid}/packages`` answers 501);
Satellite does, and clients send them: ``PUT /consumers/{uuid}/packages`` with the RPM profile (a
list of packages, each ``name``, ``version``, ``release``, ``arch``, ``epoch``, ``vendor``), and
``PUT /consumers/{uuid}/profiles`` with several profiles at once
(``[{"profile_type": "rpm", "profile": [...]}, {"profile_type": "enabled_repos", ...}]``). ftmock
stores each profile by type, as sent, and answers ``GET`` on the same paths with what was stored.
"""

from __future__ import annotations

from typing import Any

from .errors import BadRequest
from .store import Tx, dumps, loads, now_iso

__all__ = ["RPM", "forget", "get", "get_all", "put", "put_combined"]

RPM = "rpm"
MAX_PACKAGES = 100_000
_PACKAGE_TEXT = ("name", "version", "release", "arch", "vendor")


def _rpm_profile(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise BadRequest("The rpm profile must be a list of packages")
    if len(value) > MAX_PACKAGES:
        raise BadRequest(f"The rpm profile lists more than {MAX_PACKAGES} packages")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise BadRequest(f"package {i} of the rpm profile needs a name")
        for key in _PACKAGE_TEXT:
            if item.get(key) is not None and not isinstance(item[key], str):
                raise BadRequest(f"package {item['name']}: {key} must be a string")
        epoch = item.get("epoch")
        if epoch is not None and not isinstance(epoch, (int, str)):
            raise BadRequest(f"package {item['name']}: epoch must be a number or a string")
        out.append(item)
    return out


def _store(tx: Tx, consumer_uuid: str, profile_type: str, profile: Any) -> None:
    tx.execute("INSERT OR REPLACE INTO consumer_profiles(consumer, profile_type, profile, updated) VALUES(?,?,?,?)",
               (consumer_uuid, profile_type, dumps(profile), now_iso()))


def put(tx: Tx, consumer_uuid: str, body: Any) -> None:
    """PUT /consumers/{uuid}/packages: the RPM profile."""
    _store(tx, consumer_uuid, RPM, _rpm_profile(body))


def put_combined(tx: Tx, consumer_uuid: str, body: Any) -> None:
    """PUT /consumers/{uuid}/profiles: several profiles, each replacing the stored one of its type."""
    if not isinstance(body, list):
        raise BadRequest('profiles must be a list of {"profile_type": TYPE, "profile": ...}')
    checked = []
    for item in body:
        if not isinstance(item, dict) or not isinstance(item.get("profile_type"), str) \
                or not item["profile_type"] or len(item["profile_type"]) > 64 or "profile" not in item:
            raise BadRequest('profiles must be a list of {"profile_type": TYPE, "profile": ...}')
        ptype = item["profile_type"]
        checked.append((ptype, _rpm_profile(item["profile"]) if ptype == RPM else item["profile"]))
    for ptype, profile in checked:
        _store(tx, consumer_uuid, ptype, profile)


def get(tx: Tx, consumer_uuid: str, profile_type: str = RPM) -> Any:
    """The stored profile of a type ([] when none was sent)."""
    row = tx.one("SELECT profile FROM consumer_profiles WHERE consumer = ? AND profile_type = ?",
                 (consumer_uuid, profile_type))
    return loads(row["profile"], []) if row else []


def get_all(tx: Tx, consumer_uuid: str) -> list[dict[str, Any]]:
    """Every stored profile, as the combined call sends them."""
    rows = tx.all("SELECT profile_type, profile FROM consumer_profiles WHERE consumer = ? ORDER BY profile_type",
                  (consumer_uuid,))
    return [{"profile_type": r["profile_type"], "profile": loads(r["profile"])} for r in rows]


def forget(tx: Tx, consumer_uuid: str) -> None:
    """A deleted consumer's profiles go with it."""
    tx.execute("DELETE FROM consumer_profiles WHERE consumer = ?", (consumer_uuid,))
