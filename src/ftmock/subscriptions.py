"""Products, pools, activation keys, entitlements and their certificates, and compliance.

Virt pools follow Candlepin's host-restricted model: when a hypervisor is entitled to a pool whose
product carries `virt_limit`, a derived, virt-only pool appears that only that hypervisor's guests
may consume (`requires_host` = the hypervisor consumer, `hypervisorId` = its reported id). Those
pools are what lets each FT instance be entitled by the hypervisor it runs on.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import uuid as uuidlib
from typing import Any

from . import dto, entcert, environments, shares
from .ca import CertificateAuthority
from .errors import BadRequest, Forbidden, NotFound
from .store import Tx, dumps, loads, now_iso
from .validate import facts_map, int_text, req_dict, req_str, str_list

__all__ = [
    "attach",
    "attachable_pools",
    "auto_attach",
    "certificate_dtos",
    "compliance",
    "create_activation_key",
    "create_pool",
    "create_product",
    "entitlement_dtos",
    "host_of",
    "parse_serials",
    "pool_dto",
    "pools_for_owner",
    "products_covered",
    "remove_entitlement",
    "revoke_share",
    "visible_to_consumer",
]

log = logging.getLogger(__name__)

# Bounds that keep every count (and a derived pool's quantity x virt_limit) inside SQLite's integers.
MAX_QUANTITY = 1_000_000


def _hex_id() -> str:
    return uuidlib.uuid4().hex


# -- products, pools, keys ------------------------------------------------------------------------

def create_product(tx: Tx, owner: str, body: Any) -> dict[str, Any]:
    body = req_dict(body, "product")
    pid = req_str(body, "id", "product id")
    name = req_str(body, "name", "product name")
    attrs_in = body.get("attributes") or {}
    if isinstance(attrs_in, list):  # Candlepin's [{"name":..., "value":...}] form
        try:
            attrs_in = {a["name"]: a["value"] for a in attrs_in}
        except (TypeError, KeyError):
            raise BadRequest("attributes must be a list of {name, value}") from None
    attrs = facts_map(attrs_in, "attributes")
    if "virt_limit" in attrs and attrs["virt_limit"] != "unlimited":
        try:
            int_text(attrs["virt_limit"], "virt_limit", 0, MAX_QUANTITY)
        except BadRequest:
            raise BadRequest("attribute virt_limit must be a non-negative integer or 'unlimited'") from None
    provided = str_list(_product_ids(body.get("providedProducts")), "providedProducts")
    content = _content_list(body.get("productContent"))
    tx.execute(
        "INSERT INTO products(owner, id, name, attributes, provided) VALUES(?,?,?,?,?) "
        "ON CONFLICT(owner, id) DO UPDATE SET name=excluded.name, attributes=excluded.attributes, "
        "provided=excluded.provided",
        (owner, pid, name, dumps(attrs), dumps(provided)),
    )
    tx.execute("INSERT OR REPLACE INTO product_content(owner, product_id, content) VALUES(?,?,?)",
               (owner, pid, dumps(content)))
    return product_dto(tx, _product(tx, owner, pid))


def _product_ids(value: Any) -> Any:
    """providedProducts as ids, from a list of ids or Candlepin's list of ProductDTOs."""
    if isinstance(value, list):
        return [v.get("id") if isinstance(v, dict) else v for v in value]
    return value


_CONTENT_FIELDS = ("id", "type", "label", "name", "vendor", "contentUrl", "gpgUrl", "arches")


