"""The systemd notification protocol (``sd_notify``) in a few lines, without a dependency.

Messages go as one datagram to the ``AF_UNIX`` socket named by ``NOTIFY_SOCKET`` (a leading ``@``
means the abstract namespace).  Without ``NOTIFY_SOCKET`` every call is a no-op, so it is safe to
call everywhere.  The one notifier of the project: ``ftagent heartbeat`` and the ``ftreport`` daemon
both use it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier", "watchdog_interval"]

logger = logging.getLogger(__name__)


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """The service's watchdog timeout in seconds (``WATCHDOG_USEC``), or ``None`` when not armed."""
    environ = os.environ if env is None else env
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


class Notifier:
    """Sends ``READY=1``, ``WATCHDOG=1``, ``STATUS=...`` and friends to the service manager.

    The address is ``NOTIFY_SOCKET`` of ``env`` (default: the process environment) unless
    ``address`` names one.
    """

    def __init__(self, env: Mapping[str, str] | None = None, *, address: str | None = None) -> None:
        environ = os.environ if env is None else env
        self.address: str | None = address or environ.get("NOTIFY_SOCKET") or None
        self._sock: socket.socket | None = None
        self.sent = 0

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify."""
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` as one message; ``False`` (logged once per failure) if it could not be sent."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), target)
        except OSError as exc:
            logger.debug("sd_notify to %s failed: %s", self.address, exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``, with a ``STATUS=`` line when given."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        """``RELOADING=1``: the service re-reads its configuration (``READY=1`` follows)."""
        return self.notify("RELOADING=1")

    def stopping(self) -> bool:
        """``STOPPING=1``: the service is shutting down."""
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        """``STATUS=text``: a one-line status that ``systemctl status`` shows."""
        return self.notify(f"STATUS={text}")

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
