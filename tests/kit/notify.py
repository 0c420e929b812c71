"""A stand-in for systemd's notification socket: binds ``NOTIFY_SOCKET`` and records what a program
sends it (``READY=1``, ``WATCHDOG=1``...), with when it came."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

__all__ = ["NotifySocket"]


class NotifySocket:
    """A notification socket recording (time, message); ``close()`` when done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except OSError:
                continue
            self.messages.append((time.time(), data.decode()))

    def times(self, message: str) -> list[float]:
        """When each message containing the line ``message`` came."""
        return [t for t, text in list(self.messages) if message in text.splitlines()]

    def close(self) -> None:
        self._stop = True
        self.thread.join(timeout=2)
        self.sock.close()
