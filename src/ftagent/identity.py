"""The consumer identity: ``cert.pem`` and ``key.pem`` in the identity directory.

Layout (the same trick as Kubernetes' atomic volume writer)::

    identity_dir/
        .current -> .gen-<n>        symlink, replaced atomically with os.replace
        .gen-<n>/cert.pem           the certificate
        .gen-<n>/key.pem            the private key, mode 0600
        .gen-<n>/meta.json          uuid, org, name, serial, validity, sha256 of both files,
                                    key origin and the failover record
        cert.pem -> .current/cert.pem
        key.pem  -> .current/key.pem

A new pair is written into a fresh generation directory (every file fsynced, then the directory),
then ``.current`` is switched with one ``os.replace`` and the identity directory is fsynced.  A crash
at any point leaves ``.current`` naming either the old or the new complete generation, never a mix.
Readers resolve ``.current`` once and read both files from that generation.

Loading validates the pair: with ``full=True`` (and whenever ``meta.json`` is missing or does not
match the files) the certificate and key are parsed, the key must match the certificate and the
certificate must be inside its validity period.  The fast path, used by ``ftagent identity``,
checks the files against the SHA-256 digests recorded in ``meta.json`` when the pair was validated
and written, plus the expiry recorded there, without importing ``cryptography``.
A plain ``cert.pem``/``key.pem`` pair (no ``.current``) is accepted too and fully validated.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ftagent.atomic import fsync_dir, remove_durably, replace_symlink, write_atomic
from ftagent.errors import IdentityError, NotRegistered, PermissionDenied

__all__ = ["CERT_NAME", "KEY_NAME", "Identity", "IdentityStore", "validate_pair"]

logger = logging.getLogger(__name__)

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
META_NAME = "meta.json"
CURRENT = ".current"
GEN_PREFIX = ".gen-"
CHECKIN_CACHE = "checkin.json"


@dataclass(frozen=True)
class Identity:
    """A validated identity.  ``cert_path``/``key_path`` are the stable top-level paths."""

    uuid: str
    org: str | None
    name: str | None
    serial: int
    not_before: str
    not_after: str
    cert_path: Path
    key_path: Path
    key_origin: str
    failed_over_from: str | None = None
    failover_time: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view (paths as strings)."""
        data = asdict(self)
        data["cert_path"] = str(self.cert_path)
        data["key_path"] = str(self.key_path)
        return data


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def validate_pair(
    cert_pem: bytes,
    key_pem: bytes,
    *,
    cert_label: str | None = None,
    key_label: str | None = None,
    now: datetime.datetime | None = None,
) -> dict[str, Any]:
    """Parse and check a certificate/key pair; return uuid, org, serial and validity.

    ``cert_label``/``key_label`` are the files' paths, when the pair comes from files.  Raises
    :class:`IdentityError` with a message naming what is wrong.
    """
    # Only for a full validation: cryptography costs about 30 ms (python -X importtime), which the fast
    # path of `ftagent identity` (digests recorded in meta.json) avoids.
    from ftagent import crypto

    cert_name = f"identity certificate {cert_label}" if cert_label else "the identity certificate"
    key_name = f"identity key {key_label}" if key_label else "the identity key"
    try:
        cert = crypto.load_cert(cert_pem)
    except ValueError as exc:
        raise IdentityError(f"{cert_name} is corrupt: {exc}", path=cert_label) from exc
    try:
        key = crypto.load_key(key_pem)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"{key_name} is corrupt: {exc}", path=key_label) from exc
    if crypto.public_key_der(cert) != crypto.public_key_der(key):
        raise IdentityError(
            f"{key_name} does not match {f'certificate {cert_label}' if cert_label else 'the certificate'}",
            path=key_label,
        )
    info = crypto.cert_info(cert)
    if not info.common_name:
        raise IdentityError(f"{cert_name} has no CN (consumer UUID)", path=cert_label)
    problem = crypto.check_validity(cert, now)
    if problem is not None:
        raise IdentityError(f"{cert_name} {problem}; register again with --force", path=cert_label)
    return {
        "uuid": info.common_name,
        "org": info.organization,
        "serial": info.serial,
        "not_before": info.not_before.isoformat(),
        "not_after": info.not_after.isoformat(),
    }


