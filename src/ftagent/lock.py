"""An inter-process lock (``fcntl.flock``) so that a cron ``checkin`` and an interactive command
never interleave their writes to the identity and entitlement directories."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path
from types import TracebackType

from ftagent.errors import ConfigError, LockTimeout

__all__ = ["FileLock"]

logger = logging.getLogger(__name__)


class FileLock:
    """An exclusive lock on ``path``; re-entrant within one object.

    Waits up to ``timeout`` seconds (polling), then raises :class:`LockTimeout`.
    """

    def __init__(self, path: str | os.PathLike[str], timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._fd: int | None = None
        self._depth = 0

    def acquire(self) -> None:
        """Take the lock (blocking up to ``timeout``)."""
        if self._fd is not None:
            self._depth += 1
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot open lock file {self.path}: {exc.strerror}") from exc
        deadline = time.monotonic() + self.timeout
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = ""
                    with contextlib.suppress(OSError, ValueError):
                        holder = os.pread(fd, 32, 0).decode().strip()
                    os.close(fd)
                    raise LockTimeout(
                        f"another ftagent process{' (pid ' + holder + ')' if holder else ''} "
                        f"holds {self.path}; gave up after {self.timeout:g} s"
                    ) from None
                if not announced:
                    logger.info("waiting for lock %s", self.path)
                    announced = True
                time.sleep(0.05)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        self._depth = 1

    def release(self) -> None:
        """Release one level of the lock."""
        if self._fd is None:
            return
        self._depth -= 1
        if self._depth > 0:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
