"""Registration, identity and access rules over real HTTPS with mutual TLS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from tests.conftest import FtmockServer
from tests.ftmock.conftest import Client, admin_client, make_key_and_csr, public_key_der, register


def _pub(pem: str) -> bytes:
    return serialization.load_pem_public_key(pem.encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_register_with_csr_keeps_key_on_client(server: FtmockServer, org: str, tmp_path: Path) -> None:
    reg = register(server, tmp_path, org, name="csr-guest", csr=True, facts={"virt.uuid": "abc"})
    id_cert = reg.dto["idCert"]
    assert id_cert["key"] is None
    cert = x509.load_pem_x509_certificate(id_cert["cert"].encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == reg.uuid
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == org
    local_key = serialization.load_pem_private_key(Path(reg.key_path).read_bytes(), None)
    assert cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo) == \
        local_key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    # The identity certificate opens the consumer's own record.
    r = reg.client.get(f"/consumers/{reg.uuid}")
    assert r.status_code == 200
    assert r.json()["facts"]["virt.uuid"] == "abc"
    assert r.json()["owner"]["key"] == org


def test_register_with_server_key(server: FtmockServer, org: str, tmp_path: Path) -> None:
    reg = register(server, tmp_path, org, name="server-key", csr=False)
    id_cert = reg.dto["idCert"]
    assert "PRIVATE KEY" in id_cert["key"]
    key = serialization.load_pem_private_key(id_cert["key"].encode(), None)
    cert = x509.load_pem_x509_certificate(id_cert["cert"].encode())
    assert _pub(cert.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()) == \
        key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert reg.client.get(f"/consumers/{reg.uuid}").status_code == 200
    # A later GET never hands the private key out again.
    assert reg.client.get(f"/consumers/{reg.uuid}").json()["idCert"]["key"] is None


def test_consumer_sees_only_its_own_resources(server: FtmockServer, org: str, tmp_path: Path) -> None:
    a = register(server, tmp_path, org, name="a")
    b = register(server, tmp_path, org, name="b")
    for path in (f"/consumers/{b.uuid}", f"/consumers/{b.uuid}/certificates",
                 f"/consumers/{b.uuid}/compliance", f"/pools?consumer={b.uuid}",
                 f"/owners/{org}/consumers", f"/owners/{org}/pools"):
        r = a.client.get(path)
        assert r.status_code == 403, (path, r.status_code)
        assert r.json()["displayMessage"]
    assert a.client.delete(f"/consumers/{b.uuid}").status_code == 403
    assert a.client.put(f"/consumers/{b.uuid}", json={"facts": {"x": "1"}}).status_code == 403
    assert admin_client(server).get(f"/consumers/{b.uuid}").status_code == 200


def test_wrong_password_unknown_and_deleted_consumers(server: FtmockServer, org: str, tmp_path: Path) -> None:
    bad = Client(server, auth=("admin", "wrong"))
    r = bad.get(f"/owners/{org}/consumers")
    assert r.status_code == 401
    assert "Invalid Credentials" in r.json()["displayMessage"]
    admin = admin_client(server)
    r = admin.get("/consumers/00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404
    reg = register(server, tmp_path, org, name="doomed")
    assert reg.client.delete(f"/consumers/{reg.uuid}").status_code == 204
    for client in (admin, reg.client):
        r = client.get(f"/consumers/{reg.uuid}")
        assert r.status_code == 410
        assert r.json()["deletedId"] == reg.uuid


def test_unauthenticated_requests_are_refused(server: FtmockServer, org: str) -> None:
    anon = Client(server)
    assert anon.get(f"/owners/{org}/consumers").status_code == 401
    r = anon.post(f"/consumers?owner={org}", json={"name": "x"})
    assert r.status_code == 401
    assert anon.get("/status").status_code == 200


def test_certificate_from_another_ca_is_not_an_identity(server: FtmockServer, org: str, tmp_path: Path) -> None:
    from tests.kit.ca import CertAuthority

    cert_file, key_file = CertAuthority().client_files(tmp_path, "intruder")
    reg = register(server, tmp_path, org, name="victim")
    client = Client(server, cert=(str(cert_file), str(key_file)))
    try:
        r = client.get(f"/consumers/{reg.uuid}")
    except requests.exceptions.SSLError:
        return  # refused during the handshake: also a refusal
    assert r.status_code == 401


def test_update_facts_and_checkin(server: FtmockServer, org: str, tmp_path: Path) -> None:
    reg = register(server, tmp_path, org, name="facts", facts={"a": "1"})
    before = reg.client.get(f"/consumers/{reg.uuid}").json()["lastCheckin"]
    r = reg.client.put(f"/consumers/{reg.uuid}", json={"facts": {"a": "2", "b": True},
                                                        "installedProducts": [{"productId": "69"}]})
    assert r.status_code == 204
    dto = reg.client.get(f"/consumers/{reg.uuid}").json()
    assert dto["facts"] == {"a": "2", "b": "true"}
    assert [p["productId"] for p in dto["installedProducts"]] == ["69"]
    assert dto["lastCheckin"] >= before


def test_last_checkin_moves_only_on_the_consumers_check_in_calls(server: FtmockServer, org: str,
                                                                   tmp_path: Path) -> None:
    """As Candlepin's check-in filter: the consumer's PUT, certificate and serial listings, and
    certificate regeneration are check-ins; reading itself, compliance, pools, or a user's update are not."""
    import time

    reg = register(server, tmp_path, org, name="checkins")
    admin = admin_client(server)

    def last() -> str:
        return str(admin.get(f"/consumers/{reg.uuid}").json()["lastCheckin"])

    def moved(call: Any) -> bool:
        before = last()
        time.sleep(0.01)  # a real duration: lastCheckin has millisecond resolution
        r = call()
        assert r.status_code < 300, r.text
        return last() != before

    assert not moved(lambda: reg.client.get(f"/consumers/{reg.uuid}"))
    assert not moved(lambda: reg.client.get(f"/consumers/{reg.uuid}/compliance"))
    assert not moved(lambda: reg.client.get(f"/pools?consumer={reg.uuid}"))
    assert not moved(lambda: admin.put(f"/consumers/{reg.uuid}", json={"facts": {"x": "1"}}))
    assert not moved(lambda: admin.get(f"/consumers/{reg.uuid}/certificates/serials"))
    assert moved(lambda: reg.client.put(f"/consumers/{reg.uuid}", json={}))
    assert moved(lambda: reg.client.get(f"/consumers/{reg.uuid}/certificates/serials"))
    assert moved(lambda: reg.client.get(f"/consumers/{reg.uuid}/certificates"))
    assert moved(lambda: reg.client.put(f"/consumers/{reg.uuid}/certificates"))


