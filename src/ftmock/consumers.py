"""Consumers: registration, identity certificates, facts, check-in and deletion."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import uuid as uuidlib
from typing import Any

from . import contentaccess, environments, overrides, profiles, purpose, releases, shares, subscriptions, takeover
from . import dto as dto_
from .auth import Principal
from .ca import CertificateAuthority, IssuedCert
from .errors import BadRequest, Conflict, Forbidden, Gone, NotFound, Unauthorized
from .guestids import guest_key
from .store import Tx, dumps, loads, now_iso
from .validate import facts_map, opt_str, req_dict, str_list

__all__ = [
    "FT_FACTS",
    "consumer_dto",
    "delete",
    "get_row",
    "issue_identity",
    "list_for_owner",
    "regenerate",
    "register",
    "require_owner",
    "update",
]

log = logging.getLogger(__name__)

# Facts the server keeps from hypervisor reports; a client's copy of them is ignored.
FT_FACTS = ("instanceUUID", "ftinfo.role", "ftinfo.instanceUUIDs")
CONSUMER_TYPES = ("system", "hypervisor")


def require_owner(tx: Tx, key: str) -> sqlite3.Row:
    row = tx.one("SELECT * FROM owners WHERE key = ?", (key,))
    if row is None:
        raise NotFound(f"Organization with id {key} could not be found.")
    return row


def get_row(tx: Tx, consumer_uuid: str) -> sqlite3.Row:
    row = tx.one("SELECT * FROM consumers WHERE uuid = ?", (consumer_uuid,))
    if row is not None:
        return row
    if tx.one("SELECT 1 FROM deleted_consumers WHERE uuid = ?", (consumer_uuid,)):
        raise Gone(f"Unit {consumer_uuid} has been deleted", deletedId=consumer_uuid)
    raise NotFound(f"Unit with ID '{consumer_uuid}' could not be found.")


def consumer_dto(tx: Tx, row: sqlite3.Row, key_pem: str | None = None) -> dict[str, Any]:
    """ConsumerDTO (plus `failedOverTo` for a failed-over FT consumer)."""
    owner = row["owner"]
    hypervisor_id = None
    if row["hypervisor_id"]:
        hypervisor_id = {"hypervisorId": row["hypervisor_id"], "reporterId": row["reporter_id"]}
    ent_count = tx.one("SELECT COALESCE(SUM(quantity), 0) AS n FROM entitlements WHERE consumer = ?", (row["uuid"],))
    envs = environments.of_consumer(tx, row)
    dto: dict[str, Any] = {
        "id": row["uuid"],
        "uuid": row["uuid"],
        "name": row["name"],
        "owner": dto_.owner_by_key(tx, owner) if owner else None,
        "type": {"label": row["type"], "manifest": False},
        "facts": loads(row["facts"], {}),
        "installedProducts": loads(row["installed_products"], []),
        "created": row["created"],
        "updated": row["updated"],
        "lastCheckin": row["last_checkin"],
        "autoheal": bool(row["autoheal"]),
        "serviceLevel": row["service_level"] or "",
        "serviceType": row["service_type"] or "",
        "role": row["role"] or "",
        "usage": row["usage"] or "",
        "addOns": loads(row["addons"], []) or [],
        "releaseVer": releases.release_dto(row),
        "hypervisorId": hypervisor_id,
        "environment": envs[0] if envs else None,
        "environments": envs,
        "activationKeys": [],
        "canActivate": False,
        "contentAccessMode": dto_.content_access_mode(tx, owner),
        "entitlementStatus": subscriptions.compliance(tx, row)["status"] if owner else "unknown",
        "entitlementCount": int(ent_count["n"]) if ent_count else 0,
        "guestIds": guest_id_dtos(tx, row["uuid"]),
        "capabilities": [],
        "contentTags": [],
        "href": f"/consumers/{row['uuid']}",
        "idCert": None,
    }
    if row["cert_pem"]:
        id_cert: dict[str, Any] = {
            "id": str(row["cert_serial"]),
            "cert": row["cert_pem"],
            "serial": {"id": row["cert_serial"], "serial": row["cert_serial"],
                       "expiration": row["cert_expiration"], "revoked": False},
        }
        if key_pem:
            id_cert["key"] = key_pem
        dto["idCert"] = id_cert
    if row["failed_over_to"]:
        dto["failedOverTo"] = row["failed_over_to"]
    return dto


def _guest_id_dto(r: sqlite3.Row) -> dict[str, Any]:
    # Candlepin keeps guest attributes as strings: a number or a boolean a report sent reads back as text.
    attrs = {k: attribute_text(v) for k, v in loads(r["attributes"], {}).items()}
    return {"guestId": r["guest_id"], "attributes": attrs, "created": r["updated"], "updated": r["updated"]}


def attribute_text(value: Any) -> Any:
    """A guest attribute as Candlepin stores it: scalars as text (lists, the FT additions', stay)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def guest_id_dtos(tx: Tx, hypervisor: str) -> list[dict[str, Any]]:
    """GuestIdDTOs: the guests this consumer (a hypervisor, or a host that reported them) runs."""
    rows = tx.all("SELECT guest_id, attributes, updated FROM guests WHERE hypervisor = ? ORDER BY guest_id",
                  (hypervisor,))
    return [_guest_id_dto(r) for r in rows]


def _guest_item(item: Any) -> tuple[str, dict[str, Any]]:
    """A GuestIdDTO (or a bare guest id) of a request: its id and attributes."""
    gid = item.get("guestId") if isinstance(item, dict) else item
    if not isinstance(gid, str) or not gid.strip() or len(gid) > 255:
        raise BadRequest("guestIds entries need a non-empty guestId")
    attrs = item.get("attributes") if isinstance(item, dict) else None
    if attrs is not None and not isinstance(attrs, dict):
        raise BadRequest(f"guest {gid}: attributes must be an object")
    return gid, {k: attribute_text(v) for k, v in (attrs or {}).items() if v is not None}


def _store_guest(tx: Tx, row: sqlite3.Row, gid: str, attrs: dict[str, Any], now: str) -> None:
    tx.execute("INSERT OR REPLACE INTO guests(hypervisor, guest_key, instance_key, guest_id, state, attributes, "
               "updated) VALUES(?,?,?,?,?,?,?)", (row["uuid"], guest_key(gid), "", gid, None, dumps(attrs), now))
    # The rows no longer come from the last report: its next one is compared row by row.
    tx.execute("UPDATE consumers SET guests_digest = NULL WHERE uuid = ?", (row["uuid"],))


def set_guest_ids(tx: Tx, row: sqlite3.Row, value: Any) -> None:
    """The guests this host runs now, replacing the list (``guestIds`` of PUT /consumers/{uuid}, or
    PUT /consumers/{uuid}/guestids)."""
    if not isinstance(value, list):
        raise BadRequest("guestIds must be a list")
    items = [_guest_item(item) for item in value]
    now = now_iso()
    tx.execute("DELETE FROM guests WHERE hypervisor = ?", (row["uuid"],))
    tx.execute("UPDATE consumers SET guests_digest = NULL WHERE uuid = ?", (row["uuid"],))
    for gid, attrs in items:
        _store_guest(tx, row, gid, attrs, now)


def _guest_row(tx: Tx, row: sqlite3.Row, gid: str) -> sqlite3.Row | None:
    return tx.one("SELECT guest_id, attributes, updated FROM guests WHERE hypervisor = ? AND guest_key = ? "
                  "ORDER BY instance_key LIMIT 1", (row["uuid"], guest_key(gid)))


def guest_id(tx: Tx, row: sqlite3.Row, gid: str) -> dict[str, Any]:
    """GET /consumers/{uuid}/guestids/{guest_id} (matched as guest ids are: case and byte order aside)."""
    found = _guest_row(tx, row, gid)
    if found is None:
        raise NotFound(f"Guest with UUID {gid} could not be found for consumer {row['uuid']}.")
    return _guest_id_dto(found)


def put_guest_id(tx: Tx, row: sqlite3.Row, gid: str, body: Any) -> None:
    """PUT /consumers/{uuid}/guestids/{guest_id}: add or update one guest of this host."""
    item = dict(body) if isinstance(body, dict) else {}
    if body not in (None, {}) and not isinstance(body, dict):
        raise BadRequest("the guest must be a GuestIdDTO object")
    if item.get("guestId") not in (None, gid):
        raise BadRequest(f"the body names guest {item.get('guestId')}, the path {gid}")
    item["guestId"] = gid
    _, attrs = _guest_item(item)
    tx.execute("DELETE FROM guests WHERE hypervisor = ? AND guest_key = ?", (row["uuid"], guest_key(gid)))
    _store_guest(tx, row, gid, attrs, now_iso())


def delete_guest_id(tx: Tx, row: sqlite3.Row, gid: str) -> None:
    """DELETE /consumers/{uuid}/guestids/{guest_id}."""
    if _guest_row(tx, row, gid) is None:
        raise NotFound(f"Guest with UUID {gid} could not be found for consumer {row['uuid']}.")
    tx.execute("DELETE FROM guests WHERE hypervisor = ? AND guest_key = ?", (row["uuid"], guest_key(gid)))
    tx.execute("UPDATE consumers SET guests_digest = NULL WHERE uuid = ?", (row["uuid"],))


def _product_list(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest("installedProducts must be a list")
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("productId"), (str, int)):
            raise BadRequest("installedProducts entries need a productId")
        entry = {"productId": str(item["productId"])}
        for key in ("productName", "version", "arch"):
            if isinstance(item.get(key), str):
                entry[key] = item[key]
        out.append(entry)
    return out


def _type_label(value: Any) -> str:
    if value is None:
        return "system"
    label = value.get("label") if isinstance(value, dict) else value
    if label not in CONSUMER_TYPES:
        raise BadRequest(f"Unknown consumer type {label!r}; expected one of {', '.join(CONSUMER_TYPES)}")
    return str(label)


def issue_identity(tx: Tx, ca: CertificateAuthority, row: sqlite3.Row, public_key: str | None,
                   owner: str | None = None) -> IssuedCert:
    """Issue a new identity certificate for a consumer and make it the current one."""
    serial = tx.next_serial("identity")
    issued = ca.identity(row["uuid"], owner if owner is not None else row["owner"], serial, public_key,
                         name=row["name"])
    tx.execute(
        "UPDATE consumers SET cert_pem=?, cert_serial=?, cert_expiration=?, public_key_pem=?, key_pem=?, "
        "renewed_from_serial=NULL, updated=? WHERE uuid=?",
        (issued.cert_pem, serial, issued.not_after.isoformat(), issued.public_key_pem,
         issued.key_pem, now_iso(), row["uuid"]),
    )
    return issued


def renew_if_due(tx: Tx, ca: CertificateAuthority, row: sqlite3.Row, renew_days: float,
                 honour_csr: bool = True) -> sqlite3.Row:
    """Candlepin's renewal on the consumer's check-in: an identity certificate that expires within
    ``renew_days`` is replaced, for the same key (the guest keeps its private key; stock Candlepin,
    ``honour_csr`` false, makes a new server key instead, sent in ``idCert.key``).

    The replaced certificate still opens the consumer's resources until the consumer first uses the new
    one (``renewed_from_serial``): an answer lost on its way must not lock the guest out.
    """
    if not row["cert_pem"] or not row["cert_expiration"] or row["failed_over_to"]:
        return row
    expires = dt.datetime.fromisoformat(row["cert_expiration"])
    if expires - dt.datetime.now(dt.timezone.utc) > dt.timedelta(days=renew_days):
        return row
    keep_key = honour_csr or row["key_pem"] is None
    old_serial = row["cert_serial"]
    issued = issue_identity(tx, ca, row, row["public_key_pem"] if keep_key else None)
    tx.execute("UPDATE consumers SET renewed_from_serial = ? WHERE uuid = ?", (old_serial, row["uuid"]))
    log.info("identity certificate of %s renewed (expired %s; serial %s -> %s)", row["uuid"],
             row["cert_expiration"], old_serial, issued.serial)
    return get_row(tx, row["uuid"])


def _activation_keys(tx: Tx, owner: str, names: list[str]) -> list[sqlite3.Row]:
    rows = []
    for name in names:
        row = tx.one("SELECT * FROM activation_keys WHERE owner = ? AND name = ?", (owner, name))
        if row is None:
            raise BadRequest(f"Activation key '{name}' not found for organization '{owner}'.")
        rows.append(row)
    return rows


def register(tx: Tx, ca: CertificateAuthority, principal: Principal, owner: str | None,
             activation_keys: list[str], body: Any, honour_csr: bool = True,
             environment_ids: list[str] | None = None, *, force: bool = False,
             identity_window: float = takeover.DEFAULT_IDENTITY_WINDOW) -> dict[str, Any]:
    """POST /consumers (or /environments/{id}/consumers, ``environment_ids`` then naming it): a new
    consumer, or the role-0 consumer of the FT group the `virt.uuid` names.

    The FT group's identity is replaced only as :mod:`ftmock.takeover` allows (``force`` is an org
    administrator's explicit ask; ``identity_window`` the server's default window in seconds).
    """
    body = req_dict(body, "consumer")
    if not owner:
        raise BadRequest("Parameter 'owner' is required to register")
    key_rows: list[sqlite3.Row] = []
    if activation_keys:
        require_owner(tx, owner)
        key_rows = _activation_keys(tx, owner, activation_keys)
        registrant = ("activation key", ",".join(activation_keys))
    elif principal.is_user:
        if not principal.owns(owner):
            raise Forbidden(f"User {principal.name} cannot register systems in {owner}")
        require_owner(tx, owner)
        registrant = ("user", principal.name)
    else:
        raise Unauthorized("Registration requires a username and password or activation keys")
    if force:
        takeover.check_force(principal, owner, activation_keys)

    name = opt_str(body, "name") or ""
    facts = facts_map(body.get("facts"))
    if not name:
        name = facts.get("network.hostname", "")
    if not name.strip():
        raise BadRequest("System name cannot be empty.")
    ctype = _type_label(body.get("type"))
    products = _product_list(body.get("installedProducts"))
    csr = body.get("csr")
    if csr is not None and not isinstance(csr, str):
        raise BadRequest("csr must be a PEM string")
    public_key = ca.public_key_from_csr(csr) if csr and honour_csr else None

    now = now_iso()
    row = _ft_primary_for_registration(tx, owner, facts)
    if row is not None:
        takeover.check_registration(tx, row, owner, registrant, force=force, default_window=identity_window,
                                    virt_uuid=facts.get("virt.uuid", ""))
        merged = loads(row["facts"], {})
        for key, value in facts.items():
            if key not in FT_FACTS:
                merged[key] = value
        tx.execute(
            "UPDATE consumers SET name=?, owner=?, facts=?, installed_products=?, updated=?, last_checkin=? "
            "WHERE uuid=?",
            (name, owner, dumps(merged), dumps(products), now, now, row["uuid"]),
        )
        # The whole FT group belongs to the org the VM registers in; its instances run the same software.
        tx.execute(
            "UPDATE consumers SET owner=?, installed_products=? WHERE guest_key=? AND reported_owner=? "
            "AND instance_uuid IS NOT NULL AND failed_over_to IS NULL",
            (owner, dumps(products), row["guest_key"], row["reported_owner"]),
        )
        consumer_uuid = row["uuid"]
        log.info("registration of FT group %s (reported by %s) in %s returns primary consumer %s",
                 row["guest_key"], row["reported_owner"], owner, consumer_uuid)
    else:
        consumer_uuid = str(uuidlib.uuid4())
        virt_uuid = facts.get("virt.uuid")
        hypervisor_id = _hypervisor_id(body.get("hypervisorId")) if ctype == "hypervisor" else None
        if hypervisor_id and tx.one("SELECT 1 FROM consumers WHERE owner = ? AND hypervisor_id = ?",
                                    (owner, hypervisor_id)):
            raise Conflict(f"A hypervisor with id {hypervisor_id} is already registered in {owner}.")
        tx.execute(
            "INSERT INTO consumers(uuid, name, owner, type, facts, installed_products, created, updated, "
            "last_checkin, guest_key, hypervisor_id) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
            (consumer_uuid, name, owner, ctype, dumps(facts), dumps(products), now, now, now,
             guest_key(virt_uuid) if virt_uuid else None, hypervisor_id),
        )
    row = get_row(tx, consumer_uuid)
    # What a registration may say besides: the release, the system purpose, the environments.
    sets: dict[str, Any] = {}
    _purpose(tx, row, body, sets)
    env_value = body.get("environments") if body.get("environments") is not None else \
        ([body["environment"]] if isinstance(body.get("environment"), dict) else None)
    env_ids = list(environment_ids or []) or environments.parse_ids(tx, owner, env_value)
    if env_ids:
        sets["environments"] = dumps(env_ids)
    if sets:
        cols = ", ".join(f"{k}=?" for k in sets)
        tx.execute(f"UPDATE consumers SET {cols} WHERE uuid=?", (*sets.values(), consumer_uuid))  # noqa: S608
        row = get_row(tx, consumer_uuid)
    issued = issue_identity(tx, ca, row, public_key, owner)
    row = get_row(tx, consumer_uuid)
    auto = False
    for akey in key_rows:
        auto = auto or bool(akey["auto_attach"])
        for pool in tx.all("SELECT pool_id, quantity FROM activation_key_pools WHERE key_id=?", (akey["id"],)):
            subscriptions.attach(tx, ca, row, pool["pool_id"], pool["quantity"])
    if auto:
        subscriptions.auto_attach(tx, ca, row)
    return consumer_dto(tx, row, issued.key_pem)


def _hypervisor_id(value: Any) -> str | None:
    """HypervisorIdDTO ({"hypervisorId": ID}) or a bare id; stored lower-case, as reports store it."""
    hid = value.get("hypervisorId") if isinstance(value, dict) else value
    if hid is None:
        return None
    if not isinstance(hid, str) or not hid.strip() or len(hid) > 255:
        raise BadRequest("hypervisorId.hypervisorId must be a non-empty string")
    return hid.strip().lower()


def _ft_primary_for_registration(tx: Tx, owner: str, facts: dict[str, str]) -> sqlite3.Row | None:
    """The live primary of the FT group this registration names, if the org may adopt it.

    A group reported by the registering org's own hypervisors comes first; a group reported by
    another org only when that org shares with the registering one. Without a share nobody can
    capture another org's VM by guessing its UUID: the registration makes a plain consumer.
    """
    virt_uuid = facts.get("virt.uuid")
    if not virt_uuid:
        return None
    rows = tx.all(
        "SELECT * FROM consumers WHERE guest_key = ? AND instance_uuid IS NOT NULL "
        "AND ft_role = 0 AND failed_over_to IS NULL ORDER BY created, rowid",
        (guest_key(virt_uuid),),
    )
    row = next((r for r in rows if r["reported_owner"] == owner), None)
    if row is None:
        row = next((r for r in rows if shares.shares_with(tx, r["reported_owner"], owner)), None)
    if row is None:
        if rows:
            log.warning("registration in %s names virt.uuid %s, an FT group reported by %s, which does not "
                        "share with %s: registered as a plain consumer", owner, virt_uuid,
                        ", ".join(sorted({str(r["reported_owner"]) for r in rows})), owner)
        return None
    if row["owner"] not in (None, owner):
        raise Conflict(
            f"The fault-tolerant group of virt.uuid {virt_uuid} is registered to another organization."
        )
    return row


def _purpose_text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > 255):
        raise BadRequest(f"{key} must be a string of at most 255 characters")
    return value.strip() if isinstance(value, str) else None