def _content_list(value: Any) -> list[dict[str, Any]]:
    """Candlepin's productContent: [{"content": ContentDTO, "enabled": bool}]."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest("productContent must be a list")
    out = []
    for item in value:
        content = item.get("content") if isinstance(item, dict) else None
        if not isinstance(content, dict) or not isinstance(content.get("label"), str) or not content["label"]:
            raise BadRequest("productContent entries need a content object with a label")
        entry: dict[str, Any] = {}
        for key in _CONTENT_FIELDS:
            if content.get(key) is not None:
                if not isinstance(content[key], str):
                    raise BadRequest(f"content {key} must be a string")
                entry[key] = content[key]
        if isinstance(content.get("metadataExpire"), int):
            entry["metadataExpire"] = content["metadataExpire"]
        entry.setdefault("id", entry["label"])
        entry.setdefault("name", entry["label"])
        entry.setdefault("type", "yum")
        entry.setdefault("vendor", "ftmock")
        entry["enabled"] = bool(item.get("enabled", True))
        out.append(entry)
    return out


def product_content(tx: Tx, owner: str, pid: str) -> list[dict[str, Any]]:
    row = tx.one("SELECT content FROM product_content WHERE owner = ? AND product_id = ?", (owner, pid))
    return list(loads(row["content"], [])) if row else []


def product_dto(tx: Tx, row: sqlite3.Row, nested: bool = False) -> dict[str, Any]:
    """Candlepin's ProductDTO; provided products are ProductDTOs too (one level deep)."""
    attrs = loads(row["attributes"], {})
    provided = []
    for pid in [] if nested else loads(row["provided"], []):
        sub = tx.one("SELECT * FROM products WHERE owner = ? AND id = ?", (row["owner"], pid))
        provided.append(product_dto(tx, sub, nested=True) if sub else
                        {"id": pid, "name": pid, "attributes": [], "productContent": [], "providedProducts": []})
    return {
        "uuid": f"{row['owner']}-{row['id']}",
        "id": row["id"],
        "name": row["name"],
        "multiplier": 1,
        "attributes": [{"name": k, "value": v} for k, v in attrs.items()],
        "productContent": [
            {"content": {k: v for k, v in c.items() if k != "enabled"}, "enabled": c["enabled"]}
            for c in product_content(tx, row["owner"], row["id"])
        ],
        "providedProducts": provided,
        "branding": [],
        "dependentProductIds": [],
        "locked": False,
    }


def _product(tx: Tx, owner: str, pid: str) -> sqlite3.Row:
    row = tx.one("SELECT * FROM products WHERE owner = ? AND id = ?", (owner, pid))
    if row is None:
        raise NotFound(f"Product with ID '{pid}' could not be found in organization '{owner}'.")
    return row


def _date(value: Any, what: str, default: dt.datetime) -> str:
    if value is None:
        return default.isoformat()
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be an ISO 8601 date")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{what} must be an ISO 8601 date") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.isoformat()


def create_pool(tx: Tx, owner: str, body: Any) -> dict[str, Any]:
    body = req_dict(body, "pool")
    pid = req_str(body, "productId", "productId")
    _product(tx, owner, pid)
    quantity = body.get("quantity", 1)
    if not isinstance(quantity, int) or isinstance(quantity, bool) or not -1 <= quantity <= MAX_QUANTITY:
        raise BadRequest(f"quantity must be an integer from 0 to {MAX_QUANTITY}, or -1 for unlimited")
    now = dt.datetime.now(dt.timezone.utc)
    start = _date(body.get("startDate"), "startDate", now - dt.timedelta(days=1))
    end = _date(body.get("endDate"), "endDate", now + dt.timedelta(days=365))
    if end <= start:
        raise BadRequest("endDate must be after startDate")
    attrs = facts_map(body.get("attributes"), "attributes")
    pool_id = _hex_id()
    tx.execute(
        "INSERT INTO pools(id, owner, product_id, quantity, attributes, start_date, end_date, created) "
        "VALUES(?,?,?,?,?,?,?,?)",
        (pool_id, owner, pid, quantity, dumps(attrs), start, end, now_iso()),
    )
    return pool_dto(tx, _pool(tx, pool_id))


def create_activation_key(tx: Tx, owner: str, body: Any) -> dict[str, Any]:
    body = req_dict(body, "activation key")
    name = req_str(body, "name", "activation key name")
    if tx.one("SELECT 1 FROM activation_keys WHERE owner=? AND name=?", (owner, name)):
        raise BadRequest(f"Activation key '{name}' already exists in organization '{owner}'.")
    key_id = _hex_id()
    auto = bool(body.get("autoAttach", False))
    tx.execute("INSERT INTO activation_keys(id, owner, name, auto_attach) VALUES(?,?,?,?)",
               (key_id, owner, name, int(auto)))
    pools = body.get("pools") or []
    if not isinstance(pools, list):
        raise BadRequest("pools must be a list")
    for item in pools:
        pool_id = item.get("poolId") if isinstance(item, dict) else item
        quantity = item.get("quantity", 1) if isinstance(item, dict) else 1
        if (not isinstance(pool_id, str) or not isinstance(quantity, int) or isinstance(quantity, bool)
                or not 1 <= quantity <= MAX_QUANTITY):
            raise BadRequest(f"pools entries need a poolId and an integer quantity from 1 to {MAX_QUANTITY}")
        pool = _pool(tx, pool_id)
        if pool["owner"] != owner:
            raise BadRequest(f"Pool {pool_id} belongs to another organization")
        tx.execute("INSERT INTO activation_key_pools(key_id, pool_id, quantity) VALUES(?,?,?)",
                   (key_id, pool_id, quantity))
    row = tx.one("SELECT * FROM activation_keys WHERE id = ?", (key_id,))
    assert row is not None
    return activation_key_dto(tx, row)


