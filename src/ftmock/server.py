"""The HTTPS server: TLS 1.2+, optional client certificates, keep-alive, strict framing, clean stop.

The standard library's threading HTTP server is enough here; what it lacks is done below: the TLS
handshake runs in the connection's own thread (a slow client cannot stall `accept`), the peer
certificate is read once per connection, every answer carries a Content-Length so HTTP/1.1
connections are reused, and framing is strict: one non-negative Content-Length, no
Transfer-Encoding, one Authorization header, a request line and headers that arrive within
`request_timeout` of their first byte and a body within its own deadline. Anything else is a 400
(or 408) with a JSON body, and the connection is closed, so a request is never read two ways.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import ssl
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .api import PREFIX, Api, Request, Response
from .cdn import CHUNK, ContentAnswer, ContentServer
from .errors import ApiError, BadRequest, PayloadTooLarge, RequestTimeout

__all__ = ["DEFAULT_REQUEST_TIMEOUT", "FtmockHTTPServer", "make_tls_context"]

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024 * 1024
IDLE_TIMEOUT = 60.0
DEFAULT_REQUEST_TIMEOUT = 10.0
# A body gets the request timeout plus one second per MiB: a slow but steady client still fits.
BODY_BYTES_PER_SECOND = 1024 * 1024
# socket.timeout is TimeoutError only from Python 3.10 on.
_TIMEOUTS = (socket.timeout, TimeoutError)


def make_tls_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=str(ca))
    # Users come with Basic auth and no certificate; consumers present their identity certificate.
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


class _DeadlineReader(io.RawIOBase):
    """Socket reads under a deadline for a whole piece of a request, not only per read.

    While idle (between requests) a read waits up to the idle timeout; the first bytes of a request
    start the header deadline (``arm``), and the handler sets a body deadline once the headers are
    in. A trickling client therefore cannot hold its thread longer than those deadlines.
    """

    def __init__(self, sock: socket.socket, idle: float) -> None:
        super().__init__()
        self.sock = sock
        self.idle = idle
        self.deadline: float | None = None
        self.arm: float | None = None
        self.received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is None:
            timeout = self.idle
        else:
            timeout = self.deadline - time.monotonic()
            if timeout <= 0:
                raise socket.timeout("request deadline passed")
        self.sock.settimeout(timeout)
        n = self.sock.recv_into(buffer)
        if n and self.deadline is None and self.arm is not None:
            self.deadline = time.monotonic() + self.arm
            self.arm = None
        self.received += n
        return n


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FtmockHTTPServer
    timeout = IDLE_TIMEOUT
    peer: dict[str, Any] | None = None
    peer_der: bytes | None = None
    _reader: _DeadlineReader | None = None

    def setup(self) -> None:
        super().setup()
        conn = self.connection
        assert isinstance(conn, ssl.SSLSocket)
        try:
            conn.settimeout(self.server.request_timeout)  # a dribbled handshake ends too
            conn.do_handshake()
            self.peer = conn.getpeercert() or None
            self.peer_der = conn.getpeercert(binary_form=True) if self.peer else None
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake with %s failed: %s", self.client_address[0], exc)
            self.close_connection = True
            self.peer = None
            self._handshake_failed = True
        else:
            self._handshake_failed = False
            self._reader = _DeadlineReader(conn, IDLE_TIMEOUT)
            self.rfile.close()
            self.rfile = io.BufferedReader(self._reader)

    def handle(self) -> None:
        if getattr(self, "_handshake_failed", False):
            return
        try:
            super().handle()
        except (ssl.SSLError, ConnectionError, *_TIMEOUTS):
            pass

    def handle_one_request(self) -> None:
        reader = self._reader
        assert reader is not None
        reader.deadline, reader.arm = None, self.server.request_timeout
        started = reader.received
        # What an error answer needs before the request line is parsed (parse_request resets them).
        self.requestline, self.request_version, self.command = "", self.protocol_version, ""
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            if not self._check_framing():
                return
            self._dispatch()
            self.wfile.flush()
        except _TIMEOUTS:
            self.close_connection = True
            if reader.received > started:  # a request had begun: say why it ends
                self._answer_error(408, "Request not received in time")

    def _answer_error(self, status: int, message: str) -> None:
        self.close_connection = True
        try:
            error = ApiError(message)
            error.status = status
            self._send(Response(status, error.body()))
        except (OSError, ValueError):
            pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's errors (bad request line, version, headers) as JSON, and never a 5xx."""
        if code >= 500:  # 501 unknown method, 505 HTTP version: the client's fault, so a 4xx
            code = 405 if code == 501 else 400
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Bad request"
        if not getattr(self, "command", None):
            self.command = ""
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = self.protocol_version  # answer with a status line and headers
        self.log_error("code %d, message %s", code, message)
        self._answer_error(code, message or phrase)

    def _check_framing(self) -> bool:
        """One non-negative Content-Length, no Transfer-Encoding, one Authorization: else 400."""
        lengths = self.headers.get_all("Content-Length") or []
        problem = None
        if self.request_version == "HTTP/0.9":
            problem = "HTTP/0.9 requests are not supported"
        elif len(lengths) > 1:
            problem = "More than one Content-Length header"
        elif self.headers.get_all("Transfer-Encoding"):
            problem = "Transfer-Encoding is not supported; send Content-Length"
        elif lengths and not (lengths[0].strip().isascii() and lengths[0].strip().isdigit()):
            problem = "Invalid Content-Length"
        elif len(self.headers.get_all("Authorization") or []) > 1:
            problem = "More than one Authorization header"
        if problem is None:
            return True
        self.send_error(400, problem)
        return False

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.client_address[0], format % args)

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        content = self.server.content
        if content is not None and split.path != PREFIX and not split.path.startswith(PREFIX + "/"):
            self._dispatch_content(content, split.path)
            return
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

    def _dispatch_content(self, content: ContentServer, path: str) -> None:
        """A request for the content server (anything outside the API's prefix)."""
        try:
            self._read_body()
            answer = content.answer(self.command, path, dict(self.headers.items()), self.peer_der)
        except ApiError as exc:
            self._send(Response(exc.status, exc.body()))
            return
        except Exception:
            log.exception("internal error on content %s %s", self.command, path)
            self._send(Response(500, {"displayMessage": "Internal server error"}))
            return
        self._send_content(answer)

    def _send_content(self, answer: ContentAnswer) -> None:
        self.connection.settimeout(IDLE_TIMEOUT)
        length = answer.length if answer.file is not None else len(answer.body)
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        if answer.file is None:
            self.wfile.write(answer.body)
            return
        with open(answer.file, "rb") as fh:
            fh.seek(answer.offset)
            left = answer.length
            while left > 0:
                chunk = fh.read(min(CHUNK, left))
                if not chunk:  # the file shrank under us: the client sees a short body and retries
                    self.close_connection = True
                    return
                self.wfile.write(chunk)
                left -= len(chunk)

    def _read_body(self) -> bytes:
        length_text = self.headers.get("Content-Length")
        if not length_text:
            return b""
        length = int(length_text)  # checked by _check_framing
        if length > MAX_BODY:
            self.close_connection = True
            raise PayloadTooLarge(f"Request body of {length} bytes is over the limit of {MAX_BODY}")
        if not length:
            return b""
        reader = self._reader
        assert reader is not None
        reader.deadline = time.monotonic() + self.server.request_timeout + length / BODY_BYTES_PER_SECOND
        try:
            body = self.rfile.read(length)
        except _TIMEOUTS:
            self.close_connection = True
            raise RequestTimeout(f"Request body of {length} bytes not received in time") from None
        if len(body) < length:
            self.close_connection = True
            raise BadRequest(f"Request body ended after {len(body)} of {length} bytes")
        return body

    def _send(self, response: Response) -> None:
        # The reads left the socket with what remained of a request deadline; writing gets its own.
        self.connection.settimeout(IDLE_TIMEOUT)
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


class FtmockHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    api: Api
    tls: ssl.SSLContext
    content: ContentServer | None = None

    def __init__(self, address: tuple[str, int], request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        """Bind and listen at once (OSError if the address is taken); :meth:`open` gives it the API
        and the TLS context before it serves."""
        self.request_timeout = request_timeout
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, Handler)
        self._stopping = threading.Event()

    def open(self, api: Api, tls: ssl.SSLContext, content: ContentServer | None = None) -> None:
        self.api = api
        self.tls = tls
        self.content = content

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        sock.settimeout(IDLE_TIMEOUT)
        # Headers and body go out in separate writes; without this the client's delayed ACK adds 40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)  # noqa: LOG014 - called from socketserver's except block
