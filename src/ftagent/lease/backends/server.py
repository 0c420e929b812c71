"""The ``server`` lease backend: ftmock's lease API over the agent's mutual-TLS identity.

``POST /consumers/{uuid}/lease`` with ``{"holder", "generation", "ttl"}`` grants (no generation) or
renews (the current one); ``DELETE /consumers/{uuid}/lease?holder=H&generation=G`` releases; a 409 is
:class:`~ftagent.lease.backend.LeaseRefused`.  Steady-state calls go through :class:`LightClient`; a
failover answer (HTTP 308) is re-sent through the full :class:`~ftagent.connection.Connection`, whose
identity swapper claims the successor's lease (:meth:`ServerBackend.handover`, via the state
machine's hook) before it swaps the identity and retries the renewal.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftagent.errors import ConfigError, Conflict, ConnectionFailed, FailoverError
from ftagent.lease.backend import Grant, LeaseRefused

if TYPE_CHECKING:
    from ftagent.config import Config
    from ftagent.connection import Connection
    from ftagent.identity import IdentityStore
    from ftagent.lease.settings import LeaseSettings

__all__ = ["LightClient", "ServerBackend", "open_server_backend", "server_args"]

logger = logging.getLogger(__name__)


class LightClient:
    """A minimal HTTPS client (``http.client`` + ``ssl``) for the steady-state renewals.

    ``requests`` and ``urllib3`` cost about 15 MB of RSS; the heartbeat only needs one keep-alive
    mutual-TLS connection for one call, so it renews through this and loads the full
    :class:`~ftagent.connection.Connection` only for a failover answer (or when a proxy is set).
    Server certificates are always verified unless ``insecure`` is set explicitly.
    """

    def __init__(self, url: str, *, ca_cert: Path | None, insecure: bool, cert_file: Path | None,
                 key_file: Path | None, user_agent: str = "ftagent-heartbeat") -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.base = parts.path.rstrip("/")
        self.ca_cert, self.insecure = ca_cert, insecure
        self.cert_file, self.key_file = cert_file, key_file
        self.user_agent = user_agent
        self._ctx: Any = None
        self._conn: Any = None

    def _context(self) -> Any:
        import ssl

        if self._ctx is None:
            ca = self.ca_cert
            ctx = ssl.create_default_context(cafile=str(ca) if ca is not None and not ca.is_dir() else None,
                                             capath=str(ca) if ca is not None and ca.is_dir() else None)
            if self.insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if self.cert_file is not None:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file or self.cert_file))
            self._ctx = ctx
        return self._ctx

    def reset(self) -> None:
        """Forget the connection and the TLS context (the identity files changed)."""
        self.close()
        self._ctx = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: Any, timeout: float,
                headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        import http.client
        import json
        import socket
        import ssl
        import time
        from functools import partial

        from ftagent.answer_limits import CHUNK, DeadlineHTTPResponse, answer_deadline, read_body
        from ftagent.errors import BadAnswer, TLSError

        url = f"{self.base}/{path}"
        payload = None if body is None else json.dumps(body).encode()
        all_headers = {"Accept": "application/json", "User-Agent": self.user_agent, "Accept-Encoding": "identity",
                       **(headers or {})}
        if payload is not None:
            all_headers["Content-Type"] = "application/json"
        # The whole call, a reconnect included, ends by `until`: a renewal answered later than the
        # caller's timeout (which stays inside the fencing margin) counts as failed, however it trickles.
        until = time.monotonic() + timeout
        for attempt in (0, 1):
            reused = self._conn is not None
            try:
                left = until - time.monotonic()
                if left <= 0:
                    raise socket.timeout(f"no answer within {timeout:g} s")
                if self._conn is None:
                    if self.https:
                        self._conn = http.client.HTTPSConnection(self.host, self.port, context=self._context(),
                                                                 timeout=left)
                    else:
                        self._conn = http.client.HTTPConnection(self.host, self.port, timeout=left)
                    self._conn.response_class = DeadlineHTTPResponse
                self._conn.timeout = left
                if self._conn.sock is not None:
                    self._conn.sock.settimeout(left)
                with answer_deadline(left, until=until):
                    self._conn.request(method, url, body=payload, headers=all_headers)
                    response = self._conn.getresponse()
                    if response.getheader("Content-Encoding", "identity").lower() != "identity":
                        raise BadAnswer(f"{method} {path}: a compressed answer was not asked for; refused")
                    data = read_body(iter(partial(response.read, CHUNK), b""), lambda: 0, what=f"{method} {path}")
                status = response.status
                if response.will_close:
                    self.close()
            except BadAnswer:
                self.close()
                raise
            except ssl.SSLError as exc:
                self.close()
                raise TLSError(f"TLS error talking to {self.host}:{self.port}: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                stale = isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError))
                if attempt == 0 and reused and stale:
                    continue  # the server closed an idle keep-alive connection: one fresh try
                raise ConnectionFailed(f"cannot talk to {self.host}:{self.port}: {exc or type(exc).__name__}") from exc
            try:
                decoded = json.loads(data) if data else None
            except (ValueError, RecursionError):
                decoded = None
            return status, decoded
        raise ConnectionFailed(f"cannot talk to {self.host}:{self.port}")  # pragma: no cover


def _grant(result: Any) -> Grant:
    info = result if isinstance(result, dict) else {}
    holder, generation, consumer = info.get("holder"), info.get("generation"), info.get("consumer")
    return Grant(holder=holder if isinstance(holder, str) else None,
                 generation=generation if isinstance(generation, int) else None,
                 consumer=str(consumer) if consumer else None)


def _refused(exc: Conflict) -> LeaseRefused:
    body = exc.body if isinstance(exc.body, dict) else {}
    holder, generation = body.get("holder"), body.get("generation")
    return LeaseRefused(exc.display_message or str(exc), holder=holder if isinstance(holder, str) else None,
                        generation=generation if isinstance(generation, int) else None,
                        expired=bool(body.get("expired")))


class ServerBackend:
    """The lease calls over HTTPS (a :class:`~ftagent.lease.backend.LeaseBackend`).

    Renewals go through :class:`LightClient`; a 308 with a failover body is re-sent through the
    full :class:`~ftagent.connection.Connection` made by ``full_connection`` whose failover handler
    validates, claims the successor's lease (the keeper's hook), swaps the identity and retries.
    """

    name = "server"

    def __init__(self, light: LightClient | None, full_connection: Callable[[], Connection], identity: IdentityStore,
                 server_args: Mapping[str, Any], *, ttl: float) -> None:
        self.light = light
        self.full_connection = full_connection
        self.identity = identity
        self.server_args = dict(server_args)
        self._ttl = ttl
        self.requests = 0
        self.failovers = 0
        # The body of the grant or renewal in flight: a failover's handover during it updates its
        # generation, because the connection retries that very body after swapping the identity.
        self._pending: dict[str, Any] | None = None
        #: The generation last granted through this backend; a release names it (the server
        #: releases only for the current holder and generation).
        self.generation: int | None = None

    @property
    def ttl(self) -> float:
        return self._ttl

    def _call(self, method: str, path: str, body: dict[str, Any] | None, params: str, timeout: float) -> Any:
        from ftagent.errors import RemoteError, error_for_status

        self.requests += 1
        if self.light is not None:
            status, data = self.light.request(method, path + params, body, timeout)
            if status < 300:
                return data
            failover = data.get("failover") if isinstance(data, dict) else None
            if status != 308 or not isinstance(failover, dict):
                if 300 <= status < 400:
                    message = data.get("displayMessage") if isinstance(data, dict) else None
                    raise RemoteError(status, message or "unexpected redirect", body=data, method=method, path=path)
                raise error_for_status(status, data, method=method, path=path)
            logger.warning("failover answer on %s %s; applying it through the full connection", method, path)
            self.failovers += 1
        conn = self.full_connection()
        conn.timeout = timeout
        try:
            if method == "DELETE":
                return conn.delete(path + params)
            return conn.post(path, json=body)
        finally:
            if self.light is not None and conn.failovers:
                self.light.reset()  # the identity files changed: new TLS context and connection

    def _claim(self, consumer: str, body: dict[str, Any], timeout: float) -> Grant:
        self._pending = body
        try:
            return self._granted(_grant(self._call("POST", f"consumers/{consumer}/lease", body, "", timeout)))
        except Conflict as exc:
            raise _refused(exc) from exc
        finally:
            self._pending = None

    def _granted(self, granted: Grant) -> Grant:
        if granted.generation is not None:
            self.generation = granted.generation
        return granted

    def grant(self, consumer: str, holder: str, timeout: float) -> Grant:
        return self._claim(consumer, {"holder": holder, "generation": None, "ttl": self._ttl}, timeout)

    def renew(self, consumer: str, holder: str, generation: int, timeout: float) -> Grant:
        return self._claim(consumer, {"holder": holder, "generation": generation, "ttl": self._ttl}, timeout)

    def handover(self, successor: Mapping[str, Any], holder: str, generation: int | None,
                 timeout: float) -> Grant:
        from ftagent.connection import Connection

        id_cert = successor.get("idCert") if isinstance(successor.get("idCert"), dict) else {}
        assert isinstance(id_cert, dict)
        cert = id_cert.get("cert")
        if not isinstance(cert, str):
            raise ConnectionFailed("the failover answer holds no certificate for the successor")
        body = {"holder": holder, "generation": generation, "ttl": self._ttl}
        tmp = Path(tempfile.mkdtemp(prefix="ftagent-successor-"))
        try:
            cert_file = tmp / "cert.pem"
            cert_file.write_text(cert)
            key_file = self.identity.key_path
            if isinstance(id_cert.get("key"), str) and id_cert["key"]:
                key_file = tmp / "key.pem"
                fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(id_cert["key"])
            args = dict(self.server_args, timeout=timeout, retries=0)
            with Connection(**args, cert_file=cert_file, key_file=key_file) as conn:
                self.requests += 1
                result = conn.post(f"consumers/{successor['uuid']}/lease", json=body)
        except Conflict as exc:
            raise _refused(exc) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        granted = self._granted(_grant(result))
        if self._pending is not None and granted.generation is not None:
            self._pending["generation"] = granted.generation  # the connection retries with this body
        return granted

    def release(self, consumer: str, holder: str, timeout: float) -> None:
        from urllib.parse import quote

        generation = "" if self.generation is None else str(self.generation)
        self._call("DELETE", f"consumers/{consumer}/lease", None,
                   f"?holder={quote(holder, safe='')}&generation={generation}", timeout)

    def close(self) -> None:
        if self.light is not None:
            self.light.close()


def server_args(config: Config) -> dict[str, Any]:
    """The :class:`~ftagent.connection.Connection` arguments of ``[server]``."""
    server = config.server
    if not server.url:
        raise ConfigError(f"no server URL: set [server] url in {config.path or 'the configuration'}")
    return {"url": server.url, "ca_cert": server.ca_cert, "insecure": server.insecure, "timeout": server.timeout,
            "proxy": server.proxy, "no_proxy": server.no_proxy}


def open_server_backend(config: Config, settings: LeaseSettings, identity: IdentityStore, *,
                        full_connection: Callable[[], Connection] | None = None) -> ServerBackend:
    """The backend for ``[server]``: renewals through :class:`LightClient` unless a proxy is set."""
    args = server_args(config)

    def no_connection() -> Connection:
        raise FailoverError("no connection for a nested failover")

    server = config.server
    light = None
    if full_connection is not None and not server.proxy:
        light = LightClient(server.url or "", ca_cert=server.ca_cert, insecure=server.insecure,
                            cert_file=identity.cert_path, key_file=identity.key_path)
    return ServerBackend(light, full_connection or no_connection, identity, args, ttl=settings.ttl)
