"""The identity in subscription-manager's layout: ``cert.pem`` and ``key.pem`` in ``/etc/pki/consumer``.

In ``[agent] layout = rhsm`` the identity lives where subscription-manager, python-rhsm, insights-client
and the other tools of a RHEL system read it, as those files and nothing else: no generation
directories, no symlinks, no record beside them. Both files have subscription-manager's mode, 0640.
What ftagent keeps about the identity (its name, where the key came from, the failover record, the
check-in cache) goes to its own ``[agent] state_dir`` (``identity.json``, ``checkin.json``).

Two files cannot be replaced in one rename, so a new pair is first written complete into
``state_dir/pending-identity/``; then the key and the certificate are each replaced atomically (a file
whose content does not change is left alone: a failover keeps the key), the record is written and the
pending copy removed. A crash in between leaves the pending copy, and the next load finishes the
installation before it reads, so the pair on disk never stays mismatched. Every write happens under
subscription-manager's lock (:mod:`ftagent.rhsmlock`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftagent.atomic import fsync_dir, remove_durably, write_atomic
from ftagent.errors import FtagentError
from ftagent.identity import CERT_NAME, KEY_NAME, IdentityStore
from ftagent.rhsmlock import RhsmLock, rhsm_lock

if TYPE_CHECKING:
    import datetime

    from ftagent.identity import Identity

__all__ = ["ID_MODE", "RhsmIdentityStore", "identity_store"]

logger = logging.getLogger(__name__)

#: subscription-manager's mode for both identity files (its ID_CERT_PERMS).
ID_MODE = 0o640
RECORD = "identity.json"
CHECKIN = "checkin.json"
PENDING = "pending-identity"
META = "meta.json"


class RhsmIdentityStore(IdentityStore):
    """The identity as two plain files in ``directory``; ftagent's record in ``state_dir``."""

    def __init__(self, directory: str | Path, state_dir: str | Path, lock: RhsmLock) -> None:
        super().__init__(directory)
        self.state_dir = Path(state_dir)
        self.lock = lock

    @classmethod
    def for_config(cls, agent: Any) -> RhsmIdentityStore:
        """The store of an ``[agent]`` configuration (:class:`ftagent.config.AgentConfig`)."""
        return cls(agent.identity_dir, agent.state_dir, rhsm_lock(agent.rhsm_lock, agent.lock_timeout))

    @property
    def _pending(self) -> Path:
        return self.state_dir / PENDING

    def _generation(self) -> Path | None:
        return None  # no generations here: the two files are the identity

    def _read(self) -> tuple[bytes, bytes, dict[str, Any] | None]:
        cert, key, _ = super()._read()
        try:
            loaded = json.loads((self.state_dir / RECORD).read_text())
        except (OSError, ValueError):
            loaded = None
        return cert, key, loaded if isinstance(loaded, dict) else None

    def load(self, *, full: bool = False, now: datetime.datetime | None = None) -> Identity:
        self._finish_pending()
        return super().load(full=full, now=now)

    def exists(self) -> bool:
        return self.cert_path.is_file() or self.key_path.is_file() or (self._pending / CERT_NAME).is_file()

    # -- writing ------------------------------------------------------------------------------

    def _install(self, cert_pem: bytes, key_pem: bytes, meta: dict[str, Any]) -> None:
        with self.lock:
            self._pending.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(self._pending / KEY_NAME, key_pem, mode=0o600, sync_dir=False)
            write_atomic(self._pending / CERT_NAME, cert_pem, mode=0o600, sync_dir=False)
            write_atomic(self._pending / META, json.dumps(meta, indent=2).encode(), mode=0o600)
            self._apply_pending()
        logger.info("installed identity %s (serial %s) in %s", meta["uuid"], meta["serial"], self.directory)

    def _apply_pending(self) -> None:
        """Put the pending pair in place (each file atomically, unchanged ones left alone), then forget it."""
        pending = self._pending
        cert_pem = (pending / CERT_NAME).read_bytes()
        key_pem = (pending / KEY_NAME).read_bytes()
        meta = (pending / META).read_bytes()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        for path, data in ((self.key_path, key_pem), (self.cert_path, cert_pem)):
            try:
                same = path.read_bytes() == data and (path.stat().st_mode & 0o777) == ID_MODE
            except OSError:
                same = False
            if not same:
                write_atomic(path, data, mode=ID_MODE, sync_dir=False)
        fsync_dir(self.directory)
        write_atomic(self.state_dir / RECORD, meta, mode=0o644)
        remove_durably(pending / META, pending / CERT_NAME, pending / KEY_NAME)
        with contextlib.suppress(OSError):
            pending.rmdir()

    def _finish_pending(self) -> None:
        """An installation interrupted by a crash: finish it (when this process may write there)."""
        if not (self._pending / META).is_file():
            return
        try:
            with self.lock:
                if (self._pending / META).is_file():
                    logger.warning("finishing the identity installation a crash interrupted (%s)", self._pending)
                    self._apply_pending()
        except (OSError, FtagentError) as exc:
            logger.warning("cannot finish the interrupted identity installation in %s: %s", self._pending, exc)

    def delete(self) -> None:
        """Remove the identity files as subscription-manager's unregister does, and ftagent's record."""
        with self.lock:
            remove_durably(self.key_path, self.cert_path)
            remove_durably(self.state_dir / RECORD, self.checkin_path)
            remove_durably(self._pending / META, self._pending / CERT_NAME, self._pending / KEY_NAME)
        logger.info("removed identity in %s", self.directory)

    @property
    def checkin_path(self) -> Path:
        return self.state_dir / CHECKIN


def identity_store(config: Any) -> IdentityStore:
    """The identity store of a configuration (:class:`ftagent.config.Config`): ftagent's own, or in the
    ``rhsm`` layout subscription-manager's files."""
    if config.agent.rhsm:
        return RhsmIdentityStore.for_config(config.agent)
    return IdentityStore(config.agent.identity_dir)
