"""The ``server`` lease backend: ftmock's lease API over the agent's mutual-TLS identity.

``POST /consumers/{uuid}/lease`` with ``{"holder", "generation", "ttl"}`` grants (no generation) or
renews (the current one); ``DELETE /consumers/{uuid}/lease?holder=H&generation=G`` releases; a 409 is
:class:`~ftagent.lease.backend.LeaseRefused`.  The calls go through one
:class:`~ftagent.connection.Connection`, on the light ``http.client`` transport unless a proxy is
configured.  A renewal answered with a failover raises :class:`~ftagent.errors.FailoverRequired` to
the state machine, which follows it: :meth:`ServerBackend.handover` claims the successor's lease (as
the successor, whose certificate the answer carries) before the identity is swapped.  The server
never shows a holder id, only its fingerprint: an answer whose fingerprint is our own holder's is ours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftagent.atomic import write_atomic
from ftagent.errors import Conflict, ConnectionFailed
from ftagent.lease.backend import BackendSpec, Grant, LeaseRefused
from ftagent.lease.status import holder_fingerprint

if TYPE_CHECKING:
    from ftagent.config import Config
    from ftagent.connection import Connection
    from ftagent.identity import IdentityStore
    from ftagent.lease.settings import LeaseSettings

__all__ = ["BACKEND", "ServerBackend", "open_server_backend"]

logger = logging.getLogger(__name__)

#: ``successor_connection(cert_file, key_file)``: a connection presenting a failover successor's identity.
SuccessorConnection = Callable[[Path, Path], "Connection"]


def _holder_named(info: Mapping[str, Any], own: str) -> str | None:
    """The holder an answer names, as this instance can tell it.

    The server keeps holder ids secret and shows only ``holderFingerprint`` (the first 8 hex digits
    of the id's SHA-256): our own id when the fingerprint is ours, else the fingerprint. A server
    that still names ``holder`` is taken at its word for our own id, and shown by fingerprint else.
    """
    named, shown = info.get("holder"), info.get("holderFingerprint")
    if isinstance(named, str):
        return named if named == own else holder_fingerprint(named)
    if not isinstance(shown, str):
        return None
    return own if shown == holder_fingerprint(own) else shown


def _grant(result: Any, own: str) -> Grant:
    info = result if isinstance(result, dict) else {}
    generation, consumer = info.get("generation"), info.get("consumer")
    return Grant(holder=_holder_named(info, own),
                 generation=generation if isinstance(generation, int) else None,
                 consumer=str(consumer) if consumer else None)


def _refused(exc: Conflict, own: str) -> LeaseRefused:
    body = exc.body if isinstance(exc.body, dict) else {}
    generation = body.get("generation")
    return LeaseRefused(exc.display_message or str(exc), holder=_holder_named(body, own),
                        generation=generation if isinstance(generation, int) else None,
                        expired=bool(body.get("expired")), holder_in_use=body.get("holderInUse") is True)


class ServerBackend:
    """The lease calls over HTTPS (a :class:`~ftagent.lease.backend.LeaseBackend`).

    ``connection`` presents this instance's identity; ``successor_connection`` makes one that presents
    a failover successor's, for :meth:`handover`.
    """

    name = "server"

    def __init__(self, connection: Connection, successor_connection: SuccessorConnection, *, ttl: float,
                 key_path: Path) -> None:
        self.connection = connection
        self.successor_connection = successor_connection
        self.key_path = key_path
        self._ttl = ttl
        self.requests = 0
        #: The generation last granted through this backend; a release names it (the server
        #: releases only for the current holder and generation).
        self.generation: int | None = None

    @property
    def ttl(self) -> float:
        return self._ttl

    def _granted(self, result: Any, holder: str) -> Grant:
        granted = _grant(result, holder)
        if granted.generation is not None:
            self.generation = granted.generation
        return granted

    def _claim(self, consumer: str, body: dict[str, Any], timeout: float) -> Grant:
        self.requests += 1
        self.connection.timeout = timeout
        try:
            return self._granted(self.connection.post(f"consumers/{consumer}/lease", json=body), body["holder"])
        except Conflict as exc:
            raise _refused(exc, body["holder"]) from exc

    def grant(self, consumer: str, holder: str, timeout: float) -> Grant:
        return self._claim(consumer, {"holder": holder, "generation": None, "ttl": self._ttl}, timeout)

    def renew(self, consumer: str, holder: str, generation: int, timeout: float) -> Grant:
        return self._claim(consumer, {"holder": holder, "generation": generation, "ttl": self._ttl}, timeout)

    def handover(self, successor: Mapping[str, Any], holder: str, generation: int | None,
                 timeout: float) -> Grant:
        # Imported for a handover only: `ftagent status` loads this module, and shutil brings bz2, lzma
        # and zlib with it (about 4 ms, python -X importtime).
        import shutil
        import tempfile

        id_cert = successor.get("idCert") if isinstance(successor.get("idCert"), dict) else {}
        assert isinstance(id_cert, dict)
        cert = id_cert.get("cert")
        if not isinstance(cert, str):
            raise ConnectionFailed("the failover answer holds no certificate for the successor")
        body = {"holder": holder, "generation": generation, "ttl": self._ttl}
        # The successor's identity is not installed yet (the claim decides whether it will be): its
        # certificate goes to a private temporary directory for the TLS handshake.
        tmp = Path(tempfile.mkdtemp(prefix="ftagent-successor-"))
        try:
            cert_file = tmp / "cert.pem"
            write_atomic(cert_file, cert.encode(), durable=False)
            key_file = self.key_path
            if isinstance(id_cert.get("key"), str) and id_cert["key"]:
                key_file = tmp / "key.pem"
                write_atomic(key_file, id_cert["key"].encode(), mode=0o600, durable=False)
            with self.successor_connection(cert_file, key_file) as conn:
                conn.timeout = timeout
                self.requests += 1
                result = conn.post(f"consumers/{successor['uuid']}/lease", json=body)
        except Conflict as exc:
            raise _refused(exc, holder) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self._granted(result, holder)

    def release(self, consumer: str, holder: str, timeout: float) -> None:
        self.requests += 1
        self.connection.timeout = timeout
        generation = "" if self.generation is None else str(self.generation)
        self.connection.delete(f"consumers/{consumer}/lease", params={"holder": holder, "generation": generation})

    def close(self) -> None:
        self.connection.close()


def open_server_backend(config: Config, settings: LeaseSettings, identity: IdentityStore,
                        connection: Callable[[], Connection] | None = None) -> ServerBackend:
    """The backend for ``[server]``, on ``connection()`` (default: a light connection of its own)."""
    # Imported when the backend opens: `ftagent status` loads this module for the registry and must
    # not pay for the connection stack (ssl, http.client, email: about 17 ms, python -X importtime).
    from ftagent.connection import server_connection

    def own() -> Connection:
        return server_connection(config, cert_file=identity.cert_path, key_file=identity.key_path, retries=0,
                                 light=True)

    def successor(cert_file: Path, key_file: Path) -> Connection:
        return server_connection(config, cert_file=cert_file, key_file=key_file, retries=0, light=True)

    return ServerBackend((connection or own)(), successor, ttl=settings.ttl, key_path=identity.key_path)


#: The default backend: no keys of its own; the lease follows the identity through a failover.
BACKEND = BackendSpec(name="server", opener=open_server_backend, follows_identity=True)
