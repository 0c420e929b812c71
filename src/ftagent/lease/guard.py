"""One heartbeat per guest: a second ``ftagent heartbeat`` refuses to start.

Two heartbeats share a holder id, so the second one's renewals look legitimate to the server, and
when it stops it releases the lease under the first one's feet (which then fences for a lease it
never lost).  The guard is an exclusive ``flock`` on ``<status file>.pid``, held for the life of
the process (the descriptor is close-on-exec, so fencing hooks do not inherit it); the file also
names the running pid for the refusal message.  The kernel drops the lock when the process dies,
so a crash never leaves a stale guard behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from ftagent.errors import LockTimeout, PermissionDenied

__all__ = ["HeartbeatRunning", "SingleInstance", "guard_path"]


class HeartbeatRunning(LockTimeout):
    """Another ``ftagent heartbeat`` runs for this status file (exit 69)."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


def guard_path(status_file: Path) -> Path:
    """``lease.json`` -> ``lease.pid``."""
    return status_file.with_suffix(".pid") if status_file.suffix else status_file.with_name(
        status_file.name + ".pid")


class SingleInstance:
    """The heartbeat's guard; :meth:`acquire` raises :class:`HeartbeatRunning` when another one runs."""

    def __init__(self, status_file: Path) -> None:
        self.path = guard_path(status_file)
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except PermissionError:
            raise PermissionDenied(str(self.path), "create") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid: int | None = None
            with contextlib.suppress(OSError, ValueError):
                pid = int(os.pread(fd, 32, 0).decode().strip())
            os.close(fd)
            running = f" (pid {pid})" if pid else ""
            raise HeartbeatRunning(
                f"ftagent heartbeat is already running{running}; refusing to start a second one, which would "
                f"renew and release the same lease (stop it first: systemctl stop ftagent-heartbeat)", pid
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)
