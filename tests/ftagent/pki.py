"""A throw-away CA for unit tests: identity certificates for chosen keys, CNs and validity."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@dataclass
class LocalCA:
    name: str = "test CA"
    key: ec.EllipticCurvePrivateKey = field(default_factory=new_key)
    serial: int = 100

    def __post_init__(self) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(1)
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.pem)
        return path

    def issue(
        self,
        cn: str,
        public_key: ec.EllipticCurvePublicKey,
        *,
        org: str = "org1",
        days: float = 365,
        start: dt.datetime | None = None,
    ) -> bytes:
        now = start or dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
        self.serial += 1
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            ]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(self.serial)
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=days))
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def pair(self, cn: str, **kw: object) -> tuple[bytes, bytes]:
        key = new_key()
        return self.issue(cn, key.public_key(), **kw), key_pem(key)  # type: ignore[arg-type]
