"""A hostile HTTPS server on loopback: answers that never end, trickle, or decompress without bound.

It serves with ftmock's own server certificate (so an agent configured for that ftmock trusts it)
and answers every request the same hostile way, whatever was asked.
"""

from __future__ import annotations

import functools
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["HOSTILE_MODES", "hostile_server"]


def _endless_chunked(conn: ssl.SSLSocket, stop: threading.Event, path: str) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b" " * 65536
    frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    conn.sendall(b"1\r\n[\r\n")  # a JSON array that never closes
    while not stop.is_set():
        conn.sendall(frame)


@functools.lru_cache(maxsize=1)
def _bomb() -> bytes:
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)  # gzip framing
    zeros = b"0" * (1024 * 1024)
    return b"".join([comp.compress(b"[")] + [comp.compress(zeros) for _ in range(256)] + [comp.flush()])


def _gzip_bomb(conn: ssl.SSLSocket, stop: threading.Event, path: str) -> None:
    body = _bomb()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)  # 256 MiB of zeros in 250 kB


def _trickle(conn: ssl.SSLSocket, stop: threading.Event, path: str) -> None:
    answer = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}'
    for byte in answer:
        if stop.wait(0.4):
            return
        conn.sendall(bytes([byte]))


def _trickle_body(conn: ssl.SSLSocket, stop: threading.Event, path: str) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n[")
    while not stop.wait(0.4):
        conn.sendall(b" ")


def _json(conn: ssl.SSLSocket, status: int, body: bytes, extra: str = "") -> None:
    conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                 f"{extra}\r\n".encode() + body)


def _bad_serials(conn: ssl.SSLSocket, stop: threading.Event, path: str) -> None:
    """A serial listing with one malformed entry among good ones; every other call succeeds empty."""
    if path.split("?")[0].endswith("/certificates/serials"):
        _json(conn, 200, b'[{"serial": {"serial": 1}}, {"serial": {"serial": "x-1"}}, {"id": 7}]')
    else:
        _json(conn, 200, b"{}")


def _deep_308(conn: ssl.SSLSocket, stop: threading.Event, path: str) -> None:
    """The failover answer, nested far deeper than a JSON parser recurses."""
    _json(conn, 308, b'{"failover": ' + b"[" * 200000 + b"]" * 200000 + b"}",
          "Location: /candlepin/consumers/elsewhere\r\n")


HOSTILE_MODES: dict[str, Callable[[ssl.SSLSocket, threading.Event, str], None]] = {
    "endless": _endless_chunked,
    "gzip-bomb": _gzip_bomb,
    "trickle-headers": _trickle,
    "trickle-body": _trickle_body,
    "bad-serials": _bad_serials,
    "deep-308": _deep_308,
}


def _read_request(conn: ssl.SSLSocket) -> str | None:
    """The request's path (its body read and dropped), or None when the client closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            missing = int(line.split(b":", 1)[1]) - len(data.split(b"\r\n\r\n", 1)[1])
            while missing > 0:
                chunk = conn.recv(min(missing, 65536))
                if not chunk:
                    return None
                missing -= len(chunk)
    return head.split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1")


@contextmanager
def hostile_server(ftmock_dir: Path, mode: str) -> Iterator[tuple[str, list[float]]]:
    """Serve ``mode`` on loopback; yields the base URL and the start times of the requests served."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(ftmock_dir / "server.pem", ftmock_dir / "server-key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    served: list[float] = []
    behave = HOSTILE_MODES[mode]
    if mode == "gzip-bomb":
        _bomb()  # made before the client's clock starts

    def serve_one(raw: socket.socket) -> None:
        try:
            with ctx.wrap_socket(raw, server_side=True) as conn:
                while (path := _read_request(conn)) is not None:
                    served.append(time.monotonic())
                    behave(conn, stop, path)
        except (OSError, ssl.SSLError):
            pass

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:  # the accept timeout included
                continue
            raw.settimeout(30)
            threading.Thread(target=serve_one, args=(raw,), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}/candlepin", served
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