def activation_key_dto(tx: Tx, row: sqlite3.Row) -> dict[str, Any]:
    """ActivationKeyDTO."""
    pools = tx.all("SELECT pool_id, quantity FROM activation_key_pools WHERE key_id = ? ORDER BY rowid", (row["id"],))
    return {"id": row["id"], "name": row["name"], "owner": dto.owner_by_key(tx, row["owner"]),
            "autoAttach": bool(row["auto_attach"]), "addOns": [], "products": [], "contentOverrides": [],
            "pools": [{"poolId": p["pool_id"], "quantity": p["quantity"]} for p in pools]}


def _pool(tx: Tx, pool_id: str) -> sqlite3.Row:
    row = tx.one("SELECT * FROM pools WHERE id = ?", (pool_id,))
    if row is None:
        raise NotFound(f"Subscription pool with ID '{pool_id}' could not be found.")
    return row


def _consumed(tx: Tx, pool_id: str) -> int:
    row = tx.one("SELECT COALESCE(SUM(quantity), 0) AS n FROM entitlements WHERE pool = ?", (pool_id,))
    return int(row["n"]) if row else 0


def _provides(tx: Tx, pool: sqlite3.Row) -> tuple[sqlite3.Row, list[str]]:
    """The pool's SKU and the products it covers: its provided products, or itself if it lists none."""
    product = _product(tx, pool["owner"], pool["product_id"])
    return product, _covered_ids(product)


def _covered_ids(product: sqlite3.Row) -> list[str]:
    provided = loads(product["provided"], [])
    return list(provided) if provided else [product["id"]]


def pool_dto(tx: Tx, pool: sqlite3.Row) -> dict[str, Any]:
    product = _product(tx, pool["owner"], pool["product_id"])
    attrs = loads(pool["attributes"], {})
    return {
        "id": pool["id"],
        "owner": dto.owner_by_key(tx, pool["owner"]),
        "productId": product["id"],
        "productName": product["name"],
        "quantity": pool["quantity"],
        "subscriptionId": pool["id"],
        "subscriptionSubKey": "derived" if pool["source_entitlement"] else "master",
        "contractNumber": pool["id"][:8],
        "orderNumber": pool["id"],
        "activeSubscription": True,
        "managed": False,
        "stacked": False,
        "calculatedAttributes": {"compliance_type": "Standard", "suggested_quantity": "1",
                                 "quantity_increment": "1"},
        "href": f"/pools/{pool['id']}",
        "consumed": _consumed(tx, pool["id"]),
        "exported": 0,
        "type": "ENTITLEMENT_DERIVED" if pool["source_entitlement"] else "NORMAL",
        "attributes": [{"name": k, "value": v} for k, v in sorted(attrs.items())],
        "productAttributes": [{"name": k, "value": v}
                              for k, v in sorted(loads(product["attributes"], {}).items())],
        "providedProducts": _provided_dtos(tx, pool["owner"], product),
        "sourceEntitlement": ({"id": pool["source_entitlement"], "href": f"/entitlements/{pool['source_entitlement']}"}
                              if pool["source_entitlement"] else None),
        "requiresHost": pool["requires_host"],
        "hypervisorId": pool["hypervisor_id"],
        "startDate": pool["start_date"],
        "endDate": pool["end_date"],
    }


def _provided_dtos(tx: Tx, owner: str, product: sqlite3.Row) -> list[dict[str, Any]]:
    """ProvidedProductDTOs: the SKU's provided products (never the SKU itself), with their names."""
    out = []
    for pid in loads(product["provided"], []):
        row = tx.one("SELECT name FROM products WHERE owner = ? AND id = ?", (owner, pid))
        out.append({"productId": pid, "productName": row["name"] if row else pid})
    return out


