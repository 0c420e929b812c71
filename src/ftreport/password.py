"""Encrypted passwords for configuration files (``encrypted_password``, ``rhsm_encrypted_password``,
``rhsm_encrypted_proxy_password``).

ftreport's own format (what ``ftreport-password`` writes): a random 256-bit key lives in a key file
readable by its owner only (0600); passwords are sealed with AES-256-GCM (authenticated: a wrong
key or altered text is detected, never mis-decrypted). The encrypted form is hex text: 12-byte
nonce followed by ciphertext and tag.

virt-who's format (what ``virt-who-password`` wrote, read so existing files work unchanged): its
key file (``/var/lib/virt-who/key``) holds two hex lines, the AES key then the IV, of which the
first 16 bytes each are used; the password is padded PKCS#7-style to 16-byte blocks, encrypted
with AES-128-CBC, and written as hex. That format is not authenticated: a wrong key is only
detected when the padding or the UTF-8 text comes out invalid, so ftreport's format is tried first.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

from ftagent.atomic import write_atomic

from .errors import PasswordError

__all__ = [
    "VIRTWHO_KEY_FILE",
    "create_key",
    "decrypt_password",
    "decrypt_virtwho_password",
    "encrypt_password",
    "load_key",
    "load_virtwho_key",
]

log = logging.getLogger(__name__)

_AAD = b"ftreport-password-v1"
_KEY_BYTES = 32
_NONCE_BYTES = 12
_BLOCK = 16
VIRTWHO_KEY_FILE = Path("/var/lib/virt-who/key")


def create_key(path: Path) -> bytes:
    """Create a new key file (0600, never overwriting an existing one) and return the key."""
    key = os.urandom(_KEY_BYTES)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise PasswordError(f"cannot create key file {path}: {exc.strerror}{_fix(exc, path)}") from exc
    try:
        # Written whole under a temporary name and linked into place: a crash never leaves a
        # half-written key that would later read as "corrupted", and an existing key is never replaced.
        created = write_atomic(path, (key.hex() + "\n").encode(), mode=0o600, exclusive=True)
    except OSError as exc:
        raise PasswordError(f"cannot write key file {path}: {exc.strerror}{_fix(exc, path)}") from exc
    if not created:
        return load_key(path)
    log.info("created password key file %s", path)
    return key


def _fix(exc: OSError, path: Path) -> str:
    """What to do about a failed key file write, as a message suffix."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"; free space on the file system holding {path.parent} (or choose another --key-file)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "; run as root or choose a writable --key-file (or [global] key_file)"
    return ""


def load_key(path: Path) -> bytes:
    """Read the key file; refuse one that others can read."""
    try:
        st = path.stat()
        text = path.read_text()
    except FileNotFoundError as exc:
        raise PasswordError(f"key file {path} does not exist (run 'ftreport password' to create it)") from exc
    except OSError as exc:
        raise PasswordError(f"cannot read key file {path}: {exc.strerror}") from exc
    _check_private(path, st)
    try:
        key = bytes.fromhex(text.strip())
    except ValueError as exc:
        raise PasswordError(f"key file {path} is corrupted") from exc
    if len(key) != _KEY_BYTES:
        raise PasswordError(f"key file {path} is corrupted")
    return key


def encrypt_password(password: str, key_file: Path) -> str:
    """Encrypt a password with the key in key_file (created on first use)."""
    # cryptography is imported on use, here and below: 9 MiB that a reporter whose configuration
    # holds no encrypted password never needs.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = create_key(key_file) if not key_file.exists() else load_key(key_file)
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, password.encode(), _AAD)
    return (nonce + sealed).hex()


def _decrypt_own(raw: bytes, key_file: Path) -> str:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = load_key(key_file)
    if len(raw) <= _NONCE_BYTES + 16:
        raise PasswordError("encrypted password is too short")
    try:
        plain = AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _AAD)
    except InvalidTag as exc:
        raise PasswordError(f"encrypted password does not match key file {key_file}") from exc
    return plain.decode()


def _check_private(path: Path, st: os.stat_result) -> None:
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PasswordError(f"key file {path} is accessible by others; it must be mode 0600")


def load_virtwho_key(path: Path) -> tuple[bytes, bytes]:
    """Read virt-who's key file: (16-byte key, 16-byte IV) from its first two hex lines."""
    try:
        st = path.stat()
        lines = path.read_text().splitlines()
    except FileNotFoundError as exc:
        raise PasswordError(f"virt-who key file {path} does not exist") from exc
    except OSError as exc:
        raise PasswordError(f"cannot read virt-who key file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise PasswordError(f"virt-who key file {path} is not text") from exc
    _check_private(path, st)
    if len(lines) < 2 or not lines[0].strip() or not lines[1].strip():
        raise PasswordError(f"virt-who key file {path} must hold two hex lines (key, then IV)")
    try:
        # virt-who keeps only the first 16 bytes of each line (older versions wrote 32).
        key, iv = bytes.fromhex(lines[0].strip())[:_BLOCK], bytes.fromhex(lines[1].strip())[:_BLOCK]
    except ValueError as exc:
        raise PasswordError(f"virt-who key file {path} is not hex text") from exc
    if len(key) != _BLOCK or len(iv) != _BLOCK:
        raise PasswordError(f"virt-who key file {path}: key and IV need 16 bytes (32 hex digits) each")
    return key, iv


def decrypt_virtwho_password(encrypted: str, key_file: Path = VIRTWHO_KEY_FILE) -> str:
    """Decrypt a value made by virt-who-password with virt-who's key file."""
    try:
        raw = bytes.fromhex(encrypted.strip())
    except ValueError as exc:
        raise PasswordError("encrypted password is not hex text") from exc
    return _decrypt_virtwho(raw, key_file)


def _decrypt_virtwho(raw: bytes, key_file: Path) -> str:
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    if not raw or len(raw) % _BLOCK:
        raise PasswordError("encrypted password is neither ftreport's format nor virt-who's "
                            "(whole 16-byte AES blocks)")
    key, iv = load_virtwho_key(key_file)
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(raw) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        plain = unpadder.update(padded) + unpadder.finalize()
        return plain.decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise PasswordError(f"encrypted password does not match virt-who key file {key_file}") from exc


def decrypt_password(encrypted: str, key_file: Path, virtwho_key_file: Path | None = None) -> str:
    """Decrypt a value made by :func:`encrypt_password` or by virt-who-password.

    ftreport's authenticated format is tried first with ``key_file``; a value that is not in it
    (wrong length, no such key file, or a tag that does not match) is then read as virt-who's
    AES-128-CBC with ``virtwho_key_file`` (virt-who's own path by default)."""
    try:
        raw = bytes.fromhex(encrypted.strip())
    except ValueError as exc:
        raise PasswordError("encrypted password is not hex text") from exc
    vw_key = virtwho_key_file or VIRTWHO_KEY_FILE
    own_error: PasswordError | None = None
    if len(raw) > _NONCE_BYTES + 16 and (key_file.exists() or not vw_key.exists()):
        try:
            return _decrypt_own(raw, key_file)
        except PasswordError as exc:
            own_error = exc
    if len(raw) % _BLOCK or not raw:
        raise own_error or PasswordError(
            f"encrypted password ({len(raw)} bytes) is neither ftreport-password's format nor "
            "virt-who-password's (whole 16-byte AES blocks)")
    if not vw_key.exists() and own_error is not None:
        raise own_error
    try:
        return _decrypt_virtwho(raw, vw_key)
    except PasswordError as exc:
        if own_error is not None:
            raise PasswordError(f"{own_error}, and {exc}") from exc
        raise
