"""A TCP gate in front of a server, to cut a client off for an exact time: the outage tests and bench.

:class:`TcpGate` listens on a free loopback port and forwards each connection to the server (TLS
passes through untouched, so the client still verifies the server's certificate). :meth:`TcpGate.cut`
starts an outage until :meth:`TcpGate.restore`: either every connection is closed at once, open
and new ones (``"refuse"``, as a stopped server or a restart), or nothing passes and nobody hears
anything (``"drop"``, as a partition or a frozen server).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator

__all__ = ["TcpGate", "tcp_gate"]


def _close(sock: socket.socket) -> None:
    """Shut down at once (whatever thread waits on it), then close."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class TcpGate:
    """Forwards ``127.0.0.1:port`` to ``target``; cut and restored by the test."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._mode: str | None = None  # None: open; "refuse" or "drop": an outage
        self._open: set[socket.socket] = set()
        self._held: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._accept, name="tcp-gate", daemon=True)
        self._thread.start()

    def url(self, server_url: str) -> str:
        """``server_url`` with its port replaced by the gate's."""
        scheme, rest = server_url.split("://", 1)
        host_port, _, path = rest.partition("/")
        host = host_port.rsplit(":", 1)[0]
        return f"{scheme}://{host}:{self.port}/{path}"

    def cut(self, mode: str = "refuse") -> None:
        """Start an outage.  ``refuse``: open connections are closed and new ones closed at once (a
        stopped or restarting server); ``drop``: nothing passes either way and nothing is closed (a
        partition, a frozen server)."""
        assert mode in ("refuse", "drop")
        with self._lock:
            self._mode = mode
            doomed = list(self._open) if mode == "refuse" else []
        for sock in doomed:
            _close(sock)

    def restore(self) -> None:
        """End the outage: traffic passes again; connections accepted during a ``drop`` are closed."""
        with self._lock:
            self._mode = None
            held, self._held = self._held, []
        for sock in held:
            _close(sock)

    def close(self) -> None:
        self._stop = True
        _close(self._listener)
        self.restore()
        with self._lock:
            doomed = list(self._open)
        for sock in doomed:
            _close(sock)

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                mode = self._mode
                if mode == "drop":
                    self._held.append(client)
                    continue
            if mode == "refuse":
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                with self._lock:
                    frozen = self._mode == "drop"
                if frozen:  # a partition: the bytes wait in the kernel, nobody hears anything
                    time.sleep(0.02)  # polling for the end of the outage, not a synchronisation
                    continue
                readable, _, _ = select.select(list(peers), [], [], 0.02)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._open.discard(a)
                self._open.discard(b)
            for sock in (a, b):
                _close(sock)


@contextlib.contextmanager
def tcp_gate(target: tuple[str, int]) -> Iterator[TcpGate]:
    gate = TcpGate(target)
    try:
        yield gate
    finally:
        gate.close()
