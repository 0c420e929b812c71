"""Simple Content Access: one content access certificate per system of an SCA org.

In an org whose ``contentAccessMode`` is ``org_environment``, each system consumer holds one
*content access certificate* (Candlepin's v3 form with entitlement type ``OrgLevel``; CN = the
consumer's UUID, O = the org) granting every content set of every product the org holds an active
pool of (the pool's SKU and its provided products). It is listed with the entitlement certificates
(``/certificates``, ``/certificates/serials``) and served by ``/accessible_content``.

The certificate is made when the consumer first asks for its certificates and kept while it stays
right: it is replaced (a new serial) when the org's content changes (a digest of the products' and
content sets' stored text, so a check-in does not decode them), when it is within a day of expiring,
or when the consumer moved to another org. Revoking it (consumer deleted, identity regenerated,
failed over to a successor, org left SCA) deletes it: ftmock's content server accepts only serials
it still holds, so a revoked certificate is refused at once.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import logging
import sqlite3
from typing import Any

from . import dto, entcert, environments
from .ca import CertificateAuthority
from .errors import BadRequest
from .store import Tx, dumps, loads, now_iso

__all__ = [
    "CONTENT_ACCESS_PRODUCT",
    "accessible_content",
    "certificate_dtos",
    "content_access_dto",
    "current",
    "org_content",
    "revoke",
    "revoke_org",
]

log = logging.getLogger(__name__)

# Candlepin's container product for the org's content, and the certificate's validity.
CONTENT_ACCESS_PRODUCT = "content_access"
VALIDITY = dt.timedelta(days=365)
RENEW_BEFORE = dt.timedelta(days=1)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def is_sca(tx: Tx, owner: str | None) -> bool:
    return dto.content_access_mode(tx, owner) == dto.SCA_MODE


def _product_ids(tx: Tx, owner: str) -> list[str]:
    """The org's products with an active pool: each pool's SKU and the products it provides."""
    now = _now().isoformat()
    skus = [r["product_id"] for r in tx.all(
        "SELECT DISTINCT product_id FROM pools WHERE owner = ? AND start_date <= ? AND end_date > ?",
        (owner, now, now))]
    ids = set(skus)
    for sku in skus:
        row = tx.one("SELECT provided FROM products WHERE owner = ? AND id = ?", (owner, sku))
        if row is not None:
            ids.update(loads(row["provided"], []))
    return sorted(ids)


def _content_rows(tx: Tx, owner: str) -> list[tuple[str, str]]:
    rows = []
    for pid in _product_ids(tx, owner):
        row = tx.one("SELECT content FROM product_content WHERE owner = ? AND product_id = ?", (owner, pid))
        if row is not None:
            rows.append((pid, str(row["content"])))
    return rows


def _digest(owner: str, rows: list[tuple[str, str]]) -> str:
    h = hashlib.sha256(owner.encode())
    for pid, text in rows:
        h.update(b"\0" + pid.encode() + b"\0" + text.encode())
    return h.hexdigest()


def org_content(tx: Tx, owner: str) -> list[dict[str, Any]]:
    """The org's content sets as certificates carry them, one per content id, by label."""
    seen: dict[str, dict[str, Any]] = {}
    for _pid, text in _content_rows(tx, owner):
        for item in loads(text, []):
            entry = entcert.content_entry(item)
            seen.setdefault(entry["id"], entry)
    return sorted(seen.values(), key=lambda c: (str(c.get("label")), str(c["id"])))


def _payload(consumer_uuid: str, content: list[dict[str, Any]], start: dt.datetime,
             end: dt.datetime) -> dict[str, Any]:
    return {
        "consumer": consumer_uuid,
        "quantity": 1,
        "subscription": {"sku": CONTENT_ACCESS_PRODUCT, "name": "Content Access"},
        "order": {"start": start.isoformat(), "end": end.isoformat()},
        "products": [{"id": CONTENT_ACCESS_PRODUCT, "name": "Content Access", "version": "",
                      "architectures": [], "content": content}],
        "pool": {},
    }