def _flag(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadRequest(f"{key} must be true or false")


def _purpose(tx: Tx, row: sqlite3.Row, body: dict[str, Any], sets: dict[str, Any]) -> None:
    """The consumer's release and system purpose, as a PUT sets them (what it leaves out stays)."""
    if "releaseVer" in body:
        sets["release_ver"] = releases.parse_release(body["releaseVer"])
    level = _purpose_text(body, "serviceLevel")
    if level is not None:
        sets["service_level"] = purpose.check_service_level(tx, row["owner"], level) or None
    for key, column in (("role", "role"), ("usage", "usage"), ("serviceType", "service_type")):
        text = _purpose_text(body, key)
        if text is not None:
            sets[column] = text or None
    if body.get("addOns") is not None:
        addons = str_list(body["addOns"], "addOns")
        if len(addons) > 100 or any(len(a) > 255 for a in addons):
            raise BadRequest("addOns must be at most 100 strings of at most 255 characters")
        sets["addons"] = dumps([a.strip() for a in addons if a.strip()]) if addons else None
    if body.get("autoheal") is not None:
        sets["autoheal"] = int(_flag(body["autoheal"], "autoheal"))


def update(tx: Tx, row: sqlite3.Row, body: Any, checkin: bool = True) -> bool:
    """PUT /consumers/{uuid}: facts, installed products, guest ids, name, release, system purpose,
    autoheal and environments; also a check-in if `checkin`. True when its environments changed (its
    certificates then grant other content)."""
    body = req_dict(body if body is not None else {}, "consumer")
    now = now_iso()
    sets: dict[str, Any] = {"updated": now}
    if checkin:
        sets["last_checkin"] = now
    if "facts" in body:
        facts = facts_map(body["facts"])
        current = loads(row["facts"], {})
        for key in FT_FACTS:
            if key in current:
                facts[key] = current[key]
        sets["facts"] = dumps(facts)
        # The lease group (guest key) stays what registration or a hypervisor report made it: a
        # client that changes its virt.uuid fact later must not join another VM's group.
    if "installedProducts" in body:
        sets["installed_products"] = dumps(_product_list(body["installedProducts"]))
    if body.get("guestIds") is not None:
        set_guest_ids(tx, row, body["guestIds"])
    if body.get("name") is not None:
        name = opt_str(body, "name")
        if not name or not name.strip():
            raise BadRequest("System name cannot be empty.")
        sets["name"] = name
    _purpose(tx, row, body, sets)
    moved = False
    if body.get("environments") is not None:
        ids = environments.parse_ids(tx, row["owner"], body["environments"])
        moved = ids != environments.ids_of(row)
        sets["environments"] = dumps(ids) if ids else None
    cols = ", ".join(f"{k}=?" for k in sets)
    tx.execute(f"UPDATE consumers SET {cols} WHERE uuid=?", (*sets.values(), row["uuid"]))  # noqa: S608
    return moved


def regenerate(tx: Tx, ca: CertificateAuthority, row: sqlite3.Row, body: Any,
               honour_csr: bool = True) -> dict[str, Any]:
    """New identity certificate: for a CSR if given, else for the same key (or a new server key).

    Without `honour_csr` the server behaves as stock Candlepin: a new key it generates, every time.
    """
    public_key: str | None = None
    if not honour_csr:
        if body is not None and not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
    elif isinstance(body, dict) and body.get("csr"):
        if not isinstance(body["csr"], str):
            raise BadRequest("csr must be a PEM string")
        public_key = ca.public_key_from_csr(body["csr"])
    elif body not in (None, {}) and not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    elif row["key_pem"] is None:
        public_key = row["public_key_pem"]
    issued = issue_identity(tx, ca, row, public_key)
    contentaccess.revoke(tx, row["uuid"])  # a new identity gets a new content access certificate
    return consumer_dto(tx, get_row(tx, row["uuid"]), issued.key_pem)


def delete(tx: Tx, row: sqlite3.Row) -> None:
    for ent in tx.all("SELECT id FROM entitlements WHERE consumer = ?", (row["uuid"],)):
        subscriptions.remove_entitlement(tx, ent["id"])
    # Pools derived from this consumer's entitlements went with them; guests it reported go too.
    tx.execute("DELETE FROM guests WHERE hypervisor = ?", (row["uuid"],))
    contentaccess.revoke(tx, row["uuid"])
    overrides.forget(tx, row["uuid"])
    profiles.forget(tx, row["uuid"])
    tx.execute("DELETE FROM consumers WHERE uuid = ?", (row["uuid"],))
    tx.execute(
        "INSERT OR REPLACE INTO deleted_consumers(uuid, owner, name, deleted) VALUES(?,?,?,?)",
        (row["uuid"], row["owner"], row["name"], now_iso()),
    )


def list_for_owner(tx: Tx, owner: str, ctype: str | None = None) -> list[dict[str, Any]]:
    require_owner(tx, owner)
    # FT instances created by a report have no org until the VM registers; the org whose
    # hypervisors reported them still sees them.
    sql = "SELECT * FROM consumers WHERE (owner = ? OR (owner IS NULL AND reported_owner = ?))"
    params: tuple[str, ...] = (owner, owner)
    if ctype:
        sql += " AND type = ?"
        params += (ctype,)
    rows = tx.all(sql + " ORDER BY created, rowid", params)
    return [consumer_dto(tx, r) for r in rows]
