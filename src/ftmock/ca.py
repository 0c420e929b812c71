"""The server's certificate authority: CA, server certificate, identity and entitlement certificates.

Keys are EC P-256 throughout: generating and signing with them costs well under a millisecond, which
is what lets the server issue hundreds of identities a second on a small machine.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ftagent.atomic import write_atomic

from . import entcert
from .errors import BadRequest

__all__ = [
    "CertificateAuthority",
    "IssuedCert",
    "fingerprint_public_key",
    "generate_key",
    "key_to_pem",
]

log = logging.getLogger(__name__)

# Candlepin issues identity certificates for candlepin.identityCert.yr.addendum years (5 since
# Candlepin 4; 16 before) and regenerates one on the consumer's GET when it expires within
# candlepin.identityCert.expiry.threshold days (90). `ftmock serve --identity-cert-days/--identity-renew-days`.
IDENTITY_DAYS = 5 * 365
IDENTITY_RENEW_DAYS = 90
SERVER_DAYS = 365
ENTITLEMENT_DAYS = 365
CA_DAYS = 3650


@dataclass(frozen=True)
class IssuedCert:
    """A certificate issued by the CA, with its private key when the server generated it."""

    serial: int
    cert_pem: str
    key_pem: str | None
    public_key_pem: str
    not_after: dt.datetime


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_key_pem(key: Any) -> str:
    pem: bytes = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode()


def fingerprint_public_key(pem: str) -> str:
    """A stable form of a public key for comparison (DER in hex)."""
    key = serialization.load_pem_public_key(pem.encode())
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ).hex()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def not_valid_after(cert: x509.Certificate) -> dt.datetime:
    """The certificate's notAfter as an aware UTC datetime (``not_valid_after_utc`` is cryptography 42+)."""
    if hasattr(cert, "not_valid_after_utc"):
        return cert.not_valid_after_utc
    return cert.not_valid_after.replace(tzinfo=dt.timezone.utc)


def _common_name(text: str) -> str:
    """``text`` cut to the 64 bytes X.509 allows a CN (cryptography refuses more), at a character boundary."""
    return text.encode()[:64].decode(errors="ignore") or "-"


class CertificateAuthority:
    """A CA kept as `ca.pem` / `ca-key.pem` in the server's data directory."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self.key = key
        #: Validity of the identity certificates it issues (``ftmock serve --identity-cert-days``).
        self.identity_days = IDENTITY_DAYS
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()

    @classmethod
    def load_or_create(cls, data_dir: Path) -> CertificateAuthority:
        cert_path, key_path = data_dir / "ca.pem", data_dir / "ca-key.pem"
        if cert_path.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path}: not an EC key")
            return cls(cert, key)
        key = generate_key()
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ftmock"),
            x509.NameAttribute(NameOID.COMMON_NAME, "ftmock CA"),
        ])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_atomic(key_path, key_to_pem(key).encode(), mode=0o600)
        write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        log.info("created CA in %s", cert_path)
        return cls(cert, key)

    def _builder(self, subject: x509.Name, public_key: object, days: int, serial: int,
                 not_after: dt.datetime | None = None,
                 not_before: dt.datetime | None = None) -> x509.CertificateBuilder:
        now = _now()
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(serial)
            .not_valid_before(not_before or now - dt.timedelta(minutes=5))
            .not_valid_after(not_after or now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )

    def server_certificate(self, data_dir: Path, host: str) -> tuple[Path, Path]:
        """Issue (or reuse) the TLS certificate for the listen address; returns (cert, key) paths."""
        cert_path, key_path = data_dir / "server.pem", data_dir / "server-key.pem"
        names: list[x509.GeneralName] = [x509.DNSName("localhost")]
        for addr in {host, "127.0.0.1", "::1"}:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(addr)))
            except ValueError:
                if addr and addr != "localhost":
                    names.append(x509.DNSName(addr))
        if cert_path.exists() and key_path.exists():
            existing = x509.load_pem_x509_certificate(cert_path.read_bytes())
            try:
                san = existing.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                if set(names) <= set(san) and not_valid_after(existing) > _now() + dt.timedelta(days=1):
                    return cert_path, key_path
            except x509.ExtensionNotFound:
                pass
        key = generate_key()
        cert = (
            self._builder(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host or "localhost")]),
                key.public_key(), SERVER_DAYS, x509.random_serial_number(),
            )
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        write_atomic(key_path, key_to_pem(key).encode(), mode=0o600)
        write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        return cert_path, key_path

    def public_key_from_csr(self, csr_pem: str) -> str:
        """Check a CSR (parses, self-signature valid, acceptable key) and return its public key PEM."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except (ValueError, TypeError) as exc:
            raise BadRequest(f"invalid CSR: {exc}") from None
        if not csr.is_signature_valid:
            raise BadRequest("invalid CSR: signature does not verify")
        key = csr.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.key_size < 256:
                raise BadRequest("invalid CSR: EC key smaller than 256 bits")
        else:
            size = getattr(key, "key_size", 0)
            if not hasattr(key, "public_numbers") or size < 2048:
                raise BadRequest("invalid CSR: key must be EC P-256 or better, or RSA of 2048 bits or more")
        return public_key_pem(key)

    def identity(self, consumer_uuid: str, owner: str | None, serial: int,
                 public_key: str | None = None, name: str | None = None) -> IssuedCert:
        """Issue an identity certificate for a given or a new key.

        As Candlepin's: subject CN = consumer UUID, O = org; subject alternative name
        ``DirName:/CN=<consumer name>``, which ``subscription-manager identity`` shows as the system name.
        """
        key_pem: str | None = None
        if public_key is None:
            key = generate_key()
            key_pem = key_to_pem(key)
            pub: object = key.public_key()
        else:
            pub = serialization.load_pem_public_key(public_key.encode())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, consumer_uuid)]
        if owner:
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, owner))
        cert = (
            self._builder(x509.Name(attrs), pub, self.identity_days, serial)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.DirectoryName(x509.Name([
                    x509.NameAttribute(NameOID.COMMON_NAME, _common_name(name or consumer_uuid))]))]),
                critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        return IssuedCert(
            serial=serial,
            cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
            key_pem=key_pem,
            public_key_pem=public_key_pem(pub),
            not_after=not_valid_after(cert),
        )

    def entitlement(self, entitlement_id: str, owner: str, serial: int, payload: dict[str, Any],
                    not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
                    entitlement_type: str | None = None) -> IssuedCert:
        """Issue a v3 certificate (see `entcert`) with its own key for a payload.

        CN is ``entitlement_id``: an entitlement's id, or for a content access certificate
        (``entitlement_type`` "OrgLevel") the consumer's UUID.
        """
        key = generate_key()
        builder = self._builder(
            x509.Name([
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, owner),
                x509.NameAttribute(NameOID.COMMON_NAME, entitlement_id),
            ]),
            key.public_key(), ENTITLEMENT_DAYS, serial, not_after, not_before,
        )
        for ext in entcert.extensions(payload, entitlement_type or entcert.ENTITLEMENT_TYPE):
            builder = builder.add_extension(ext, critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        compressed = entcert.encode_payload(payload)
        signature = self.key.sign(compressed, ec.ECDSA(hashes.SHA256()))
        pem = entcert.pem_with_payload(cert.public_bytes(serialization.Encoding.PEM).decode(), compressed, signature)
        return IssuedCert(
            serial=serial, cert_pem=pem, key_pem=key_to_pem(key),
            public_key_pem=public_key_pem(key.public_key()), not_after=not_valid_after(cert),
        )