def test_regenerate_identity_keeps_key_and_retires_old_cert(server: FtmockServer, org: str,
                                                            tmp_path: Path) -> None:
    reg = register(server, tmp_path, org, name="regen")
    r = reg.client.post(f"/consumers/{reg.uuid}")
    assert r.status_code == 200
    new = r.json()["idCert"]
    assert new["key"] is None  # same key as before: it never left the client
    assert new["serial"]["serial"] != reg.dto["idCert"]["serial"]["serial"]
    old = x509.load_pem_x509_certificate(reg.dto["idCert"]["cert"].encode())
    cert = x509.load_pem_x509_certificate(new["cert"].encode())
    assert public_key_der(cert) == public_key_der(old)
    # The replaced certificate no longer authenticates.
    assert reg.client.get(f"/consumers/{reg.uuid}").status_code == 401
    Path(reg.cert_path).write_text(new["cert"])
    # A new connection presents the new certificate (an open one keeps its handshake's identity).
    client = Client(server, cert=(reg.cert_path, reg.key_path))
    assert client.get(f"/consumers/{reg.uuid}").status_code == 200
    # With a CSR: a new key.
    _, csr = make_key_and_csr()
    r = client.post(f"/consumers/{reg.uuid}", json={"csr": csr})
    assert r.status_code == 200
    assert public_key_der(x509.load_pem_x509_certificate(r.json()["idCert"]["cert"].encode())) != public_key_der(old)


def test_admin_lists_consumers_with_facts(server: FtmockServer, org: str, tmp_path: Path) -> None:
    register(server, tmp_path, org, name="one", facts={"k": "v"})
    register(server, tmp_path, org, name="two")
    r = admin_client(server).get(f"/owners/{org}/consumers")
    assert r.status_code == 200
    by_name = {c["name"]: c for c in r.json()}
    assert set(by_name) == {"one", "two"}
    assert by_name["one"]["facts"] == {"k": "v"}
