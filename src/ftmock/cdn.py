"""The content delivery network: files of a directory, to clients whose certificate grants them.

``ftmock serve --content-dir DIR`` serves ``DIR/<path>`` at the content URL (the server's address,
with no prefix, as ``https://cdn.redhat.com`` serves ``/content/...``; written to ``DATA/cdn-url``).
A request must come with a client certificate that ftmock issued and still holds (an entitlement or
content access certificate, not revoked: its serial is current) and whose content paths grant the
path; ``$releasever`` and ``$basearch`` in a content path match any segment, as the CDN does. The
TLS handshake has already checked the chain to ftmock's CA and the validity period.

Answers: 403 for no certificate, a certificate ftmock no longer holds (revoked, replaced, its
consumer gone) or one that does not grant the path; 404 for a missing file or a directory; 405 for
anything but GET and HEAD. Files are streamed with ``Last-Modified``, ``If-Modified-Since`` (304) and
single ``Range`` requests (206, or 416 when unsatisfiable), as a static file server answers.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import mimetypes
import os
import posixpath
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from cryptography import x509

from . import entcert
from .pathtree import PathMatcher
from .store import Database

__all__ = ["CDN_URL_FILE", "ContentAnswer", "ContentServer"]

log = logging.getLogger(__name__)

CDN_URL_FILE = "cdn-url"
CHUNK = 256 * 1024
# Certificates' grants decoded once each (a serial's content never changes): dnf asks many files.
GRANT_CACHE = 512
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class ContentAnswer:
    """What to send: a status, headers, and a body (bytes) or a slice of a file."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    file: Path | None = None
    offset: int = 0
    length: int = 0


def _error(status: int, message: str) -> ContentAnswer:
    return ContentAnswer(status, {"Content-Type": "application/json"},
                         json.dumps({"displayMessage": message}).encode())


class ContentServer:
    """Authorises and answers content requests for one directory."""

    def __init__(self, root: Path, db: Database) -> None:
        self.root = root.resolve()
        self.db = db
        self._grants: OrderedDict[int, PathMatcher] = OrderedDict()
        self._lock = threading.Lock()

    def _matcher(self, serial: int) -> PathMatcher | None:
        """The grant of a certificate ftmock holds now, else None (revoked, replaced, unknown)."""
        with self.db.transaction() as tx:
            row = tx.one("SELECT cert FROM content_access_certs WHERE serial = ?", (serial,)) \
                or tx.one("SELECT cert FROM certificates WHERE serial = ?", (serial,))
        if row is None:
            return None
        with self._lock:
            cached = self._grants.get(serial)
            if cached is not None:
                self._grants.move_to_end(serial)
                return cached
        matcher = PathMatcher(entcert.content_paths(entcert.payload_of(str(row["cert"]))))
        with self._lock:
            self._grants[serial] = matcher
            while len(self._grants) > GRANT_CACHE:
                self._grants.popitem(last=False)
        return matcher

    def answer(self, method: str, raw_path: str, headers: dict[str, str], peer_der: bytes | None) -> ContentAnswer:
        if method not in ("GET", "HEAD"):
            return _error(405, f"Method {method} not allowed on content")
        path = "/" + posixpath.normpath("/" + unquote(raw_path)).lstrip("/")  # POSIX keeps a leading "//"
        if peer_der is None:
            return _error(403, "A client certificate that grants this content is required")
        serial = x509.load_der_x509_certificate(peer_der).serial_number
        matcher = self._matcher(serial)
        if matcher is None:
            log.info("content %s refused: certificate %d is revoked or not an entitlement", path, serial)
            return _error(403, f"Certificate {serial} is revoked or grants no content")
        if not matcher.grants(path):
            log.info("content %s refused: certificate %d does not grant it", path, serial)
            return _error(403, f"Certificate {serial} does not grant {path}")
        target = (self.root / path.lstrip("/")).resolve()
        if os.path.commonpath([str(self.root), str(target)]) != str(self.root) or not target.is_file():
            return _error(404, f"No content at {path}")
        return self._file(target, headers)

    def _file(self, target: Path, headers: dict[str, str]) -> ContentAnswer:
        st = target.stat()
        mtime = dt.datetime.fromtimestamp(int(st.st_mtime), dt.timezone.utc)
        out = {"Last-Modified": email.utils.format_datetime(mtime, usegmt=True), "Accept-Ranges": "bytes",
               "Content-Type": mimetypes.guess_type(target.name)[0] or "application/octet-stream"}
        lower = {k.lower(): v for k, v in headers.items()}
        since = lower.get("if-modified-since")
        if since and "range" not in lower:
            try:
                when = email.utils.parsedate_to_datetime(since)
            except (TypeError, ValueError):
                when = None
            if when is not None and when.tzinfo is not None and mtime <= when:
                return ContentAnswer(304, out)
        size = st.st_size
        spec = lower.get("range")
        match = _RANGE.match(spec.strip()) if spec else None
        if match is None or not (match.group(1) or match.group(2)):
            return ContentAnswer(200, out, file=target, offset=0, length=size)  # no (or an unsupported) range
        first, last = match.group(1), match.group(2)
        if first:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
        else:  # the last N bytes
            start = max(size - int(last), 0)
            end = size - 1
        if start >= size or end < start:
            return ContentAnswer(416, {**out, "Content-Range": f"bytes */{size}"})
        out["Content-Range"] = f"bytes {start}-{end}/{size}"
        return ContentAnswer(206, out, file=target, offset=start, length=end - start + 1)
