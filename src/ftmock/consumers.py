"""Consumers: registration, identity certificates, facts, check-in and deletion."""

from __future__ import annotations

import logging
import sqlite3
import uuid as uuidlib
from typing import Any

from . import contentaccess, overrides, shares, subscriptions
from . import dto as dto_
from .auth import Principal
from .ca import CertificateAuthority, IssuedCert
from .errors import BadRequest, Conflict, Forbidden, Gone, NotFound, Unauthorized
from .guestids import guest_key
from .store import Tx, dumps, loads, now_iso
from .validate import facts_map, opt_str, req_dict

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
        "autoheal": True,
        "serviceLevel": "",
        "serviceType": "",
        "role": "",
        "usage": "",
        "addOns": [],
        "releaseVer": {"releaseVer": None},
        "hypervisorId": hypervisor_id,
        "environments": [],
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


def guest_id_dtos(tx: Tx, hypervisor: str) -> list[dict[str, Any]]:
    """GuestIdDTOs: the guests this consumer (a hypervisor, or a host that reported them) runs."""
    rows = tx.all("SELECT guest_id, attributes, updated FROM guests WHERE hypervisor = ? ORDER BY guest_id",
                  (hypervisor,))
    return [{"guestId": r["guest_id"], "attributes": loads(r["attributes"], {}), "updated": r["updated"]}
            for r in rows]


def _set_guest_ids(tx: Tx, row: sqlite3.Row, value: Any) -> None:
    """PUT /consumers/{uuid} with guestIds: the guests this host runs now (replacing the list)."""
    if not isinstance(value, list):
        raise BadRequest("guestIds must be a list")
    now = now_iso()
    tx.execute("DELETE FROM guests WHERE hypervisor = ?", (row["uuid"],))
    # The rows no longer come from the last report: its next one is compared row by row.
    tx.execute("UPDATE consumers SET guests_digest = NULL WHERE uuid = ?", (row["uuid"],))
    for item in value:
        gid = item.get("guestId") if isinstance(item, dict) else item
        if not isinstance(gid, str) or not gid.strip() or len(gid) > 255:
            raise BadRequest("guestIds entries need a non-empty guestId")
        attrs = item.get("attributes") if isinstance(item, dict) else None
        tx.execute("INSERT OR REPLACE INTO guests(hypervisor, guest_key, instance_key, guest_id, state, attributes, "
                   "updated) VALUES(?,?,?,?,?,?,?)",
                   (row["uuid"], guest_key(gid), "", gid, None, dumps(attrs if isinstance(attrs, dict) else {}), now))


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
    issued = ca.identity(row["uuid"], owner if owner is not None else row["owner"], serial, public_key)
    tx.execute(
        "UPDATE consumers SET cert_pem=?, cert_serial=?, cert_expiration=?, public_key_pem=?, key_pem=?, "
        "updated=? WHERE uuid=?",
        (issued.cert_pem, serial, issued.not_after.isoformat(), issued.public_key_pem,
         issued.key_pem, now_iso(), row["uuid"]),
    )
    return issued


def _activation_keys(tx: Tx, owner: str, names: list[str]) -> list[sqlite3.Row]:
    rows = []
    for name in names:
        row = tx.one("SELECT * FROM activation_keys WHERE owner = ? AND name = ?", (owner, name))
        if row is None:
            raise BadRequest(f"Activation key '{name}' not found for organization '{owner}'.")
        rows.append(row)
    return rows


def register(tx: Tx, ca: CertificateAuthority, principal: Principal, owner: str | None,
             activation_keys: list[str], body: Any, honour_csr: bool = True) -> dict[str, Any]:
    body = req_dict(body, "consumer")
    if not owner:
        raise BadRequest("Parameter 'owner' is required to register")
    key_rows: list[sqlite3.Row] = []
    if activation_keys:
        require_owner(tx, owner)
        key_rows = _activation_keys(tx, owner, activation_keys)
    elif principal.is_user:
        if not principal.owns(owner):
            raise Forbidden(f"User {principal.name} cannot register systems in {owner}")
        require_owner(tx, owner)
    else:
        raise Unauthorized("Registration requires a username and password or activation keys")

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


def update(tx: Tx, row: sqlite3.Row, body: Any, checkin: bool = True) -> None:
    """PUT /consumers/{uuid}: facts, installed products, guest ids, name; also a check-in if `checkin`."""
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
        _set_guest_ids(tx, row, body["guestIds"])
    if body.get("name") is not None:
        name = opt_str(body, "name")
        if not name or not name.strip():
            raise BadRequest("System name cannot be empty.")
        sets["name"] = name
    cols = ", ".join(f"{k}=?" for k in sets)
    tx.execute(f"UPDATE consumers SET {cols} WHERE uuid=?", (*sets.values(), row["uuid"]))  # noqa: S608


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