def pools_for_owner(tx: Tx, owner: str) -> list[dict[str, Any]]:
    return [pool_dto(tx, p) for p in tx.all("SELECT * FROM pools WHERE owner = ? ORDER BY created", (owner,))]


# -- who runs where -------------------------------------------------------------------------------

def host_of(tx: Tx, consumer: sqlite3.Row) -> sqlite3.Row | None:
    """The hypervisor consumer that last reported this guest (this FT instance, for FT consumers)."""
    # An FT instance runs on the hypervisors of the org that reports it, which may have shared the
    # group with the org it registered in; any other guest runs on its own org's hypervisors.
    if consumer["instance_uuid"]:
        org = consumer["reported_owner"] or consumer["owner"]
    else:
        org = consumer["owner"] or consumer["reported_owner"]
    if not consumer["guest_key"] or not org:
        return None
    if consumer["instance_uuid"]:
        sql = ("SELECT c.* FROM guests g JOIN consumers c ON c.uuid = g.hypervisor WHERE g.guest_key = ? "
               "AND g.instance_key = ? AND c.owner = ? ORDER BY g.updated DESC, c.uuid LIMIT 1")
        params: tuple[Any, ...] = (consumer["guest_key"], consumer["instance_uuid"], org)
    else:
        sql = ("SELECT c.* FROM guests g JOIN consumers c ON c.uuid = g.hypervisor "
               "WHERE g.guest_key = ? AND c.owner = ? ORDER BY g.updated DESC, c.uuid LIMIT 1")
        params = (consumer["guest_key"], org)
    return tx.one(sql, params)


def _is_guest(consumer: sqlite3.Row) -> bool:
    facts = loads(consumer["facts"], {})
    return bool(consumer["guest_key"]) or facts.get("virt.is_guest", "").lower() == "true"


def _check_attachable(tx: Tx, consumer: sqlite3.Row, pool: sqlite3.Row, quantity: int,
                      host: sqlite3.Row | None) -> str | None:
    """Why this consumer cannot attach this pool, or None when it can."""
    if pool["owner"] != consumer["owner"] and not _shared_to(tx, consumer, pool):
        return "the pool belongs to another organization"
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    if not pool["start_date"] <= now < pool["end_date"]:
        return "the pool is not current"
    attrs = loads(pool["attributes"], {})
    if attrs.get("virt_only") == "true" and not _is_guest(consumer):
        return "the pool is for virtual machines only"
    if pool["requires_host"] and (host is None or host["uuid"] != pool["requires_host"]):
        return "the pool is restricted to the guests of another hypervisor"
    if pool["quantity"] >= 0 and _consumed(tx, pool["id"]) + quantity > pool["quantity"]:
        return "no subscriptions are available from the pool"
    return None


def _shared_to(tx: Tx, consumer: sqlite3.Row, pool: sqlite3.Row) -> bool:
    """A pool of another org that this consumer may use: one derived from a hypervisor of the org that
    reports this FT instance, when that org shares with the consumer's org."""
    return bool(pool["requires_host"] and consumer["instance_uuid"] and consumer["owner"]
                and pool["owner"] == consumer["reported_owner"]
                and shares.shares_with(tx, pool["owner"], consumer["owner"]))


def _candidate_pools(tx: Tx, consumer: sqlite3.Row) -> list[sqlite3.Row]:
    """The consumer's org's pools, plus the derived pools of a sharing org that reports it."""
    rows = tx.all("SELECT * FROM pools WHERE owner = ? ORDER BY created", (consumer["owner"],))
    reporter = consumer["reported_owner"]
    if consumer["instance_uuid"] and reporter and reporter != consumer["owner"]:
        rows += [p for p in tx.all("SELECT * FROM pools WHERE owner = ? AND requires_host IS NOT NULL "
                                   "ORDER BY created", (reporter,)) if _shared_to(tx, consumer, p)]
    return rows


def visible_to_consumer(tx: Tx, consumer: sqlite3.Row, pool: sqlite3.Row) -> bool:
    """A consumer reads its own org's pools, and the shared pools it may attach or holds."""
    if pool["owner"] == consumer["owner"]:
        return True
    if not _shared_to(tx, consumer, pool):
        return False
    holds = tx.one("SELECT 1 FROM entitlements WHERE consumer = ? AND pool = ?", (consumer["uuid"], pool["id"]))
    return holds is not None or _check_attachable(tx, consumer, pool, 1, host_of(tx, consumer)) is None


