"""Reading entitlement certificates in Candlepin's version 3 form, offline.

A v3 entitlement certificate file holds three PEM-style blocks: the X.509 certificate (whose
extension 1.3.6.1.4.1.2312.9.6 says the version, "3.x"), ``ENTITLEMENT DATA`` (base64 of a
zlib-compressed JSON payload: subscription, order, products with their content, pool) and
``RSA SIGNATURE`` (the CA's signature over the compressed payload).  :func:`read_entitlement`
parses them into an :class:`EntitlementCert`; given the CA certificate it also checks the payload
signature, so content paths shown to the user come from the server that signed them.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

from ftagent.errors import FtagentError

__all__ = ["CONTENT_ACCESS", "EntitlementCert", "EntitlementCertError", "read_entitlement"]

OID_CERT_VERSION = ObjectIdentifier("1.3.6.1.4.1.2312.9.6")
OID_ENTITLEMENT_TYPE = ObjectIdentifier("1.3.6.1.4.1.2312.9.8")
#: The entitlement type of a simple content access certificate (one per system, the org's content).
CONTENT_ACCESS = "OrgLevel"
MAX_PAYLOAD = 16 * 1024 * 1024  # decompressed; a certificate's payload is a few kilobytes

_BLOCK = re.compile(r"-----BEGIN (?P<kind>[A-Z ]+)-----\s*(?P<body>.*?)-----END (?P=kind)-----", re.S)


class EntitlementCertError(FtagentError):
    """An entitlement certificate file that cannot be read as a v3 certificate."""


@dataclass(frozen=True)
class EntitlementCert:
    """What a v3 entitlement certificate says."""

    serial: int
    id: str
    org: str | None
    version: str
    start: str
    end: str
    pool: dict[str, Any]
    sku: str | None
    name: str | None
    quantity: int | None
    products: list[dict[str, Any]] = field(default_factory=list)
    content: list[dict[str, Any]] = field(default_factory=list)
    signature: str = "unchecked"  # "verified", "invalid", "missing" or "unchecked" (no CA given)
    type: str = "Basic"  # the entitlement type: "OrgLevel" for a content access certificate

    @property
    def content_access(self) -> bool:
        """Whether this is a simple content access certificate (the org's content, no subscription)."""
        return self.type == CONTENT_ACCESS

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return asdict(self)


def _der_string(value: bytes) -> str:
    """The text of a DER string value (UTF8String, IA5String, OCTET STRING...) in an extension."""
    if len(value) >= 2 and value[0] in (0x04, 0x0C, 0x13, 0x16):
        length, offset = value[1], 2
        if length & 0x80:
            count = length & 0x7F
            length, offset = int.from_bytes(value[2:2 + count], "big"), 2 + count
        return value[offset:offset + length].decode("utf-8", "replace")
    return value.decode("utf-8", "replace")


def _verify(ca_cert: Path, data: bytes, signature: bytes) -> bool:
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    key = ca.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _decompress(data: bytes) -> Any:
    inflater = zlib.decompressobj()
    text = inflater.decompress(data, MAX_PAYLOAD)
    if inflater.unconsumed_tail:
        raise EntitlementCertError(f"entitlement data larger than {MAX_PAYLOAD} bytes")
    return json.loads(text)


def _validity(cert: x509.Certificate) -> tuple[str, str]:
    # The *_utc properties appeared in cryptography 42; RHEL 9 has 36, whose naive values are UTC.
    utc = datetime.timezone.utc
    start = getattr(cert, "not_valid_before_utc", None) or cert.not_valid_before.replace(tzinfo=utc)
    end = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after.replace(tzinfo=utc)
    return start.isoformat(), end.isoformat()


def read_entitlement(pem: str, *, ca_cert: Path | None = None) -> EntitlementCert:
    """Parse a v3 entitlement certificate; ``ca_cert`` (a PEM file) checks the payload signature."""
    blocks = {m.group("kind"): m.group(0) for m in _BLOCK.finditer(pem)}
    if "CERTIFICATE" not in blocks:
        raise EntitlementCertError("no certificate in the file")
    try:
        cert = x509.load_pem_x509_certificate(blocks["CERTIFICATE"].encode())
    except ValueError as exc:
        raise EntitlementCertError(f"corrupt certificate: {exc}") from exc
    try:
        ext = cert.extensions.get_extension_for_oid(OID_CERT_VERSION).value
    except x509.ExtensionNotFound:
        raise EntitlementCertError("not a Candlepin v3 entitlement certificate (no version extension)") from None
    version = _der_string(ext.value) if isinstance(ext, x509.UnrecognizedExtension) else ""
    try:
        type_ext = cert.extensions.get_extension_for_oid(OID_ENTITLEMENT_TYPE).value
        ent_type = _der_string(type_ext.value) if isinstance(type_ext, x509.UnrecognizedExtension) else "Basic"
    except x509.ExtensionNotFound:
        ent_type = "Basic"
    if not version.startswith("3."):
        raise EntitlementCertError(f"unsupported entitlement certificate version {version!r}")
    if "ENTITLEMENT DATA" not in blocks:
        raise EntitlementCertError("the entitlement data block is missing")
    try:
        body = blocks["ENTITLEMENT DATA"].split("-----")[2]
        compressed = base64.b64decode("".join(body.split()), validate=True)
        payload = _decompress(compressed)
    except (binascii.Error, zlib.error, ValueError, IndexError) as exc:
        raise EntitlementCertError(f"corrupt entitlement data: {exc}") from exc
    if not isinstance(payload, dict):
        raise EntitlementCertError("corrupt entitlement data: not an object")
    signature = "unchecked"
    if "RSA SIGNATURE" not in blocks:
        signature = "missing"
    elif ca_cert is not None and ca_cert.is_file():
        sig_body = blocks["RSA SIGNATURE"].split("-----")[2]
        try:
            sig = base64.b64decode("".join(sig_body.split()), validate=True)
        except (binascii.Error, ValueError):
            sig = b""
        signature = "verified" if _verify(ca_cert, compressed, sig) else "invalid"

    sub: dict[str, Any] = payload["subscription"] if isinstance(payload.get("subscription"), dict) else {}
    products: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    for product in payload.get("products") or []:
        if not isinstance(product, dict):
            continue
        products.append({"id": product.get("id"), "name": product.get("name"),
                         "version": product.get("version"), "architectures": product.get("architectures") or []})
        for item in product.get("content") or []:
            if isinstance(item, dict):
                content.append({"id": item.get("id"), "label": item.get("label"), "name": item.get("name"),
                                "type": item.get("type"), "path": item.get("path"),
                                "enabled": bool(item.get("enabled", True)), "gpg_url": item.get("gpg_url"),
                                "metadata_expire": item.get("metadata_expire"),
                                "arches": item.get("arches") or [], "product": product.get("id")})
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    org = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    pool: dict[str, Any] = payload["pool"] if isinstance(payload.get("pool"), dict) else {}
    quantity = payload.get("quantity")
    start, end = _validity(cert)
    return EntitlementCert(
        serial=cert.serial_number,
        id=str(cn[0].value) if cn else "",
        org=str(org[0].value) if org else None,
        version=version,
        start=start,
        end=end,
        pool={"id": pool.get("id")},
        sku=sub.get("sku"),
        name=sub.get("name"),
        quantity=quantity if isinstance(quantity, int) else None,
        products=products,
        content=content,
        signature=signature,
        type=ent_type or "Basic",
    )
