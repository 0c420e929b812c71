"""Who is asking: users with HTTP Basic, consumers with their identity certificate."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading
from dataclasses import dataclass

from .errors import Unauthorized
from .store import Tx

__all__ = ["ROLES", "Principal", "authenticate_basic", "create_user", "set_password"]

#: Roles of organization users: an admin does anything within its org; a user registers and
#: manages the org's systems but never takes over a live identity or a lease (see
#: :mod:`ftmock.takeover`); a reporter (a virt-who or ftreport account) only checks in hypervisors
#: and reads its jobs.
ROLES = ("admin", "user", "reporter")

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a user, a consumer (by certificate), or nobody."""

    kind: str  # "user" | "consumer" | "anonymous"
    name: str = ""
    superadmin: bool = False
    owner: str | None = None
    role: str = "admin"

    @property
    def is_user(self) -> bool:
        return self.kind == "user"

    @property
    def is_consumer(self) -> bool:
        return self.kind == "consumer"

    def administers(self, owner: str | None) -> bool:
        """Whether this is a user with the admin role in ``owner`` (or the server administrator)."""
        return self.is_user and self.role == "admin" and self.owns(owner)

    def owns(self, owner: str | None) -> bool:
        """Whether this principal may act on what belongs to ``owner``; an org-less one owns nothing."""
        if self.superadmin:
            return True
        return self.owner is not None and owner is not None and self.owner == owner


ANONYMOUS = Principal("anonymous")


def _hash(password: str, salt: bytes) -> str:
    return hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT).hex()


def set_password(tx: Tx, username: str, password: str, superadmin: bool = True) -> None:
    salt = os.urandom(16)
    tx.execute(
        "INSERT INTO users(username, salt, pw_hash, superadmin) VALUES(?,?,?,?) "
        "ON CONFLICT(username) DO UPDATE SET salt=excluded.salt, pw_hash=excluded.pw_hash",
        (username, salt.hex(), _hash(password, salt), int(superadmin)),
    )
    _verified.clear()


def create_user(tx: Tx, username: str, password: str, owner: str, role: str) -> dict[str, str]:
    """Create (or reset the password, org and role of) a user of one organization."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if username == "admin":
        raise ValueError("user 'admin' is the server administrator; pick another name")
    set_password(tx, username, password, superadmin=False)
    tx.execute("UPDATE users SET owner = ?, role = ?, superadmin = 0 WHERE username = ?", (owner, role, username))
    return {"username": username, "owner": owner, "role": role}


# scrypt is deliberately slow; remember what verified so a client sending Basic auth on every request
# pays for it once per process. Keyed by a digest so plaintext passwords are not kept in memory.
_verified: dict[tuple[str, str], bool] = {}
_verified_lock = threading.Lock()


def authenticate_basic(tx: Tx, header: str) -> Principal:
    token = header.split(" ", 1)[1].strip() if " " in header else ""
    if token.startswith("b'") and token.endswith("'"):
        # python-rhsm 1.19 on Python 3 sends the repr of the bytes: Basic b'dXNlcjpwdw=='.
        token = token[2:-1]
    try:
        raw = base64.b64decode(token, validate=True).decode()
        username, password = raw.split(":", 1)
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        raise Unauthorized("Invalid Basic authentication header") from None
    row = tx.one("SELECT salt, pw_hash, superadmin, owner, role FROM users WHERE username = ?", (username,))
    if row is None:
        raise Unauthorized("Invalid Credentials")
    cache_key = (username, hashlib.sha256(f"{row['pw_hash']}:{password}".encode()).hexdigest())
    with _verified_lock:
        ok = _verified.get(cache_key)
    if ok is None:
        ok = hmac.compare_digest(_hash(password, bytes.fromhex(row["salt"])), row["pw_hash"])
        with _verified_lock:
            _verified[cache_key] = ok
    if not ok:
        raise Unauthorized("Invalid Credentials")
    return Principal("user", username, superadmin=bool(row["superadmin"]), owner=row["owner"],
                     role=row["role"] or "admin")