def attachable_pools(tx: Tx, consumer: sqlite3.Row) -> list[dict[str, Any]]:
    host = host_of(tx, consumer)
    rows = _candidate_pools(tx, consumer)
    return [pool_dto(tx, p) for p in rows if _check_attachable(tx, consumer, p, 1, host) is None]


# -- entitlements ---------------------------------------------------------------------------------

def attach(tx: Tx, ca: CertificateAuthority, consumer: sqlite3.Row, pool_id: str,
           quantity: int = 1) -> dict[str, Any]:
    if consumer["owner"] is None:
        raise Forbidden("The system is not registered to an organization.")
    if quantity < 1:
        raise BadRequest("quantity must be at least 1")
    pool = _pool(tx, pool_id)
    reason = _check_attachable(tx, consumer, pool, quantity, host_of(tx, consumer))
    if reason is not None:
        raise Forbidden(f"Unable to attach pool {pool_id}: {reason}.")
    return _create_entitlement(tx, ca, consumer, pool, quantity)


def _create_entitlement(tx: Tx, ca: CertificateAuthority, consumer: sqlite3.Row, pool: sqlite3.Row,
                        quantity: int) -> dict[str, Any]:
    ent_id = _hex_id()
    tx.execute("INSERT INTO entitlements(id, consumer, pool, quantity, created) VALUES(?,?,?,?,?)",
               (ent_id, consumer["uuid"], pool["id"], quantity, now_iso()))
    product, provided = _provides(tx, pool)
    _issue_certificate(tx, ca, consumer, pool, product, provided, ent_id, quantity)
    attrs = loads(product["attributes"], {})
    if consumer["type"] == "hypervisor" and "virt_limit" in attrs:
        limit = attrs["virt_limit"]
        derived_qty = -1 if limit == "unlimited" else int(limit) * quantity
        derived_id = _hex_id()
        tx.execute(
            "INSERT INTO pools(id, owner, product_id, quantity, source_entitlement, requires_host, "
            "hypervisor_id, attributes, start_date, end_date, created) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
            (derived_id, pool["owner"], pool["product_id"], derived_qty, ent_id, consumer["uuid"],
             consumer["hypervisor_id"], dumps({"virt_only": "true", "pool_derived": "true"}),
             pool["start_date"], pool["end_date"], now_iso()),
        )
        log.info("hypervisor %s: derived virt pool %s (%s guests) from pool %s",
                 consumer["uuid"], derived_id, limit, pool["id"])
    return _entitlement_dto(tx, tx.one("SELECT * FROM entitlements WHERE id = ?", (ent_id,)))


def _issue_certificate(tx: Tx, ca: CertificateAuthority, consumer: sqlite3.Row, pool: sqlite3.Row,
                       product: sqlite3.Row, provided: list[str], ent_id: str, quantity: int) -> None:
    payload = _cert_payload(tx, consumer, pool, product, provided, quantity)
    serial = tx.next_serial("entitlement")
    issued = ca.entitlement(ent_id, pool["owner"], serial, payload,
                            not_before=dt.datetime.fromisoformat(pool["start_date"]),
                            not_after=dt.datetime.fromisoformat(pool["end_date"]))
    tx.execute(
        "INSERT INTO certificates(serial, entitlement, consumer, cert, key, expiration) VALUES(?,?,?,?,?,?)",
        (serial, ent_id, consumer["uuid"], issued.cert_pem, issued.key_pem, issued.not_after.isoformat()),
    )


