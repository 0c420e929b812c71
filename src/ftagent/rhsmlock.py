"""subscription-manager's lock, ``/run/rhsm/cert.pid``, taken the way subscription-manager takes it.

subscription-manager, rhsmcertd and their dnf plugin serialise their writes to ``/etc/pki/consumer``,
``/etc/pki/entitlement`` and ``redhat.repo`` on one file, and its protocol is not "hold an flock":

- the lock is *held* while the file names a live process: its PID is the file's content;
- to take it, a process locks the file (``flock``) only for the moment it reads the PID and, when
  the file is empty, names itself, names a process that is gone, or names it already, writes its own
  PID; otherwise it lets go and looks again half a second later;
- to release it, the holder locks the file and removes it.

ftagent's ``rhsm`` layout writes those same files, so every write there happens under this lock,
taken with this protocol: a subscription-manager run waits for ftagent and ftagent for it. One
:class:`RhsmLock` per path and process (:func:`rhsm_lock`), re-entrant, so that a command holding it
for its whole run and the stores taking it around each write share it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from types import TracebackType
from typing import Any

from ftagent.errors import ConfigError, LockTimeout

__all__ = ["DEFAULT_PATH", "RhsmLock", "rhsm_lock", "write_lock"]

logger = logging.getLogger(__name__)

DEFAULT_PATH = Path("/run/rhsm/cert.pid")
#: How long to wait before looking again, as subscription-manager does.
POLL = 0.5


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user's process
    return True


class RhsmLock:
    """The lock at ``path``: re-entrant within this process, waiting up to ``timeout`` seconds."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._mutex = threading.RLock()
        self._depth = 0

    @property
    def held(self) -> bool:
        return self._depth > 0

    def _holder(self, fd: int) -> int | None:
        raw = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        return int(raw) if raw.isdigit() else None

    def _try_take(self) -> int | None:
        """Name ourselves in the file unless a live process is named there; that process's PID, or None."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot open subscription-manager's lock {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held only for this read and write, by every party
            holder = self._holder(fd)
            if holder is not None and holder != os.getpid() and _alive(holder):
                return holder
            mine = str(os.getpid()).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, mine, 0)
            return None
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def acquire(self) -> None:
        """Take the lock, waiting while another live process holds it; :class:`LockTimeout` after ``timeout``."""
        self._mutex.acquire()
        if self._depth > 0:
            self._depth += 1
            return
        try:
            deadline = time.monotonic() + self.timeout
            announced = None
            while True:
                holder = self._try_take()
                if holder is None:
                    break
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"process {holder} (subscription-manager?) holds {self.path}; gave up after "
                                      f"{self.timeout:g} s")
                if announced != holder:
                    logger.info("waiting for subscription-manager's lock %s, held by process %s", self.path, holder)
                    announced = holder
                time.sleep(POLL)  # the lock's own protocol: look again, as its other users do
        except BaseException:
            self._mutex.release()
            raise
        self._depth = 1
        logger.debug("took subscription-manager's lock %s", self.path)

    def release(self) -> None:
        """Release one level; the last one removes the file, as subscription-manager does."""
        if self._depth == 0:
            return
        self._depth -= 1
        try:
            if self._depth > 0:
                return
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if self._holder(fd) == os.getpid():
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
            finally:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        finally:
            self._mutex.release()

    def __enter__(self) -> RhsmLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


_locks: dict[Path, RhsmLock] = {}
_locks_mutex = threading.Lock()


def rhsm_lock(path: str | os.PathLike[str], timeout: float = 60.0) -> RhsmLock:
    """The one :class:`RhsmLock` of this process for ``path`` (its timeout: the latest asked for)."""
    key = Path(path)
    with _locks_mutex:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = RhsmLock(key, timeout)
        lock.timeout = timeout
        return lock


def write_lock(agent: Any) -> AbstractContextManager[Any]:
    """What a write of an ``[agent]`` configuration's files happens under: subscription-manager's lock
    in the ``rhsm`` layout, nothing in ftagent's own (its files are its alone)."""
    if getattr(agent, "rhsm", False):
        return rhsm_lock(agent.rhsm_lock, agent.lock_timeout)
    return nullcontext()
