"""Simple Content Access in ftmock: org modes, content access certificates (read by python-rhsm), overrides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import rhsm.connection as rc
from rhsm.certificate import create_from_pem
from rhsm.certificate2 import EntitlementCertificate

from tests.conftest import FtmockServer
from tests.ftmock.conftest import Registered, admin_client, register
from tests.kit.orgs import ENTITLEMENT, SCA, new_org

BASEOS = "/content/dist/el9/$releasever/$basearch/baseos/os"
APPSTREAM = "/content/dist/el9/$releasever/$basearch/appstream/os"


def content_product(server: FtmockServer, org: str, pid: str, sets: dict[str, str], *, pool: bool = True,
                    provides: list[str] | None = None) -> str | None:
    """A product with content sets (label -> path) and, unless ``pool`` is false, a pool of it."""
    admin = admin_client(server)
    r = admin.post(f"/owners/{org}/products", json={
        "id": pid, "name": f"Product {pid}", "providedProducts": provides or [],
        "productContent": [{"content": {"id": f"{pid}-{label}", "label": label, "name": label, "type": "yum",
                                        "contentUrl": path, "gpgUrl": "file:///etc/pki/rpm-gpg/KEY"},
                            "enabled": label != "el9-debug"} for label, path in sets.items()]})
    assert r.status_code == 200, r.text
    if not pool:
        return None
    r = admin.post(f"/owners/{org}/pools", json={"productId": pid, "quantity": 5})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def serials(reg: Registered) -> list[int]:
    r = reg.client.get(f"/consumers/{reg.uuid}/certificates/serials")
    assert r.status_code == 200, r.text
    return [s["serial"] for s in r.json()]


def access_cert(reg: Registered) -> EntitlementCertificate:
    """The consumer's content access certificate, as python-rhsm reads it."""
    certs = [create_from_pem(c["cert"]) for c in reg.client.get(f"/consumers/{reg.uuid}/certificates").json()]
    [cert] = [c for c in certs if c.entitlement_type == b"OrgLevel"]
    assert isinstance(cert, EntitlementCertificate)
    return cert


def test_new_orgs_use_simple_content_access_and_say_so(server: FtmockServer, tmp_path: Path) -> None:
    admin = admin_client(server)
    org = new_org(server)
    owner = admin.get(f"/owners/{org}").json()
    assert owner["contentAccessMode"] == SCA
    assert owner["contentAccessModeList"] == "entitlement,org_environment"
    assert admin.get(f"/owners/{org}/content_access").json() == {
        "contentAccessMode": SCA, "contentAccessModeList": ["entitlement", "org_environment"]}
    reg = register(server, tmp_path, org)
    # What subscription-manager checks before it accepts a registration.
    assert reg.dto["owner"]["contentAccessMode"] == SCA
    assert reg.client.get(f"/consumers/{reg.uuid}").json()["owner"]["contentAccessMode"] == SCA
    assert reg.client.get(f"/consumers/{reg.uuid}/content_access").json()["contentAccessMode"] == SCA
    # An org created in entitlement mode keeps today's behaviour.
    old = new_org(server, mode=ENTITLEMENT)
    assert register(server, tmp_path, old).dto["owner"]["contentAccessMode"] == ENTITLEMENT
    bad = admin.post("/owners", json={"key": "bad-mode-" + org, "contentAccessMode": "simple"})
    assert bad.status_code == 400 and "org_environment" in bad.json()["displayMessage"]


def test_python_rhsm_reads_the_content_access_certificate(server: FtmockServer, org: str, tmp_path: Path) -> None:
    content_product(server, org, "69", {"el9-baseos": BASEOS, "el9-appstream": APPSTREAM})
    content_product(server, org, "70", {"el9-debug": "/content/dist/el9/debug"})
    content_product(server, org, "71", {"unsold": "/content/unsold"}, pool=False)  # no pool: not granted
    reg = register(server, tmp_path, org)
    [item] = reg.client.get(f"/consumers/{reg.uuid}/certificates").json()
    cert = create_from_pem(item["cert"])
    assert isinstance(cert, EntitlementCertificate)
    assert cert.entitlement_type == b"OrgLevel"  # python-rhsm 1.19.2 returns the raw extension value
    assert cert.serial == item["serial"]["serial"]
    assert cert.subject["CN"] == reg.uuid and cert.subject["O"] == org
    assert sorted(c.label for c in cert.content) == ["el9-appstream", "el9-baseos", "el9-debug"]
    baseos = next(c for c in cert.content if c.label == "el9-baseos")
    assert baseos.url == BASEOS and baseos.content_type == "yum" and baseos.enabled is True
    assert next(c for c in cert.content if c.label == "el9-debug").enabled is False
    assert cert.check_path("/content/dist/el9/9.4/x86_64/baseos/os/repodata/repomd.xml")
    assert cert.check_path("/content/dist/el9/9/aarch64/appstream/os/Packages/a.rpm")
    assert not cert.check_path("/content/unsold/repodata/repomd.xml")
    assert not cert.check_path("/content/dist/el9/9/x86_64/supplementary/os/repodata/repomd.xml")
    assert "PRIVATE KEY" in item["key"]