class IdentityStore:
    """Reads and writes the identity in ``directory``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @property
    def cert_path(self) -> Path:
        """Stable path of the certificate (a symlink into the current generation)."""
        return self.directory / CERT_NAME

    @property
    def key_path(self) -> Path:
        """Stable path of the private key."""
        return self.directory / KEY_NAME

    def _generation(self) -> Path | None:
        link = self.directory / CURRENT
        try:
            target = link.readlink()
        except FileNotFoundError:
            return None
        except PermissionError:
            raise PermissionDenied(str(self.directory)) from None
        except OSError as exc:
            raise IdentityError(f"identity directory {self.directory} is damaged: {exc}") from exc
        return self.directory / target

    def exists(self) -> bool:
        """True if an identity (valid or not) is present."""
        gen = self._generation()
        if gen is not None:
            return True
        return self.cert_path.is_file() or self.key_path.is_file()

    def _read(self) -> tuple[bytes, bytes, dict[str, Any] | None]:
        for attempt in range(5):
            gen = self._generation()
            base = gen if gen is not None else self.directory
            try:
                cert = (base / CERT_NAME).read_bytes()
            except PermissionError:
                raise PermissionDenied(str(self.cert_path)) from None
            except FileNotFoundError:
                if gen is not None and attempt < 4:
                    continue  # a concurrent writer switched generations under us
                if gen is None and not self.key_path.exists():
                    raise NotRegistered() from None
                raise IdentityError(
                    f"identity certificate {self.cert_path} is missing", path=str(self.cert_path)
                ) from None
            try:
                key = (base / KEY_NAME).read_bytes()
            except FileNotFoundError:
                if gen is not None and attempt < 4:
                    continue
                raise IdentityError(
                    f"identity key {self.key_path} is missing", path=str(self.key_path)
                ) from None
            except PermissionError:
                raise PermissionDenied(str(self.key_path)) from None
            meta: dict[str, Any] | None = None
            if gen is not None:
                try:
                    loaded = json.loads((base / META_NAME).read_text())
                    meta = loaded if isinstance(loaded, dict) else None
                except (OSError, ValueError):
                    meta = None
            return cert, key, meta
        raise IdentityError(f"identity directory {self.directory} keeps changing while being read")

    def load(self, *, full: bool = False, now: datetime.datetime | None = None) -> Identity:
        """The current identity, validated.  Raises :class:`NotRegistered` or :class:`IdentityError`."""
        try:
            self.directory.stat()
        except PermissionError:
            # A parent directory is closed to this user: "not registered" would be a lie.
            raise PermissionDenied(str(self.directory)) from None
        except OSError:
            raise NotRegistered() from None
        if not self.directory.is_dir():
            raise NotRegistered()
        cert, key, meta = self._read()
        current = now or _now()
        if (
            not full
            and meta is not None
            and meta.get("cert_sha256") == _sha256(cert)
            and meta.get("key_sha256") == _sha256(key)
            and isinstance(meta.get("uuid"), str)
        ):
            try:
                not_after = datetime.datetime.fromisoformat(str(meta["not_after"]))
            except (KeyError, ValueError):
                not_after = None
            if not_after is not None:
                if not_after <= current:
                    raise IdentityError(
                        f"identity certificate {self.cert_path} expired on {not_after.isoformat()}; "
                        "register again with --force",
                        path=str(self.cert_path),
                    )
                return self._identity(meta)
        checked = validate_pair(
            cert, key, cert_label=str(self.cert_path), key_label=str(self.key_path), now=current
        )
        merged = dict(meta or {})
        if meta is not None and meta.get("uuid") not in (None, checked["uuid"]):
            merged = {}
        merged.update(checked)
        merged.setdefault("key_origin", "unknown")
        return self._identity(merged)

    def _identity(self, meta: dict[str, Any]) -> Identity:
        failover = meta.get("failover") if isinstance(meta.get("failover"), dict) else None
        return Identity(
            uuid=str(meta["uuid"]),
            org=meta.get("org"),
            name=meta.get("name"),
            serial=int(meta.get("serial") or 0),
            not_before=str(meta.get("not_before", "")),
            not_after=str(meta.get("not_after", "")),
            cert_path=self.cert_path,
            key_path=self.key_path,
            key_origin=str(meta.get("key_origin", "unknown")),
            failed_over_from=failover.get("from") if failover else None,
            failover_time=failover.get("time") if failover else None,
        )

    def key_pem(self) -> bytes:
        """The current private key (PEM)."""
        return self._read()[1]

    def cert_pem(self) -> bytes:
        """The current certificate (PEM)."""
        return self._read()[0]

    def save(
        self,
        cert_pem: bytes,
        key_pem: bytes,
        *,
        name: str | None = None,
        key_origin: str = "local",
        failover: dict[str, Any] | None = None,
        now: datetime.datetime | None = None,
    ) -> Identity:
        """Validate and atomically install a new pair; returns the new identity."""
        checked = validate_pair(cert_pem, key_pem, now=now)
        previous: dict[str, Any] | None = None
        with contextlib.suppress(OSError, ValueError):
            gen = self._generation()
            if gen is not None:
                loaded = json.loads((gen / META_NAME).read_text())
                previous = loaded if isinstance(loaded, dict) else None
        if failover is None and previous is not None and previous.get("uuid") == checked["uuid"]:
            failover = previous.get("failover")
        if name is None and previous is not None:
            name = previous.get("name")
        meta = dict(
            checked,
            version=1,
            name=name,
            key_origin=key_origin,
            failover=failover,
            cert_sha256=_sha256(cert_pem),
            key_sha256=_sha256(key_pem),
            written=(now or _now()).isoformat(),
        )
        self._install(cert_pem, key_pem, meta)
        return self._identity(meta)

    def _install(self, cert_pem: bytes, key_pem: bytes, meta: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        gen_name = f"{GEN_PREFIX}{time.time_ns()}-{secrets.token_hex(4)}"
        gen = self.directory / gen_name
        gen.mkdir(mode=0o755)
        write_atomic(gen / KEY_NAME, key_pem, mode=0o600, sync_dir=False)
        write_atomic(gen / CERT_NAME, cert_pem, mode=0o644, sync_dir=False)
        write_atomic(gen / META_NAME, json.dumps(meta, indent=2).encode(), mode=0o644, sync_dir=False)
        fsync_dir(gen)
        # The commit point: one rename, then the directory fsync inside replace_symlink.
        replace_symlink(self.directory / CURRENT, gen_name)
        for name in (KEY_NAME, CERT_NAME):
            link = self.directory / name
            wanted = f"{CURRENT}/{name}"
            try:
                ok = link.is_symlink() and str(link.readlink()) == wanted
            except OSError:
                ok = False
            if not ok:
                replace_symlink(link, wanted)
        self._cleanup(keep=gen_name)
        logger.info("installed identity %s (serial %s) in %s", meta["uuid"], meta["serial"], self.directory)

    def _cleanup(self, keep: str | None) -> None:
        removed = False
        for entry in self.directory.iterdir():
            if entry.name == keep:
                continue
            if entry.name.startswith(GEN_PREFIX) or entry.name.startswith(f".{CURRENT}.tmp-"):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        entry.unlink()
                removed = True
            elif entry.name.startswith((f".{CERT_NAME}.tmp-", f".{KEY_NAME}.tmp-")):
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                removed = True
        if removed:
            fsync_dir(self.directory)

    def delete(self) -> None:
        """Remove the identity (the commit point is the removal of ``.current``)."""
        if not self.directory.is_dir():
            return
        remove_durably(self.directory / CURRENT)
        remove_durably(self.cert_path, self.key_path, self.checkin_path)
        self._cleanup(keep=None)
        logger.info("removed identity in %s", self.directory)

    # -- check-in cache (what was last sent to the server) -------------------------------------

    @property
    def checkin_path(self) -> Path:
        """Where the check-in cache is kept."""
        return self.directory / CHECKIN_CACHE

    def read_checkin_cache(self) -> dict[str, Any]:
        """What the last check-in sent (digests), or an empty dict."""
        try:
            data = json.loads(self.checkin_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_checkin_cache(self, data: dict[str, Any]) -> None:
        """Remember what was sent at check-in (atomic)."""
        self.checkin_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.checkin_path, json.dumps(data).encode(), mode=0o644)
