"""The one test CA: TLS certificates for loopback servers and clients, and identity certificates.

TLS certificates (a server's for 127.0.0.1 and localhost, a client's) come from ``trustme``, which
knows what each TLS stack checks.  Identity certificates are what an entitlement server issues to a
consumer: CN the consumer UUID, O the org, for a public key the test chooses (a guest's own key,
another key for a forgery) and with a chosen validity; ``issue`` signs those with the same CA key.
ftmock's own CA is not this one: ftmock makes its CA in its data directory, as a server does.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["CertAuthority", "TLSFiles", "key_pem", "new_key", "server_tls"]

LOOPBACK = ("127.0.0.1", "localhost")


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@dataclass(frozen=True)
class TLSFiles:
    """A CA certificate and a certificate with its key, as PEM files in one directory."""

    directory: Path

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def cert_path(self) -> Path:
        return self.directory / "server.pem"

    @property
    def key_path(self) -> Path:
        return self.directory / "server.key"


class CertAuthority:
    """A throw-away CA (a new key and self-signed certificate per instance)."""

    def __init__(self) -> None:
        self.tls = trustme.CA()
        self.cert = x509.load_pem_x509_certificate(self.tls.cert_pem.bytes())
        self._key = serialization.load_pem_private_key(self.tls.private_key_pem.bytes(), password=None)

    @property
    def pem(self) -> bytes:
        """The CA certificate, PEM."""
        return bytes(self.tls.cert_pem.bytes())

    def write(self, path: Path) -> Path:
        """The CA certificate into ``path`` (a file a client is told to trust)."""
        path.write_bytes(self.pem)
        return path

    # -- identity certificates ------------------------------------------------------------------

    def issue(self, cn: str, public_key: ec.EllipticCurvePublicKey, *, org: str = "org1", days: float = 365,
              start: dt.datetime | None = None) -> bytes:
        """An identity certificate (CN ``cn``, O ``org``) for ``public_key``, valid ``days`` from ``start``."""
        now = start or dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            ]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=days))
            .sign(self._key, hashes.SHA256())  # type: ignore[arg-type]
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def pair(self, cn: str, *, org: str = "org1", days: float = 365) -> tuple[bytes, bytes]:
        """An identity certificate for a new key: (certificate PEM, key PEM)."""
        key = new_key()
        return self.issue(cn, key.public_key(), org=org, days=days), key_pem(key)

    # -- TLS ------------------------------------------------------------------------------------

    def server_files(self, directory: Path, *hosts: str) -> TLSFiles:
        """This CA's certificate and a server certificate for ``hosts`` (default: loopback) as files."""
        files = TLSFiles(directory)
        directory.mkdir(parents=True, exist_ok=True)
        leaf = self.tls.issue_cert(*(hosts or LOOPBACK))
        self.tls.cert_pem.write_to_path(str(files.ca_path))
        leaf.private_key_pem.write_to_path(str(files.key_path))
        leaf.cert_chain_pems[0].write_to_path(str(files.cert_path))
        return files

    def client_files(self, directory: Path, name: str) -> tuple[Path, Path]:
        """A client certificate with CN ``name`` and its key, as files ``NAME.pem`` and ``NAME.key``."""
        directory.mkdir(parents=True, exist_ok=True)
        leaf = self.tls.issue_cert(name)
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key

    def server_context(self, *hosts: str) -> ssl.SSLContext:
        """A server-side TLS context presenting a certificate for ``hosts`` (default: loopback)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.tls.issue_cert(*(hosts or LOOPBACK)).configure_cert(ctx)
        return ctx


def server_tls(directory: Path, *hosts: str) -> TLSFiles:
    """A new CA and a server certificate from it, as files (a simulator's or a proxy's TLS)."""
    return CertAuthority().server_files(directory, *hosts)
