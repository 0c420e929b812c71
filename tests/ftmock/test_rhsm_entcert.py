"""ftmock's entitlement certificates are Candlepin v3 certificates, as python-rhsm reads them."""

from __future__ import annotations

import base64
import datetime as dt
import json
import zlib
from pathlib import Path

from cryptography import x509
from rhsm.certificate import create_from_pem
from rhsm.certificate2 import EntitlementCertificate

from tests.conftest import FtmockServer
from tests.ftmock.conftest import admin_client, register

UTC = dt.timezone.utc


def _products(server: FtmockServer, org: str) -> str:
    admin = admin_client(server)
    r = admin.post(f"/owners/{org}/products", json={
        "id": "69", "name": "Enterprise Linux Server", "attributes": {"arch": "x86_64,aarch64", "version": "9.4"},
        "productContent": [
            {"content": {"id": "1001", "label": "el-9-baseos", "name": "BaseOS", "type": "yum",
                         "vendor": "Example", "contentUrl": "/content/el9/$basearch/baseos",
                         "gpgUrl": "file:///etc/pki/rpm-gpg/KEY"}, "enabled": True},
            {"content": {"label": "el-9-debug", "contentUrl": "/content/el9/debug"}, "enabled": False},
        ]})
    assert r.status_code == 200, r.text
    r = admin.post(f"/owners/{org}/products", json={"id": "70", "name": "High Availability"})
    assert r.status_code == 200, r.text
    r = admin.post(f"/owners/{org}/products", json={
        "id": "MKT-1", "name": "Premium Server Subscription", "providedProducts": ["69", "70"],
        "attributes": {"sockets": "2", "support_level": "Premium", "support_type": "L1-L3"}})
    assert r.status_code == 200, r.text
    r = admin.post(f"/owners/{org}/pools", json={"productId": "MKT-1", "quantity": 5,
                                                 "startDate": "2026-01-01T00:00:00Z", "endDate": "2030-01-01T00:00:00Z"})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def test_python_rhsm_reads_ftmock_entitlement_certificates(server: FtmockServer, org: str, tmp_path: Path) -> None:
    pool = _products(server, org)
    guest = register(server, tmp_path, org, installed=["69"])
    r = guest.client.post(f"/consumers/{guest.uuid}/entitlements", params={"pool": pool, "quantity": 2})
    assert r.status_code == 200, r.text
    [ent] = r.json()
    [item] = ent["certificates"]

    cert = create_from_pem(item["cert"])
    assert isinstance(cert, EntitlementCertificate)
    assert str(cert.version) == "3.4" and cert.version.major == 3
    assert cert.serial == item["serial"]["serial"]
    assert cert.entitlement_type == b"Basic"  # python-rhsm returns the raw extension text
    assert cert.pool.id == pool
    assert cert.order.name == "Premium Server Subscription" and cert.order.sku == "MKT-1"
    assert cert.order.quantity_used == 2 and cert.order.socket_limit == 2
    assert cert.order.service_level == "Premium" and cert.order.service_type == "L1-L3"
    # The provided products, never the SKU itself, with names, versions and arches
    assert [(p.id, p.name) for p in cert.products] == [("69", "Enterprise Linux Server"), ("70", "High Availability")]
    assert cert.products[0].version == "9.4" and cert.products[0].architectures == ["x86_64", "aarch64"]
    content = {c.label: c for c in cert.content}
    assert set(content) == {"el-9-baseos", "el-9-debug"}
    assert content["el-9-baseos"].url == "/content/el9/$basearch/baseos"
    assert content["el-9-baseos"].gpg == "file:///etc/pki/rpm-gpg/KEY"
    assert content["el-9-baseos"].vendor == "Example" and content["el-9-baseos"].content_type == "yum"
    assert content["el-9-baseos"].enabled is True and content["el-9-debug"].enabled is False
    # The content path tree (extension .7): $basearch matches any architecture, below the path only
    assert cert.check_path("/content/el9/x86_64/baseos/repodata/repomd.xml")
    assert cert.check_path("/content/el9/debug/Packages/a.rpm")
    assert not cert.check_path("/content/el9/x86_64/appstream/repodata/repomd.xml")
    assert not cert.check_path("/content/el8/debug")
    # Valid for the pool's period
    assert cert.valid_range.begin() == dt.datetime(2026, 1, 1, tzinfo=UTC)
    assert cert.valid_range.end() == dt.datetime(2030, 1, 1, tzinfo=UTC)
    assert cert.subject["CN"] == ent["id"] and cert.subject["O"] == org


def test_payload_is_signed_by_the_ca(server: FtmockServer, org: str, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    pool = _products(server, org)
    guest = register(server, tmp_path, org)
    [ent] = guest.client.post(f"/consumers/{guest.uuid}/entitlements", params={"pool": pool}).json()
    pem = ent["certificates"][0]["cert"]
    data = base64.b64decode(pem.split("-----BEGIN ENTITLEMENT DATA-----")[1].split("-----END")[0])
    signature = base64.b64decode(pem.split("-----BEGIN RSA SIGNATURE-----")[1].split("-----END")[0])
    ca = x509.load_pem_x509_certificate(server.ca_path.read_bytes())
    ca.public_key().verify(signature, data, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg,union-attr]
    payload = json.loads(zlib.decompress(data))
    assert payload["consumer"] == guest.uuid and payload["pool"] == {"id": pool}
