"""Entitlement and content access certificates in Candlepin's version 3 form.

What a v3 certificate is, as subscription-manager reads it:

- an X.509 certificate (an entitlement's: CN = entitlement id, O = org, valid over the pool's
  period; a content access certificate's: CN = consumer UUID, O = org) carrying extensions under
  Red Hat's OID arc 1.3.6.1.4.1.2312.9: ``.6`` the certificate version (``"3.4"``) and ``.8`` the
  entitlement type (``"Basic"``, or ``"OrgLevel"`` for simple content access), each a DER
  UTF8String, and ``.7`` the content paths it grants as a DER OCTET STRING holding the
  Huffman-coded path tree (:mod:`ftmock.pathtree`);
- after it, ``-----BEGIN ENTITLEMENT DATA-----``: base64 of the zlib-compressed JSON payload
  (consumer, quantity, subscription, order, products with their content, pool);
- then ``-----BEGIN RSA SIGNATURE-----``: the CA's signature over the compressed payload, so a
  client holding the CA certificate can check the payload was not altered.  Candlepin signs with
  an RSA key; ftmock's CA key is EC P-256, so the block (named as clients expect it) holds an
  ECDSA-SHA256 signature.
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from .pathtree import encode_paths

__all__ = [
    "CERT_VERSION",
    "CONTENT_ACCESS_TYPE",
    "ENTITLEMENT_TYPE",
    "REDHAT_OID",
    "der_utf8_string",
    "encode_payload",
    "extensions",
    "pem_with_payload",
    "product_entry",
]

REDHAT_OID = "1.3.6.1.4.1.2312.9"
CERT_VERSION = "3.4"
ENTITLEMENT_TYPE = "Basic"
CONTENT_ACCESS_TYPE = "OrgLevel"
OID_CERT_VERSION = ObjectIdentifier(f"{REDHAT_OID}.6")
OID_CONTENT_PATHS = ObjectIdentifier(f"{REDHAT_OID}.7")
OID_ENTITLEMENT_TYPE = ObjectIdentifier(f"{REDHAT_OID}.8")

DATA_BEGIN = "-----BEGIN ENTITLEMENT DATA-----"
DATA_END = "-----END ENTITLEMENT DATA-----"
SIGNATURE_BEGIN = "-----BEGIN RSA SIGNATURE-----"
SIGNATURE_END = "-----END RSA SIGNATURE-----"


def _der(tag: int, data: bytes) -> bytes:
    n = len(data)
    if n < 0x80:
        length = bytes([n])
    else:
        octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(octets)]) + octets
    return bytes([tag]) + length + data


def der_utf8_string(text: str) -> bytes:
    """DER encoding of an ASN.1 UTF8String (tag 12), the value type of Candlepin's text extensions."""
    return _der(0x0C, text.encode())


def content_paths(payload: dict[str, Any]) -> list[str]:
    """Every content path the payload's products carry."""
    return [c["path"] for p in payload.get("products") or [] for c in p.get("content") or [] if c.get("path")]


def payload_of(cert_pem: str) -> dict[str, Any]:
    """The entitlement data a stored v3 certificate (PEM with its data block) carries."""
    body = cert_pem.split(DATA_BEGIN, 1)[1].split(DATA_END, 1)[0]
    payload: dict[str, Any] = json.loads(zlib.decompress(base64.b64decode("".join(body.split()))))
    return payload


def extensions(payload: dict[str, Any], entitlement_type: str = ENTITLEMENT_TYPE) -> list[x509.UnrecognizedExtension]:
    """The Red Hat extensions of a v3 certificate for this payload (no path tree without content)."""
    out = [
        x509.UnrecognizedExtension(OID_CERT_VERSION, der_utf8_string(CERT_VERSION)),
        x509.UnrecognizedExtension(OID_ENTITLEMENT_TYPE, der_utf8_string(entitlement_type)),
    ]
    tree = encode_paths(content_paths(payload))
    if tree is not None:
        out.append(x509.UnrecognizedExtension(OID_CONTENT_PATHS, _der(0x04, tree)))
    return out


def content_entry(item: dict[str, Any]) -> dict[str, Any]:
    """A product content set as the payload carries it (from ftmock's stored ContentDTO form)."""
    out: dict[str, Any] = {
        "id": str(item.get("id") or item.get("label")),
        "type": item.get("type") or "yum",
        "name": item.get("name") or item.get("label"),
        "label": item.get("label"),
        "vendor": item.get("vendor") or "ftmock",
        "path": item.get("contentUrl") or "",
        "enabled": bool(item.get("enabled", True)),
    }
    if item.get("gpgUrl"):
        out["gpg_url"] = item["gpgUrl"]
    if item.get("metadataExpire") is not None:
        out["metadata_expire"] = item["metadataExpire"]
    arches = item.get("arches")
    if arches:
        out["arches"] = [a.strip() for a in str(arches).split(",") if a.strip()]
    return out


def product_entry(pid: str, name: str, attributes: dict[str, str], content: list[dict[str, Any]]) -> dict[str, Any]:
    """A product as the payload carries it."""
    arches = attributes.get("arch", "")
    return {
        "id": pid,
        "name": name,
        "version": attributes.get("version", ""),
        "architectures": [a.strip() for a in arches.split(",") if a.strip()],
        "content": [content_entry(c) for c in content],
    }


def encode_payload(payload: dict[str, Any]) -> bytes:
    """The payload as it travels: zlib-compressed, compact JSON."""
    return zlib.compress(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())


def _block(begin: str, end: str, data: bytes) -> str:
    return f"{begin}\n{base64.encodebytes(data).decode()}{end}\n"


def pem_with_payload(cert_pem: str, compressed: bytes, signature: bytes) -> str:
    """Certificate, entitlement data and signature blocks, in Candlepin's order."""
    return (cert_pem + _block(DATA_BEGIN, DATA_END, compressed)
            + _block(SIGNATURE_BEGIN, SIGNATURE_END, signature))