def _cert_payload(tx: Tx, consumer: sqlite3.Row, pool: sqlite3.Row, product: sqlite3.Row, provided: list[str],
                  quantity: int) -> dict[str, Any]:
    """The entitlement data of a v3 certificate: what a client needs without asking the server."""
    attrs = {**loads(product["attributes"], {}), **loads(pool["attributes"], {})}
    products = []
    allowed = environments.promoted(tx, consumer)
    for pid in provided:
        row = tx.one("SELECT * FROM products WHERE owner = ? AND id = ?", (pool["owner"], pid))
        name = row["name"] if row else pid
        pattrs = loads(row["attributes"], {}) if row else {}
        entry = entcert.product_entry(pid, name, pattrs, product_content(tx, pool["owner"], pid))
        entry["content"] = environments.filter_content(entry["content"], allowed)
        products.append(entry)
    subscription: dict[str, Any] = {
        "sku": product["id"], "name": product["name"], "warning": 0, "management": False,
        "virt_only": attrs.get("virt_only") == "true",
    }
    for attr, key in (("sockets", "sockets"), ("cores", "cores"), ("ram", "ram"), ("stacking_id", "stacking_id")):
        if attrs.get(attr):
            value = attrs[attr]
            # A count is a number in the certificate; anything else (a huge or non-ASCII one) stays text.
            subscription[key] = int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else value
    if attrs.get("support_level") or attrs.get("support_type"):
        subscription["service"] = {"level": attrs.get("support_level"), "type": attrs.get("support_type")}
    return {
        "consumer": consumer["uuid"],
        "quantity": quantity,
        "subscription": subscription,
        "order": {"number": pool["id"], "quantity": pool["quantity"], "start": pool["start_date"],
                  "end": pool["end_date"]},
        "products": products,
        "pool": {"id": pool["id"]},
    }


def remove_entitlement(tx: Tx, ent_id: str) -> None:
    """Remove an entitlement, its certificate, and any pool derived from it (with what it entitled)."""
    for derived in tx.all("SELECT id FROM pools WHERE source_entitlement = ?", (ent_id,)):
        for ent in tx.all("SELECT id FROM entitlements WHERE pool = ?", (derived["id"],)):
            remove_entitlement(tx, ent["id"])
        tx.execute("DELETE FROM pools WHERE id = ?", (derived["id"],))
    tx.execute("DELETE FROM certificates WHERE entitlement = ?", (ent_id,))
    tx.execute("DELETE FROM entitlements WHERE id = ?", (ent_id,))


def revoke_share(tx: Tx, owner: str, recipient: str) -> dict[str, Any]:
    """Revoke a share: the recipient's entitlements from the owner's pools go, consumers stay."""
    shares.delete(tx, owner, recipient)
    ents = tx.all("SELECT e.id, e.consumer FROM entitlements e JOIN pools p ON p.id = e.pool "
                  "JOIN consumers c ON c.uuid = e.consumer WHERE p.owner = ? AND c.owner = ?",
                  (owner, recipient))
    for ent in ents:
        remove_entitlement(tx, ent["id"])
    consumers = sorted({e["consumer"] for e in ents})
    log.warning("share %s -> %s revoked: %d entitlements removed from %d consumers%s", owner, recipient,
                len(ents), len(consumers), (": " + ", ".join(consumers)) if consumers else "")
    return {"owner": {"key": owner}, "recipient": {"key": recipient},
            "removedEntitlements": len(ents), "consumers": consumers}


def products_covered(tx: Tx, consumer_uuid: str) -> dict[str, list[str]]:
    """Product id -> entitlement ids that cover it."""
    covered: dict[str, list[str]] = {}
    for ent in tx.all("SELECT e.id, p.owner, p.product_id FROM entitlements e JOIN pools p ON p.id = e.pool "
                      "WHERE e.consumer = ?", (consumer_uuid,)):
        product = tx.one("SELECT id, provided FROM products WHERE owner=? AND id=?",
                         (ent["owner"], ent["product_id"]))
        if product is None:
            continue
        for pid in _covered_ids(product):
            covered.setdefault(pid, []).append(ent["id"])
    return covered


