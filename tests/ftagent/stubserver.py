"""A scripted HTTP(S) stub server on loopback for connection tests."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    client_port: int


@dataclass
class Stub:
    """A loopback HTTP server answering from a script: a list of (status, headers, body)."""

    script: list[tuple[int, dict[str, str], Any]] = field(default_factory=list)
    default: tuple[int, dict[str, str], Any] = (200, {}, {"ok": True})
    seen: list[Seen] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    scheme: str = "http"
    closing: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"{self.scheme}://{host}:{port}/candlepin"

    def next_answer(self) -> tuple[int, dict[str, str], Any]:
        return self.script.pop(0) if self.script else self.default


def _handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            stub.seen.append(
                Seen(self.command, self.path, dict(self.headers), body, time.monotonic(), self.client_address[1])
            )
            status, headers, payload = stub.next_answer()
            if status == 0:  # hang: never answer (until the stub is shut down, or 5 s)
                stub.closing.wait(5)
                return
            data = b"" if payload is None else (payload if isinstance(payload, bytes) else json.dumps(payload).encode())
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

    return Handler


def start_stub(stub: Stub, *, context: ssl.SSLContext | None = None, port: int = 0) -> Stub:
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(stub))
    server.daemon_threads = True
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
        stub.scheme = "https"
    stub.server = server
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return stub


@pytest.fixture
def stub() -> Iterator[Stub]:
    s = start_stub(Stub())
    yield s
    assert s.server is not None
    s.closing.set()
    s.server.shutdown()
    s.server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
