"""Encrypted passwords for configuration files (``encrypted_password``, ``rhsm_encrypted_password``).

A random 256-bit key lives in a key file readable by its owner only (0600); passwords are sealed
with AES-256-GCM (authenticated: a wrong key or altered text is detected, never mis-decrypted).
The encrypted form is hex text: 12-byte nonce followed by ciphertext and tag.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from .errors import PasswordError

__all__ = ["create_key", "decrypt_password", "encrypt_password", "load_key"]

log = logging.getLogger(__name__)

_AAD = b"ftreport-password-v1"
_KEY_BYTES = 32
_NONCE_BYTES = 12


def create_key(path: Path) -> bytes:
    """Create a new key file (0600, never overwriting an existing one) and return the key."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = os.urandom(_KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_key(path)
    except OSError as exc:
        raise PasswordError(f"cannot create key file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    log.info("created password key file %s", path)
    return key


def load_key(path: Path) -> bytes:
    """Read the key file; refuse one that others can read."""
    try:
        st = path.stat()
        text = path.read_text()
    except FileNotFoundError as exc:
        raise PasswordError(f"key file {path} does not exist (run 'ftreport password' to create it)") from exc
    except OSError as exc:
        raise PasswordError(f"cannot read key file {path}: {exc.strerror}") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PasswordError(f"key file {path} is accessible by others; it must be mode 0600")
    try:
        key = bytes.fromhex(text.strip())
    except ValueError as exc:
        raise PasswordError(f"key file {path} is corrupted") from exc
    if len(key) != _KEY_BYTES:
        raise PasswordError(f"key file {path} is corrupted")
    return key


def encrypt_password(password: str, key_file: Path) -> str:
    """Encrypt a password with the key in key_file (created on first use)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = create_key(key_file) if not key_file.exists() else load_key(key_file)
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, password.encode(), _AAD)
    return (nonce + sealed).hex()


def decrypt_password(encrypted: str, key_file: Path) -> str:
    """Decrypt a value made by :func:`encrypt_password`."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = load_key(key_file)
    try:
        raw = bytes.fromhex(encrypted.strip())
    except ValueError as exc:
        raise PasswordError("encrypted password is not hex text") from exc
    if len(raw) <= _NONCE_BYTES + 16:
        raise PasswordError("encrypted password is too short")
    try:
        plain = AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _AAD)
    except InvalidTag as exc:
        raise PasswordError(f"encrypted password does not match key file {key_file}") from exc
    return plain.decode()
