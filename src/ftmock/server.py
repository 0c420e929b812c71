"""The HTTPS server: TLS 1.2+, optional client certificates, keep-alive, bounded bodies, clean stop.

The standard library's threading HTTP server is enough here; what it lacks is done below: the TLS
handshake runs in the connection's own thread (a slow client cannot stall `accept`), the peer
certificate is read once per connection, and every answer carries a Content-Length so HTTP/1.1
connections are reused.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .api import Api, Request, Response
from .errors import ApiError, BadRequest, PayloadTooLarge

__all__ = ["FtmockHTTPServer", "make_tls_context"]

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024 * 1024
IDLE_TIMEOUT = 60.0


def make_tls_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=str(ca))
    # Users come with Basic auth and no certificate; consumers present their identity certificate.
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FtmockHTTPServer
    timeout = IDLE_TIMEOUT
    peer: dict[str, Any] | None = None

    def setup(self) -> None:
        super().setup()
        conn = self.connection
        assert isinstance(conn, ssl.SSLSocket)
        try:
            conn.do_handshake()
            self.peer = conn.getpeercert() or None
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake with %s failed: %s", self.client_address[0], exc)
            self.close_connection = True
            self.peer = None
            self._handshake_failed = True
        else:
            self._handshake_failed = False

    def handle(self) -> None:
        if getattr(self, "_handshake_failed", False):
            return
        try:
            super().handle()
        except (ssl.SSLError, ConnectionError, TimeoutError):
            pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.client_address[0], format % args)

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        try:
            body = self._read_body()
            request = Request(
                method=self.command, path=split.path, query=query, headers=dict(self.headers.items()),
                body=body, peer=self.peer,
            )
            response = self.server.api.handle(request)
        except ApiError as exc:
            response = Response(exc.status, exc.body())
        except Exception:
            log.exception("internal error on %s %s", self.command, split.path)
            response = Response(500, {"displayMessage": "Internal server error"})
        self._send(response)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise BadRequest("Chunked request bodies are not supported; send Content-Length")
        length_text = self.headers.get("Content-Length")
        if not length_text:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            self.close_connection = True
            raise BadRequest("Invalid Content-Length") from None
        if length > MAX_BODY:
            self.close_connection = True
            raise PayloadTooLarge(f"Request body of {length} bytes is over the limit of {MAX_BODY}")
        return self.rfile.read(length) if length else b""

    def _send(self, response: Response) -> None:
        if response.body is None:
            payload = b""
        elif isinstance(response.body, bytes):
            payload = response.body
        else:
            payload = json.dumps(response.body).encode()
        self.send_response(response.status)
        if payload:
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch


class FtmockHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], api: Api, tls: ssl.SSLContext) -> None:
        self.api = api
        self.tls = tls
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, Handler)
        self._stopping = threading.Event()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        sock.settimeout(IDLE_TIMEOUT)
        # Headers and body go out in separate writes; without this the client's delayed ACK adds 40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)  # noqa: LOG014 - called from socketserver's except block