def auto_attach(tx: Tx, ca: CertificateAuthority, consumer: sqlite3.Row,
                only_products: list[str] | None = None, host_only: bool = False,
                dry_run: bool = False) -> list[dict[str, Any]]:
    """Attach one pool per uncovered installed product, preferring the guest's own host's virt pool.

    In an SCA org a client's auto-attach (no `only_products`) binds nothing.
    `only_products` widens or narrows what is wanted (FT instances copy what their primary holds);
    `host_only` restricts the choice to pools derived from the consumer's own hypervisor. With
    `dry_run` nothing is attached: the answer is the PoolQuantityDTOs that would be.
    """
    if consumer["owner"] is None:
        raise Forbidden("The system is not registered to an organization.")
    if only_products is None and dto.content_access_mode(tx, consumer["owner"]) == dto.SCA_MODE:
        # Simple content access: the content access certificate grants the org's content, so a
        # client's auto-attach binds nothing (an empty answer, as Candlepin). The FT rules' own
        # moves (`only_products`) still carry what was bound by pool id.
        log.debug("auto-attach for %s in SCA org %s: nothing to bind", consumer["uuid"], consumer["owner"])
        return []
    wanted = only_products if only_products is not None else [
        p["productId"] for p in loads(consumer["installed_products"], [])]
    covered = products_covered(tx, consumer["uuid"])
    host = host_of(tx, consumer)
    pools = _candidate_pools(tx, consumer)

    def rank(pool: sqlite3.Row) -> int:
        if host is not None and pool["requires_host"] == host["uuid"]:
            return 0
        return 1

    pools.sort(key=rank)
    attached = []
    for pid in wanted:
        if pid in covered:
            continue
        for pool in pools:
            if host_only and (host is None or pool["requires_host"] != host["uuid"]):
                continue
            if pid not in _provides(tx, pool)[1]:
                continue
            if _check_attachable(tx, consumer, pool, 1, host) is not None:
                continue
            if dry_run:
                attached.append({"pool": pool_dto(tx, pool), "quantity": 1})
                ent_id = ""
            else:
                ent = _create_entitlement(tx, ca, consumer, pool, 1)
                attached.append(ent)
                ent_id = ent["id"]
            for provided in _provides(tx, pool)[1]:
                covered.setdefault(provided, []).append(ent_id)
            break
    return attached


def certificate_dtos(tx: Tx, consumer_uuid: str, serials: list[int] | None = None,
                     with_body: bool = True) -> list[dict[str, Any]]:
    rows = tx.all("SELECT * FROM certificates WHERE consumer = ? ORDER BY serial", (consumer_uuid,))
    out = []
    for row in rows:
        if serials is not None and row["serial"] not in serials:
            continue
        serial = {"id": row["serial"], "serial": row["serial"], "expiration": row["expiration"],
                  "revoked": False}
        if with_body:
            out.append({"id": str(row["serial"]), "serial": serial, "cert": row["cert"], "key": row["key"],
                        "entitlement": {"id": row["entitlement"]}})
        else:
            out.append(serial)
    return out


def _entitlement_dto(tx: Tx, ent: sqlite3.Row | None) -> dict[str, Any]:
    assert ent is not None
    pool = tx.one("SELECT * FROM pools WHERE id = ?", (ent["pool"],))
    assert pool is not None
    return {
        "id": ent["id"],
        "consumer": {"uuid": ent["consumer"]},
        "pool": pool_dto(tx, pool),
        "quantity": ent["quantity"],
        "created": ent["created"],
        "startDate": pool["start_date"],
        "endDate": pool["end_date"],
        "certificates": [c for c in certificate_dtos(tx, ent["consumer"])
                         if c["entitlement"]["id"] == ent["id"]],
    }


def entitlement_dto(tx: Tx, ent_id: str) -> dict[str, Any]:
    return _entitlement_dto(tx, tx.one("SELECT * FROM entitlements WHERE id = ?", (ent_id,)))


def entitlement_dtos(tx: Tx, consumer_uuid: str) -> list[dict[str, Any]]:
    return [_entitlement_dto(tx, e)
            for e in tx.all("SELECT * FROM entitlements WHERE consumer = ? ORDER BY created", (consumer_uuid,))]


