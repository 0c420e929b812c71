"""Key, CSR and certificate helpers on top of ``cryptography``.

This module imports ``cryptography`` at import time; other modules import it lazily so that
commands which do not need it start fast.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

__all__ = [
    "CertInfo",
    "PrivateKey",
    "cert_info",
    "check_validity",
    "generate_key",
    "key_pem",
    "load_ca_certs",
    "load_cert",
    "load_key",
    "make_csr",
    "public_key_der",
    "verify_issued_by",
]

logger = logging.getLogger(__name__)

PrivateKey = PrivateKeyTypes

#: Tolerated clock difference for a freshly issued certificate's notBefore.
CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class CertInfo:
    """What ftagent needs from an identity certificate."""

    common_name: str
    organization: str | None
    serial: int
    not_before: datetime.datetime
    not_after: datetime.datetime


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A new EC P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKeyTypes) -> bytes:
    """PKCS#8 PEM of ``key``, unencrypted (protected by file permissions)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_csr(key: PrivateKeyTypes, common_name: str) -> bytes:
    """A PEM certificate signing request for ``key``; the server sets the real subject."""
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        from cryptography.hazmat.primitives.asymmetric import rsa

        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("only EC and RSA keys can sign a CSR here")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64] or "ftagent")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def load_cert(pem: bytes) -> x509.Certificate:
    """Parse one PEM certificate; raises ``ValueError``."""
    return x509.load_pem_x509_certificate(pem)


def load_key(pem: bytes) -> PrivateKeyTypes:
    """Parse an unencrypted PEM private key; raises ``ValueError`` or ``TypeError``."""
    return serialization.load_pem_private_key(pem, password=None)


def public_key_der(obj: x509.Certificate | PrivateKeyTypes) -> bytes:
    """DER SubjectPublicKeyInfo of a certificate's or a private key's public key."""
    public = obj.public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _name_attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    attrs = name.get_attributes_for_oid(oid)
    if not attrs:
        return None
    value = attrs[0].value
    return value.decode() if isinstance(value, bytes) else str(value)


def cert_info(cert: x509.Certificate) -> CertInfo:
    """Subject CN/O, serial and validity of ``cert``."""
    return CertInfo(
        common_name=_name_attr(cert.subject, NameOID.COMMON_NAME) or "",
        organization=_name_attr(cert.subject, NameOID.ORGANIZATION_NAME),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def check_validity(cert: x509.Certificate, now: datetime.datetime | None = None) -> str | None:
    """``None`` if ``cert`` is inside its validity period at ``now``, else why not."""
    current = now or datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc <= current:
        return f"expired on {cert.not_valid_after_utc.isoformat()}"
    if cert.not_valid_before_utc > current + CLOCK_SKEW:
        return f"not valid before {cert.not_valid_before_utc.isoformat()}"
    return None


def load_ca_certs(path: str | Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file, or in the regular files of a directory."""
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    certs: list[x509.Certificate] = []
    for f in files:
        try:
            certs.extend(x509.load_pem_x509_certificates(f.read_bytes()))
        except (ValueError, OSError) as exc:
            if not p.is_dir():
                raise ValueError(f"cannot read CA certificates from {f}: {exc}") from exc
            logger.debug("skipping %s in CA directory: %s", f, exc)
    return certs


def verify_issued_by(cert: x509.Certificate, cas: list[x509.Certificate]) -> x509.Certificate | None:
    """The trusted CA in ``cas`` whose signature is on ``cert``, or ``None``."""
    for ca in cas:
        if ca.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    return None
