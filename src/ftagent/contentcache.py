"""The content sets of each entitlement certificate, kept so that a certificate is parsed only once.

The repository file is built again at every check-in, refresh and registration from the content sets
of every certificate the system holds (:mod:`ftagent.repos`), and reading a certificate loads
``cryptography`` and checks the payload's signature: about 26 ms of a check-in with nothing changed
(``python -X importtime``: 22 ms to import, 4 ms for the first parse). A certificate's file never
changes for its serial, so what the repository file takes from it is kept in ``content-sets.json``
beside the other caches (``identity_dir``, or ``state_dir`` in the rhsm layout), and a check-in
with nothing new reads that instead: ``cryptography`` is not even imported.

An entry is keyed by the SHA-256 of the certificate file's bytes and holds the server CA file's
SHA-256 (the signature's verdict depends on it) with either the content sets (only the fields the
repository file uses) or why the certificate gives no repository. Overrides, the release and
``[content]`` settings are applied after the cache, so they are not part of it. An entry whose
certificate or CA changed is parsed again; a file that is unreadable, of another format, or whose
recorded SHA-256 does not match its entries (a torn or edited file) is ignored as a whole. Whatever
was parsed anew is written back (atomically, not durably: a lost cache only costs one parse), with
the entries of certificates no longer present left out.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftagent.atomic import write_atomic
from ftagent.errors import FtagentError

if TYPE_CHECKING:
    from ftagent.entitlements import EntitlementStore

__all__ = ["CACHE_NAME", "FORMAT", "CertContent", "ContentCache"]

logger = logging.getLogger(__name__)

CACHE_NAME = "content-sets.json"
#: Bumped whenever what an entry holds changes, so that an older file is parsed again.
FORMAT = 1
#: What the repository file reads of a content set (the parser's other fields are not kept).
FIELDS = ("label", "name", "type", "path", "enabled", "gpg_url", "metadata_expire")
#: Why a certificate whose payload signature does not verify gives no repository.
UNSIGNED = "its content is not signed by the server's CA"


@dataclass(frozen=True)
class CertContent:
    """What one certificate gives the repository file: its content sets, or why none."""

    serial: int
    content: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_digest(path: Path | None) -> str:
    """The SHA-256 of a file ("" for none, or one that cannot be read: the parser then checks nothing)."""
    if path is None:
        return ""
    try:
        return _digest(path.read_bytes())
    except OSError:
        return ""


def _valid(entry: Any, ca: str) -> dict[str, Any] | None:
    """``entry`` if it is one this code wrote for this CA, else None."""
    if not isinstance(entry, dict) or entry.get("ca") != ca:
        return None
    skipped, content = entry.get("skipped"), entry.get("content")
    if isinstance(skipped, str) and content is None:
        return entry
    if skipped is None and isinstance(content, list) and all(isinstance(c, dict) for c in content):
        return entry
    return None


class ContentCache:
    """``content-sets.json``: each certificate's content sets by the SHA-256 of its file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, Any]:
        """The entries of the file, or none when it is missing, torn, edited or of another format."""
        try:
            raw = self.path.read_bytes()
        except OSError:
            return {}
        head, _, body = raw.partition(b"\n")
        try:
            header = json.loads(head)
            if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("sha256") != _digest(body):
                return {}
            entries = json.loads(body)
        except ValueError:
            return {}
        return entries if isinstance(entries, dict) else {}

    def _save(self, entries: dict[str, Any]) -> None:
        body = json.dumps(entries, separators=(",", ":")).encode()
        header = json.dumps({"format": FORMAT, "sha256": _digest(body)}).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, header + b"\n" + body, mode=0o644, durable=False)
        except OSError as exc:
            logger.warning("cannot keep the certificates' content sets in %s: %s", self.path, exc)

    def content(self, store: EntitlementStore, ca_cert: Path | None) -> list[CertContent]:
        """Each certificate of ``store`` (by serial) with its content sets; ``ca_cert`` checks signatures."""
        ca = _file_digest(ca_cert)
        loaded = self._load()
        kept: dict[str, Any] = {}
        out: list[CertContent] = []
        for serial in sorted(store.serials()):
            try:
                data = store.cert_path(serial).read_bytes()
            except OSError as exc:
                out.append(CertContent(serial, skipped=f"unreadable: {exc}"))
                continue
            digest = _digest(data)
            entry = kept.get(digest) or _valid(loaded.get(digest), ca)
            if entry is None:
                entry = _entry(store.parse(data, ca_cert), ca)
            kept[digest] = entry
            out.append(CertContent(serial, list(entry.get("content") or []), entry.get("skipped")))
        if kept != loaded:
            self._save(kept)
        return out


def _entry(cert: Any, ca: str) -> dict[str, Any]:
    """The cache entry of a parsed certificate (an ``EntitlementCert`` or the error that it is not one)."""
    if isinstance(cert, FtagentError):
        return {"ca": ca, "skipped": str(cert)}
    if cert.signature == "invalid":
        return {"ca": ca, "skipped": UNSIGNED}
    return {"ca": ca, "content": [{k: item.get(k) for k in FIELDS} for item in cert.content]}
