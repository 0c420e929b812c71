"""A consumer's release version, and the releases its content offers.

``releaseVer`` is what a consumer asks ``$releasever`` to be (subscription-manager's ``release
--set``): stored as sent, answered as ``{"releaseVer": value}``, and ``{"releaseVer": null}`` when it
is unset (an empty string unsets it). Clients send it as a plain string (python-rhsm) or as the
object.

The releases available to a consumer (``GET /consumers/{uuid}/available_releases``, Satellite's
call) are read as the CDN publishes them: a content path holding ``$releasever``
(``/content/dist/rhel9/$releasever/x86_64/baseos/os``) has a ``listing`` file beside that segment
(``/content/dist/rhel9/listing``), one release per line. ftmock reads those files from the
directory it serves as content (``--content-dir``) for every path the consumer's certificates grant;
without one, no release is known and the list is empty.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

from . import contentaccess, entcert
from .ca import CertificateAuthority
from .errors import BadRequest
from .store import Tx

__all__ = ["available", "listing_paths", "parse_release", "release_dto"]

log = logging.getLogger(__name__)

RELEASEVER = "$releasever"
MAX_LISTING = 1024 * 1024  # a listing is a few lines; more is not one


def parse_release(value: Any) -> str | None:
    """The release a request sets: a string or ``{"releaseVer": string}``; None (unset) for an empty one."""
    if isinstance(value, dict):
        value = value.get("releaseVer")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 255:
        raise BadRequest("releaseVer must be a string of at most 255 characters")
    return value.strip() or None


def release_dto(row: sqlite3.Row) -> dict[str, Any]:
    """ReleaseVerDTO: always the object, its value null when unset."""
    return {"releaseVer": row["release_ver"] or None}


def listing_paths(content_paths: list[str]) -> list[str]:
    """The ``listing`` files beside ``$releasever`` in content paths, once each, in order."""
    out: list[str] = []
    for path in content_paths:
        if RELEASEVER not in path:
            continue
        listing = path.split(RELEASEVER, 1)[0].rstrip("/") + "/listing"
        if listing not in out:
            out.append(listing)
    return out


def _granted_paths(tx: Tx, ca: CertificateAuthority, consumer: sqlite3.Row) -> list[str]:
    certs = [str(r["cert"]) for r in tx.all("SELECT cert FROM certificates WHERE consumer = ?", (consumer["uuid"],))]
    access = contentaccess.current(tx, ca, consumer)
    if access is not None:
        certs.append(str(access["cert"]))
    return [p for pem in certs for p in entcert.content_paths(entcert.payload_of(pem))]


def _read_listing(root: Path, path: str) -> list[str]:
    target = (root / path.lstrip("/")).resolve()
    if os.path.commonpath([str(root), str(target)]) != str(root) or not target.is_file():
        return []
    try:
        with open(target, "rb") as fh:
            text = fh.read(MAX_LISTING).decode("utf-8", errors="replace")
    except OSError as exc:
        log.warning("cannot read release listing %s: %s", target, exc)
        return []
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def available(tx: Tx, ca: CertificateAuthority, consumer: sqlite3.Row, content_dir: Path | None) -> list[str]:
    """The releases the CDN lists for the consumer's granted content (none without a content directory)."""
    if content_dir is None:
        return []
    root = content_dir.resolve()
    found: set[str] = set()
    for listing in listing_paths(_granted_paths(tx, ca, consumer)):
        found.update(_read_listing(root, listing))
    return sorted(found)
