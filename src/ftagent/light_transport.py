"""The light :class:`~ftagent.transport.Transport`: ``http.client`` and ``ssl``, nothing else.

The heartbeat renews a lease every few seconds for weeks; ``requests`` and ``urllib3`` would cost it
about 15 MB of memory for one keep-alive mutual-TLS connection and one call at a time.  This
transport keeps that one connection, verifies the server (always, unless ``insecure`` is set
explicitly), asks for uncompressed answers, makes no retries except one fresh connection when the
server closed an idle keep-alive one, and knows no proxy (``[server] proxy`` selects the
``requests`` transport instead).  The ``etcd`` lease backend talks to etcd's JSON gateway through it.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

from ftagent.answer_limits import CHUNK, DeadlineHTTPResponse, answer_deadline, read_body
from ftagent.errors import BadAnswer, ConfigError, ConnectionFailed, TLSError
from ftagent.transport import Answer, ca_directory_pem

__all__ = ["LightTransport"]


class LightTransport:
    """One keep-alive HTTP(S) connection to the server at ``url`` (a :class:`~ftagent.transport.Transport`).

    ``ca_cert`` is a PEM file or a directory of them (default: the system's trust store);
    ``cert_file``/``key_file`` the client identity for mutual TLS, read again after :meth:`reset`.
    """

    def __init__(self, url: str, *, ca_cert: Path | str | None = None, insecure: bool = False,
                 cert_file: Path | str | None = None, key_file: Path | str | None = None,
                 user_agent: str = "ftagent-heartbeat") -> None:
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.base = parts.path.rstrip("/")
        self.ca_cert = Path(ca_cert) if ca_cert is not None else None
        self.insecure = insecure
        self.cert_file = Path(cert_file) if cert_file is not None else None
        self.key_file = Path(key_file) if key_file is not None else None
        self.user_agent = user_agent
        self._ctx: ssl.SSLContext | None = None
        self._conn: http.client.HTTPConnection | None = None
        self._opened = 0

    @property
    def connections_opened(self) -> int:
        return self._opened

    def _context(self) -> ssl.SSLContext:
        if self._ctx is None:
            ca = self.ca_cert
            if ca is not None and ca.is_dir():
                try:
                    ctx = ssl.create_default_context(cadata=ca_directory_pem(ca))
                except (ssl.SSLError, ValueError) as exc:
                    raise ConfigError(f"bad CA certificate in directory {ca}: {exc}") from exc
            else:
                ctx = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
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

    def _connect(self, left: float) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self.https:
            conn = http.client.HTTPSConnection(self.host, self.port, context=self._context(), timeout=left)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=left)
        conn.response_class = DeadlineHTTPResponse
        self._opened += 1
        return conn

    def send(self, method: str, target: str, *, body: bytes | None, headers: Mapping[str, str],
             timeout: float) -> Answer:
        url = f"{self.base}/{target.lstrip('/')}"
        what = f"{method} {target.split('?', 1)[0]}"
        all_headers = {"Accept": "application/json", "User-Agent": self.user_agent, "Accept-Encoding": "identity",
                       **headers}
        # The whole call, a reconnect included, ends by `until`: an answer later than the caller's
        # timeout (which the lease keeps inside its fencing margin) counts as failed, however it trickles.
        until = time.monotonic() + timeout
        for attempt in (0, 1):
            reused = self._conn is not None
            try:
                left = until - time.monotonic()
                if left <= 0:
                    raise socket.timeout(f"no answer within {timeout:g} s")
                if self._conn is None:
                    self._conn = self._connect(left)
                conn = self._conn
                conn.timeout = left
                if conn.sock is not None:
                    conn.sock.settimeout(left)
                with answer_deadline(left, until=until):
                    conn.request(method, url, body=body, headers=all_headers)
                    response = conn.getresponse()
                    if (response.getheader("Content-Encoding") or "identity").lower() != "identity":
                        raise BadAnswer(f"{what}: a compressed answer was not asked for; refused")
                    data = read_body(iter(partial(response.read, CHUNK), b""), lambda: 0, what=what)
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
            return Answer(response.status, data, {name.lower(): value for name, value in response.getheaders()})
        raise ConnectionFailed(f"cannot talk to {self.host}:{self.port}")  # pragma: no cover