def current(tx: Tx, ca: CertificateAuthority, consumer: sqlite3.Row) -> sqlite3.Row | None:
    """The consumer's content access certificate, (re)issued when due; None outside SCA."""
    owner = consumer["owner"]
    if consumer["type"] != "system" or consumer["failed_over_to"] or not is_sca(tx, owner):
        return None
    rows = _content_rows(tx, owner)
    allowed = environments.promoted(tx, consumer)
    # What the consumer's environments let through is part of what the certificate says.
    digest = _digest(owner, rows) if allowed is None else _digest(owner, [*rows, ("", dumps(allowed))])
    existing = tx.one("SELECT * FROM content_access_certs WHERE consumer = ?", (consumer["uuid"],))
    if existing is not None and existing["digest"] == digest \
            and dt.datetime.fromisoformat(existing["expiration"]) > _now() + RENEW_BEFORE:
        return existing
    content = environments.filter_content(org_content(tx, owner), allowed)
    start = _now() - dt.timedelta(hours=1)
    end = start + VALIDITY
    serial = tx.next_serial("content_access")
    issued = ca.entitlement(consumer["uuid"], owner, serial, _payload(consumer["uuid"], content, start, end),
                            not_before=start, not_after=end, entitlement_type=entcert.CONTENT_ACCESS_TYPE)
    tx.execute("INSERT OR REPLACE INTO content_access_certs(consumer, serial, cert, key, expiration, digest, updated) "
               "VALUES(?,?,?,?,?,?,?)",
               (consumer["uuid"], serial, issued.cert_pem, issued.key_pem, issued.not_after.isoformat(), digest,
                now_iso()))
    log.info("content access certificate %d for %s (%d content sets)%s", serial, consumer["uuid"], len(content),
             f", replacing {existing['serial']}" if existing is not None else "")
    return tx.one("SELECT * FROM content_access_certs WHERE consumer = ?", (consumer["uuid"],))


def certificate_dtos(tx: Tx, ca: CertificateAuthority, consumer: sqlite3.Row, serials: list[int] | None = None,
                     with_body: bool = True) -> list[dict[str, Any]]:
    """The content access certificate as the certificate listings show it (none outside SCA)."""
    row = current(tx, ca, consumer)
    if row is None or (serials is not None and row["serial"] not in serials):
        return []
    serial = {"id": row["serial"], "serial": row["serial"], "expiration": row["expiration"], "revoked": False}
    if not with_body:
        return [serial]
    return [{"id": str(row["serial"]), "serial": serial, "cert": row["cert"], "key": row["key"],
             "created": row["updated"], "updated": row["updated"]}]


def revoke(tx: Tx, consumer_uuid: str) -> bool:
    """Revoke a consumer's content access certificate; True if it had one."""
    cur = tx.execute("DELETE FROM content_access_certs WHERE consumer = ?", (consumer_uuid,))
    if cur.rowcount:
        log.info("content access certificate of %s revoked", consumer_uuid)
    return bool(cur.rowcount)


def revoke_org(tx: Tx, owner: str) -> int:
    """Revoke the content access certificates of an org's consumers (the org left SCA)."""
    cur = tx.execute("DELETE FROM content_access_certs WHERE consumer IN (SELECT uuid FROM consumers WHERE owner = ?)",
                     (owner,))
    return int(cur.rowcount)


def content_access_dto(tx: Tx, owner: str | None) -> dict[str, Any]:
    """ContentAccessDTO: the org's mode and the modes it may use."""
    row = tx.one("SELECT content_access_mode, content_access_mode_list FROM owners WHERE key = ?", (owner,)) \
        if owner else None
    if row is None:
        return {"contentAccessMode": dto.ENTITLEMENT_MODE, "contentAccessModeList": [dto.ENTITLEMENT_MODE]}
    return {"contentAccessMode": row["content_access_mode"],
            "contentAccessModeList": [m for m in str(row["content_access_mode_list"]).split(",") if m]}


def _http_date(iso: str) -> str:
    return email.utils.format_datetime(dt.datetime.fromisoformat(iso).astimezone(dt.timezone.utc), usegmt=True)


def accessible_content(tx: Tx, ca: CertificateAuthority, consumer: sqlite3.Row,
                       if_modified_since: str | None) -> tuple[int, Any, dict[str, str]]:
    """GET /consumers/{uuid}/accessible_content: (status, body, headers); 304 when not newer.

    The body is Candlepin's listing: ``{"contentListing": {serial: [certificate, entitlement data and
    signature]}, "lastUpdate": time}``.
    """
    row = current(tx, ca, consumer)
    if row is None:
        raise BadRequest("Content access mode does not allow this request: the consumer's organization "
                         "does not use simple content access.")
    updated = dt.datetime.fromisoformat(row["updated"])
    headers = {"Last-Modified": _http_date(row["updated"])}
    if if_modified_since:
        try:
            since = email.utils.parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            since = None
        if since is not None and since.tzinfo is not None and updated.replace(microsecond=0) <= since:
            return 304, None, headers
    cert = str(row["cert"])
    cut = cert.index(entcert.DATA_BEGIN)
    return 200, {"contentListing": {str(row["serial"]): [cert[:cut], cert[cut:]]},
                 "lastUpdate": row["updated"]}, headers