def test_auto_attach_binds_nothing_and_bind_by_pool_still_works(server: FtmockServer, org: str,
                                                                 tmp_path: Path) -> None:
    pool = content_product(server, org, "69", {"el9-baseos": BASEOS})
    reg = register(server, tmp_path, org, installed=["69"])
    r = reg.client.post(f"/consumers/{reg.uuid}/entitlements")
    assert r.status_code == 200 and r.json() == []
    assert reg.client.get(f"/consumers/{reg.uuid}/entitlements/dry-run").json() == []
    [access] = serials(reg)
    r = reg.client.post(f"/consumers/{reg.uuid}/entitlements", params={"pool": pool})
    assert r.status_code == 200 and r.json()[0]["pool"]["id"] == pool
    entitlement = r.json()[0]["certificates"][0]["serial"]["serial"]
    assert sorted(serials(reg)) == sorted([access, entitlement])


def test_the_certificate_follows_the_orgs_content(server: FtmockServer, org: str, tmp_path: Path) -> None:
    content_product(server, org, "69", {"el9-baseos": BASEOS})
    reg = register(server, tmp_path, org)
    [first] = serials(reg)
    assert serials(reg) == [first]  # nothing changed: the same certificate
    content_product(server, org, "72", {"el9-extras": "/content/dist/el9/extras"})
    [second] = serials(reg)
    assert second != first
    assert sorted(c.label for c in access_cert(reg).content) == ["el9-baseos", "el9-extras"]
    # A product changed in place (new content set) changes it too.
    content_product(server, org, "72", {"el9-extras": "/content/dist/el9/extras", "el9-more": "/more"}, pool=False)
    [third] = serials(reg)
    assert third not in (first, second)
    assert access_cert(reg).check_path("/more/x")


def test_regeneration_revokes_and_reissues(server: FtmockServer, org: str, tmp_path: Path) -> None:
    from tests.ftmock.conftest import make_key_and_csr

    content_product(server, org, "69", {"el9-baseos": BASEOS})
    reg = register(server, tmp_path, org)
    [before] = serials(reg)
    key_pem, csr = make_key_and_csr("again")
    r = reg.client.post(f"/consumers/{reg.uuid}", json={"csr": csr})
    assert r.status_code == 200, r.text
    cert, key = tmp_path / "again.pem", tmp_path / "again-key.pem"
    cert.write_text(r.json()["idCert"]["cert"])
    key.write_text(key_pem)
    again = Registered(r.json(), str(cert), str(key), type(reg.client)(server, cert=(str(cert), str(key))))
    [after] = serials(again)
    assert after != before
    # PUT .../certificates (new certificates for everything) gives it a new serial too.
    assert again.client.put(f"/consumers/{reg.uuid}/certificates").status_code == 204
    assert serials(again) != [after]