def compliance(tx: Tx, consumer: sqlite3.Row) -> dict[str, Any]:
    """valid: every installed product covered (or none installed); partial: some; invalid: none.

    In an SCA org, "disabled" (as Candlepin): content does not depend on subscriptions there.
    """
    if dto.content_access_mode(tx, consumer["owner"]) == dto.SCA_MODE:
        return {"status": "disabled", "compliant": True, "date": now_iso(), "compliantProducts": {},
                "partiallyCompliantProducts": {}, "partialStacks": {}, "nonCompliantProducts": [], "reasons": [],
                "productComplianceDateRanges": {}, "consumerUuid": consumer["uuid"]}
    installed = loads(consumer["installed_products"], [])
    covered = products_covered(tx, consumer["uuid"])
    compliant = {p["productId"]: covered[p["productId"]] for p in installed if p["productId"] in covered}
    non_compliant = [p["productId"] for p in installed if p["productId"] not in covered]
    if not non_compliant:
        status = "valid"
    elif compliant:
        status = "partial"
    else:
        status = "invalid"
    reasons = [{"key": "NOTCOVERED", "message": "Not supported by a valid subscription.",
                "attributes": {"product_id": pid}} for pid in non_compliant]
    ranges = _coverage_ranges(tx, compliant)
    out: dict[str, Any] = {
        "status": status,
        "compliant": status == "valid",
        "date": now_iso(),
        "compliantProducts": {pid: [_compliance_entitlement(tx, e) for e in ents] for pid, ents in compliant.items()},
        "partiallyCompliantProducts": {},
        "partialStacks": {},
        "nonCompliantProducts": non_compliant,
        "reasons": reasons,
        "productComplianceDateRanges": ranges,
        "consumerUuid": consumer["uuid"],
    }
    if status == "valid" and ranges:
        # Compliant until the first covered product's coverage ends.
        out["compliantUntil"] = min(r["endDate"] for r in ranges.values())
    return out


def _compliance_entitlement(tx: Tx, ent_id: str) -> dict[str, Any]:
    """An EntitlementDTO as compliance lists it: without its certificates (and their keys)."""
    ent = _entitlement_dto(tx, tx.one("SELECT * FROM entitlements WHERE id = ?", (ent_id,)))
    ent["certificates"] = []
    return ent


def _coverage_ranges(tx: Tx, compliant: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    """productId -> the period its entitlements cover (earliest start, latest end)."""
    out: dict[str, dict[str, str]] = {}
    for pid, ents in compliant.items():
        marks = "?,".join("" for _ in ents) + "?"
        rows = tx.all("SELECT MIN(p.start_date) AS s, MAX(p.end_date) AS e FROM entitlements e "  # noqa: S608
                      f"JOIN pools p ON p.id = e.pool WHERE e.id IN ({marks})", tuple(ents))
        if rows and rows[0]["s"]:
            out[pid] = {"startDate": rows[0]["s"], "endDate": rows[0]["e"]}
    return out


def remove_by_pool(tx: Tx, consumer: sqlite3.Row, pool_id: str) -> int:
    """Remove the consumer's entitlements from one pool; NotFound when it holds none."""
    ents = tx.all("SELECT id FROM entitlements WHERE consumer = ? AND pool = ?", (consumer["uuid"], pool_id))
    if not ents:
        raise NotFound(f"No entitlements for consumer '{consumer['uuid']}' with pool id '{pool_id}'")
    for ent in ents:
        remove_entitlement(tx, ent["id"])
    return len(ents)


def remove_by_serial(tx: Tx, consumer: sqlite3.Row, serial: int) -> None:
    """Remove the entitlement whose certificate has this serial."""
    row = tx.one("SELECT entitlement FROM certificates WHERE consumer = ? AND serial = ?", (consumer["uuid"], serial))
    if row is None:
        raise NotFound(f"Entitlement Certificate with serial number '{serial}' could not be found.")
    remove_entitlement(tx, row["entitlement"])


def regenerate_certificates(tx: Tx, ca: CertificateAuthority, consumer: sqlite3.Row,
                            entitlement: str | None = None) -> int:
    """New certificates (new serials and keys) for the consumer's entitlements, or for one of them."""
    sql = "SELECT * FROM entitlements WHERE consumer = ?"
    params: tuple[Any, ...] = (consumer["uuid"],)
    if entitlement:
        sql, params = sql + " AND id = ?", (*params, entitlement)
    ents = tx.all(sql + " ORDER BY created", params)
    if entitlement and not ents:
        raise NotFound(f"Entitlement with ID '{entitlement}' could not be found.")
    for ent in ents:
        pool = _pool(tx, ent["pool"])
        product, provided = _provides(tx, pool)
        _issue_certificate(tx, ca, consumer, pool, product, provided, ent["id"], ent["quantity"])
        tx.execute("DELETE FROM certificates WHERE entitlement = ? AND serial <> "
                   "(SELECT MAX(serial) FROM certificates WHERE entitlement = ?)", (ent["id"], ent["id"]))
    return len(ents)


def parse_serials(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        return [int_text(s, "serials", 0) for s in value.split(",") if s.strip()]
    except BadRequest:
        raise BadRequest("serials must be a comma-separated list of integers") from None

