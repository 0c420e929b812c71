"""Entitlement certificates: ``<serial>.pem`` and ``<serial>-key.pem`` (0600) in a directory.

:meth:`EntitlementStore.refresh` asks the server for the serials it lists for the consumer, fetches
only the missing certificates (``GET /consumers/{uuid}/certificates?serials=...``) and removes the
local ones the server no longer lists.  A serial's files never change, so writing the key first and
the certificate last (each atomically) means a certificate on disk always has its key; a crash
leaves at worst an orphan key that the next refresh removes or completes.

A :class:`CertificateListener` (the repository file, :mod:`ftagent.repos`) hears of the settled set
of serials after the new certificates are written and before the old ones are removed, and of a
clear before anything is removed: what it writes only ever names files that exist.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ftagent.atomic import fsync_dir, remove_durably, write_atomic
from ftagent.errors import BadAnswer, RemoteError

if TYPE_CHECKING:
    from ftagent.connection import Connection

__all__ = ["CertificateListener", "EntitlementStore", "RefreshResult", "serial_of"]

logger = logging.getLogger(__name__)


def serial_of(obj: Any) -> int | None:
    """The serial number in a server object: ``N``, ``{"serial": N}`` or ``{"serial": {"serial": N}}``."""
    value = obj
    for _ in range(3):
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value if value >= 0 else None
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
            return int(value)
        if isinstance(value, dict):
            value = value.get("serial", value.get("id"))
            continue
        return None
    return None


@dataclass
class RefreshResult:
    """Serials added, removed and kept by a refresh."""

    added: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[int]]:
        """JSON-friendly view."""
        return {"added": self.added, "removed": self.removed, "kept": self.kept}

    @classmethod
    def between(cls, before: Iterable[int], after: Iterable[int]) -> RefreshResult:
        """What changed from the serials held ``before`` to those held ``after`` (over several refreshes)."""
        old, new = set(before), set(after)
        return cls(added=sorted(new - old), removed=sorted(old - new), kept=sorted(old & new))


class CertificateListener(Protocol):
    """What depends on the certificate files (the repository file) and must follow them in order."""

    def certificates_settled(self, connection: Connection, uuid: str, serials: set[int], *, changed: bool,
                             full: bool) -> None:
        """``serials`` are on disk and will be all that is (the others go next); ``changed`` if any came or go."""

    def certificates_cleared(self) -> None:
        """Every certificate is about to be removed."""


class EntitlementStore:
    """The entitlement certificate directory (and the listener that follows its changes)."""

    def __init__(self, directory: str | os.PathLike[str], listener: CertificateListener | None = None,
                 lock: AbstractContextManager[Any] | None = None) -> None:
        self.directory = Path(directory)
        self.listener = listener
        #: What every write happens under (subscription-manager's lock in the rhsm layout).
        self.lock: AbstractContextManager[Any] = lock if lock is not None else nullcontext()

    def cert_path(self, serial: int) -> Path:
        """Path of a serial's certificate."""
        return self.directory / f"{serial}.pem"

    def key_path(self, serial: int) -> Path:
        """Path of a serial's key."""
        return self.directory / f"{serial}-key.pem"

    def serials(self) -> set[int]:
        """Serials with both certificate and key present."""
        if not self.directory.is_dir():
            return set()
        out: set[int] = set()
        for path in self.directory.glob("*.pem"):
            stem = path.name[: -len(".pem")]
            if stem.isdigit() and self.key_path(int(stem)).exists():
                out.add(int(stem))
        return out

    def certificates(self, ca_cert: Path | None = None) -> list[tuple[int, Any]]:
        """Each local certificate, parsed: ``(serial, EntitlementCert)`` or ``(serial, EntitlementCertError)``.

        Reads only local files (no server); ``ca_cert`` checks each payload's signature.
        """
        from ftagent.entcert import EntitlementCertError  # loads cryptography, as parsing does: see parse()

        out: list[tuple[int, Any]] = []
        for serial in sorted(self.serials()):
            try:
                data = self.cert_path(serial).read_bytes()
            except OSError as exc:
                out.append((serial, EntitlementCertError(f"unreadable: {exc}")))
                continue
            out.append((serial, self.parse(data, ca_cert)))
        return out

    @staticmethod
    def parse(data: bytes, ca_cert: Path | None = None) -> Any:
        """A certificate file's bytes as an ``EntitlementCert``, or the ``EntitlementCertError`` saying why
        they are not one; ``ca_cert`` checks the payload's signature."""
        # Only when a certificate is parsed: the parser loads cryptography (22 ms, python -X importtime),
        # which a check-in whose certificates ftagent.contentcache already holds does not need.
        from ftagent.entcert import EntitlementCertError, read_entitlement

        try:
            return read_entitlement(data.decode(), ca_cert=ca_cert)
        except EntitlementCertError as exc:
            return exc
        except UnicodeDecodeError as exc:
            return EntitlementCertError(f"unreadable: {exc}")

    def save(self, serial: int, cert_pem: bytes, key_pem: bytes, *, sync_dir: bool = True) -> None:
        """Write a serial's key (0600) then its certificate, each atomically."""
        with self.lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_atomic(self.key_path(serial), key_pem, mode=0o600, sync_dir=False)
            write_atomic(self.cert_path(serial), cert_pem, mode=0o644, sync_dir=sync_dir)

    def remove(self, serial: int) -> None:
        """Remove a serial's certificate, then its key."""
        with self.lock:
            remove_durably(self.cert_path(serial))
            remove_durably(self.key_path(serial))

    def clear(self) -> list[int]:
        """Remove every entitlement certificate and key (and leftovers); return removed serials."""
        with self.lock:
            return self._clear()

    def _clear(self) -> list[int]:
        if self.listener is not None:
            self.listener.certificates_cleared()
        removed = sorted(self.serials())
        if not self.directory.is_dir():
            return removed
        for path in self.directory.iterdir():
            if path.is_file() and (path.name.endswith(".pem") or ".tmp-" in path.name):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        with contextlib.suppress(OSError):
            fsync_dir(self.directory)
        return removed

    def save_from_server(self, certs: Iterable[Any], wanted: set[int] | None = None) -> list[int]:
        """Save certificate objects as the server returns them; return the serials written."""
        written: list[int] = []
        for item in certs:
            if not isinstance(item, dict):
                continue
            serial = serial_of(item.get("serial"))
            cert, key = item.get("cert"), item.get("key")
            if serial is None or not isinstance(cert, str) or not isinstance(key, str):
                logger.warning("ignoring a malformed entitlement certificate from the server")
                continue
            if wanted is not None and serial not in wanted:
                continue
            self.save(serial, cert.encode(), key.encode(), sync_dir=False)
            written.append(serial)
        if written:
            fsync_dir(self.directory)
        return written

    def refresh(self, connection: Connection, uuid: str, *, full: bool = False) -> RefreshResult:
        """Make the directory hold exactly the certificates the server lists for ``uuid``.

        ``full`` (an explicit refresh) tells the listener to fetch what it keeps from the server anew.
        """
        with self.lock:
            return self._refresh(connection, uuid, full=full)

    def _refresh(self, connection: Connection, uuid: str, *, full: bool) -> RefreshResult:
        listing = connection.get(f"consumers/{uuid}/certificates/serials")
        if not isinstance(listing, list):
            raise RemoteError(200, "unexpected answer to the certificate serial listing")
        server: set[int] = set()
        for item in listing:
            serial = serial_of(item)
            if serial is None:
                # Half a listing would delete certificates the consumer still holds: change nothing.
                raise BadAnswer(f"the certificate serial listing holds a malformed entry ({str(item)[:80]!r}); "
                                "local entitlement certificates left unchanged")
            server.add(serial)
        local = self.serials()
        missing = server - local
        result = RefreshResult(kept=sorted(server & local))
        if missing:
            certs = connection.get(
                f"consumers/{uuid}/certificates",
                params={"serials": ",".join(str(s) for s in sorted(missing))},
            )
            result.added = sorted(self.save_from_server(certs if isinstance(certs, list) else [], missing))
        if self.listener is not None:
            settled = (server & local) | set(result.added)
            self.listener.certificates_settled(connection, uuid, settled, changed=bool(result.added or local - server),
                                               full=full)
        for serial in sorted(local - server):
            self.remove(serial)
            result.removed.append(serial)
        # Orphan keys (a crash between key and certificate) of serials the server does not list.
        if self.directory.is_dir():
            for path in self.directory.glob("*-key.pem"):
                stem = path.name[: -len("-key.pem")]
                if stem.isdigit() and int(stem) not in server and not self.cert_path(int(stem)).exists():
                    remove_durably(path)
        if result.added or result.removed:
            logger.info(
                "entitlement certificates for %s: added %s, removed %s", uuid, result.added, result.removed
            )
        return result
