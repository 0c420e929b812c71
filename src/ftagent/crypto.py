"""Key, CSR and certificate helpers on top of ``cryptography``.

This module imports ``cryptography`` at import time; other modules import it lazily so that
commands which do not need it start fast.

It is also the one place that bridges ``cryptography`` versions: RHEL 9 ships 36.0, which lacks
the timezone-aware validity properties (42), ``load_pem_x509_certificates`` (39),
``verify_directly_issued_by`` (40) and the ``PrivateKeyTypes`` name (40). The helpers below use
the newer API where it exists and an equivalent built from 36's API elsewhere.
"""

from __future__ import annotations

import datetime
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
else:
    try:
        from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
    except ImportError:  # cryptography < 40
        from cryptography.hazmat.primitives.asymmetric.types import PRIVATE_KEY_TYPES as PrivateKeyTypes

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
    "not_valid_after",
    "not_valid_before",
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
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
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


def not_valid_before(cert: x509.Certificate) -> datetime.datetime:
    """The certificate's notBefore as an aware UTC datetime."""
    if hasattr(cert, "not_valid_before_utc"):
        return cert.not_valid_before_utc
    # cryptography < 42 returns a naive datetime that is UTC.
    return cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)


def not_valid_after(cert: x509.Certificate) -> datetime.datetime:
    """The certificate's notAfter as an aware UTC datetime."""
    if hasattr(cert, "not_valid_after_utc"):
        return cert.not_valid_after_utc
    return cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


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
        not_before=not_valid_before(cert),
        not_after=not_valid_after(cert),
    )


def check_validity(cert: x509.Certificate, now: datetime.datetime | None = None) -> str | None:
    """``None`` if ``cert`` is inside its validity period at ``now``, else why not."""
    current = now or datetime.datetime.now(datetime.timezone.utc)
    not_before, not_after = not_valid_before(cert), not_valid_after(cert)
    if not_after <= current:
        return f"expired on {not_after.isoformat()}"
    if not_before > current + CLOCK_SKEW:
        return f"not valid before {not_before.isoformat()}"
    return None


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def _load_pem_certs(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle; ``ValueError`` if there is none or one is malformed."""
    if hasattr(x509, "load_pem_x509_certificates"):
        return x509.load_pem_x509_certificates(data)
    blocks = _PEM_CERT.findall(data)
    if not blocks:
        raise ValueError("no PEM certificate found")
    return [x509.load_pem_x509_certificate(b) for b in blocks]


def load_ca_certs(path: str | Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file, or in the regular files of a directory."""
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    certs: list[x509.Certificate] = []
    for f in files:
        try:
            certs.extend(_load_pem_certs(f.read_bytes()))
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
            _verify_signature(cert, ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    return None


def _verify_signature(cert: x509.Certificate, ca: x509.Certificate) -> None:
    """Raise ``InvalidSignature`` (or ``ValueError``/``TypeError``) unless ``ca``'s key signed ``cert``."""
    if hasattr(cert, "verify_directly_issued_by"):
        cert.verify_directly_issued_by(ca)
        return
    # cryptography < 40: check the signature over the TBS bytes with the issuer's key by hand.
    public = ca.public_key()
    algorithm = cert.signature_hash_algorithm
    if isinstance(public, ec.EllipticCurvePublicKey) and algorithm is not None:
        public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
    elif isinstance(public, rsa.RSAPublicKey) and algorithm is not None:
        # RSA-PSS parameters are not exposed before 41; PKCS#1 v1.5 is what CAs here issue.
        public.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), algorithm)
    elif isinstance(public, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        public.verify(cert.signature, cert.tbs_certificate_bytes)
    else:
        raise TypeError(f"unsupported issuer key type {type(public).__name__}")