def test_accessible_content_with_last_modified(server: FtmockServer, org: str, tmp_path: Path) -> None:
    content_product(server, org, "69", {"el9-baseos": BASEOS})
    reg = register(server, tmp_path, org)
    r = reg.client.get(f"/consumers/{reg.uuid}/accessible_content")
    assert r.status_code == 200, r.text
    body = r.json()
    [(serial, (cert_pem, data))] = body["contentListing"].items()
    assert int(serial) == serials(reg)[0]
    assert cert_pem.startswith("-----BEGIN CERTIFICATE-----") and data.startswith("-----BEGIN ENTITLEMENT DATA")
    assert create_from_pem(cert_pem + data).entitlement_type == b"OrgLevel"
    since = r.headers["Last-Modified"]
    assert reg.client.get(f"/consumers/{reg.uuid}/accessible_content",
                          headers={"If-Modified-Since": since}).status_code == 304
    assert reg.client.get(f"/consumers/{reg.uuid}/accessible_content",
                          headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200
    entitlement_org = new_org(server, mode=ENTITLEMENT)
    other = register(server, tmp_path, entitlement_org)
    r = other.client.get(f"/consumers/{other.uuid}/accessible_content")
    assert r.status_code == 400 and "simple content access" in r.json()["displayMessage"]
    assert serials(other) == []


def test_switching_modes(server: FtmockServer, tmp_path: Path) -> None:
    org = new_org(server, mode=ENTITLEMENT)
    content_product(server, org, "69", {"el9-baseos": BASEOS})
    reg = register(server, tmp_path, org)
    assert serials(reg) == []
    out = json.loads(server.admin("org", "update", org, "--content-access-mode", "org_environment"))
    assert out["contentAccessMode"] == SCA
    assert len(serials(reg)) == 1
    server.admin("org", "update", org, "--content-access-mode", "entitlement")
    assert serials(reg) == []  # leaving SCA revokes the content access certificates
    admin = admin_client(server)
    r = admin.put(f"/owners/{org}", json={"contentAccessModeList": "entitlement", "contentAccessMode": SCA})
    assert r.status_code == 400
    assert admin.put(f"/owners/{org}", json={"contentAccessModeList": "org_environment"}).json()[
        "contentAccessMode"] == SCA  # a list without the current mode moves the org to the one it allows
    created = json.loads(server.admin("org", "create", "cli-ent-" + org, "--content-access-mode", "entitlement"))
    assert created["contentAccessMode"] == ENTITLEMENT
    assert json.loads(server.admin("org", "create", "cli-sca-" + org))["contentAccessMode"] == SCA
    listing = {o["key"]: o["contentAccessMode"] for o in json.loads(server.admin("org", "list", "--json"))}
    assert listing["cli-ent-" + org] == ENTITLEMENT and listing[org] == SCA


def test_serve_sets_the_bootstrap_orgs_mode(ftmock: FtmockServer) -> None:
    admin = admin_client(ftmock)
    assert admin.get("/owners/admin").json()["contentAccessMode"] == SCA
    ftmock.extra_args = ["--content-access-mode", "entitlement"]
    ftmock.restart()
    assert admin.get("/owners/admin").json()["contentAccessMode"] == ENTITLEMENT
    ftmock.extra_args = []
    ftmock.restart()  # not given: the org keeps what it has
    assert admin.get("/owners/admin").json()["contentAccessMode"] == ENTITLEMENT


def test_content_overrides(server: FtmockServer, org: str, tmp_path: Path) -> None:
    reg = register(server, tmp_path, org)
    path = f"/consumers/{reg.uuid}/content_overrides"
    assert reg.client.get(path).json() == []
    r = reg.client.put(path, json=[{"contentLabel": "el9-baseos", "name": "Enabled", "value": "0"},
                                   {"contentLabel": "el9-baseos", "name": "gpgcheck", "value": "0"},
                                   {"contentLabel": "el9-debug", "name": "enabled", "value": "1"}])
    assert r.status_code == 200, r.text
    assert [(o["contentLabel"], o["name"], o["value"]) for o in r.json()] == [
        ("el9-baseos", "enabled", "0"), ("el9-baseos", "gpgcheck", "0"), ("el9-debug", "enabled", "1")]
    # name and label are the client's own: refused, and nothing of the request is stored
    r = reg.client.put(path, json=[{"contentLabel": "x", "name": "enabled", "value": "1"},
                                   {"contentLabel": "x", "name": "label", "value": "y"}])
    assert r.status_code == 400 and "label" in r.json()["displayMessage"]
    assert len(reg.client.get(path).json()) == 3
    r = reg.client.delete(path, json=[{"contentLabel": "el9-baseos", "name": "gpgcheck"}])
    assert [(o["contentLabel"], o["name"]) for o in r.json()] == [("el9-baseos", "enabled"), ("el9-debug", "enabled")]
    assert [o["contentLabel"] for o in reg.client.delete(path, json=[{"contentLabel": "el9-baseos"}]).json()] == [
        "el9-debug"]
    assert reg.client.delete(path).json() == []
    # Another consumer's overrides are not ours to read.
    other = register(server, tmp_path, org)
    assert other.client.get(path).status_code == 403


def test_python_rhsm_calls_of_simple_content_access(server: FtmockServer, org: str, tmp_path: Path,
                                                    rhsm_common: dict[str, Any]) -> None:
    content_product(server, org, "69", {"el9-baseos": BASEOS})
    reg = register(server, tmp_path, org, csr=False)
    me = rc.UEPConnection(cert_file=reg.cert_path, key_file=reg.key_path, **rhsm_common)
    assert me.getOwner(reg.uuid)["contentAccessMode"] == SCA
    listing = me.getAccessibleContent(reg.uuid)
    [(serial, pieces)] = listing["contentListing"].items()
    assert create_from_pem("".join(pieces)).entitlement_type == b"OrgLevel"
    assert [s["serial"] for s in me.getCertificateSerials(reg.uuid)] == [int(serial)]
    me.setContentOverrides(reg.uuid, [{"contentLabel": "el9-baseos", "name": "enabled", "value": "0"}])
    assert [(o["contentLabel"], o["value"]) for o in me.getContentOverrides(reg.uuid)] == [("el9-baseos", "0")]
    me.deleteContentOverrides(reg.uuid, [{"contentLabel": "el9-baseos"}])
    assert me.getContentOverrides(reg.uuid) == []
    assert me.bind(reg.uuid) == []  # auto-attach: nothing in SCA
