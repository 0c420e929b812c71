"""A guest's whole life through python-rhsm's UEPConnection (1.19.2), against ftmock over mutual TLS.

Every call subscription-manager and virt-who make through `rhsm.connection` for a guest and its host
is made here, in the order a real system makes them, with the client's own parsing: its JSON
handling, its exceptions, and `rhsm.certificate` for the certificates. The calls of
subscription-manager's other commands (release, service level, system purpose, environments,
profiles, guest ids...) are in test_rhsm_commands.py.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import rhsm.connection as rc
from rhsm.certificate import create_from_pem
from rhsm.certificate2 import EntitlementCertificate, IdentityCertificate

from tests.conftest import FtmockServer
from tests.ftmock.conftest import admin_client
from tests.kit.ftmock import finished_job

VIRT_UUID = "4c4c4544-0051-3410-8050-b4c04f4b4e31"
HOST_ID = "esx-host-1.example.com"


def _products(server: FtmockServer, org: str) -> dict[str, str]:
    admin = admin_client(server)
    for body in (
        {"id": "479", "name": "Guest Linux", "attributes": {"version": "9", "arch": "x86_64"},
         "productContent": [{"content": {"label": "guest-linux-rpms", "contentUrl": "/content/guest/os"},
                             "enabled": True}]},
        {"id": "GL-SUB", "name": "Guest Linux Subscription", "providedProducts": ["479"]},
        {"id": "DC-SUB", "name": "Datacenter", "providedProducts": ["479"], "attributes": {"virt_limit": "unlimited"}},
    ):
        assert admin.post(f"/owners/{org}/products", json=body).status_code == 200
    pools = {}
    for sku in ("GL-SUB", "DC-SUB"):
        r = admin.post(f"/owners/{org}/pools", json={"productId": sku, "quantity": 10})
        assert r.status_code == 200, r.text
        pools[sku] = r.json()["id"]
    r = admin.post(f"/owners/{org}/activation_keys", json={"name": "guest-key", "pools": [pools["GL-SUB"]]})
    assert r.status_code == 200, r.text
    return pools


def _identity(tmp: Path, name: str, consumer: dict[str, Any]) -> tuple[str, str]:
    cert, key = tmp / f"{name}-cert.pem", tmp / f"{name}-key.pem"
    cert.write_text(consumer["idCert"]["cert"])
    key.write_text(consumer["idCert"]["key"])
    key.chmod(0o600)
    return str(cert), str(key)


@pytest.mark.content_access("entitlement")  # binds, derived pools, compliance: entitlement-mode content
def test_a_guests_whole_life_through_python_rhsm(server: FtmockServer, org: str, tmp_path: Path,
                                                  rhsm_common: dict[str, Any]) -> None:
    pools = _products(server, org)
    admin = rc.UEPConnection(username="admin", password=server.admin_password, **rhsm_common)

    # Status and capabilities, owners
    status = admin.getStatus()
    assert status["result"] is True and "managerCapabilities" in status
    for capability in ("cert_v3", "remove_by_pool_id", "hypervisors_async"):
        assert admin.has_capability(capability)
    assert org in [o["key"] for o in admin.getOwnerList("admin")]
    assert org in [o["key"] for o in admin.getOwners()]

    # virt-who: the host reports the guest (asynchronously), then the job is polled
    assert admin.has_capability("hypervisors_async")
    mapping = {"hypervisors": [{"hypervisorId": {"hypervisorId": HOST_ID}, "name": HOST_ID,
                                "guestIds": [{"guestId": VIRT_UUID, "state": 1, "attributes": {"active": 1}}],
                                "facts": {"hypervisor.type": "VMware ESXi"}}]}
    job = admin.hypervisorCheckIn(org, "", mapping, options=SimpleNamespace(reporter_id="virt-who-1"))
    assert job["statusPath"] == f"/jobs/{job['id']}" and job["key"] == "HypervisorUpdateJob"
    job = finished_job(admin.getJob, job["id"])
    assert job["state"] == "FINISHED" and job["principal"] == "admin" and "endTime" in job
    assert [h["hypervisorId"]["hypervisorId"] for h in job["resultData"]["created"]] == [HOST_ID]
    host = next(c for c in admin.getConsumers(owner=org) if c["type"]["label"] == "hypervisor")
    assert [g["guestId"] for g in admin.getConsumer(host["uuid"])["guestIds"]] == [VIRT_UUID]
    # The host gets the datacenter subscription; its guests get a derived virt pool
    admin.bindByEntitlementPool(host["uuid"], pools["DC-SUB"])

    # Register with a password (the server generates the key), read back as the consumer
    facts = {"virt.uuid": VIRT_UUID, "virt.is_guest": "true", "network.hostname": "guest1.example.com"}
    installed = [{"productId": "479", "productName": "Guest Linux", "version": "9", "arch": "x86_64"}]
    consumer = admin.registerConsumer(name="guest1", type="system", facts=facts, owner=org,
                                      installed_products=installed)
    uuid = consumer["uuid"]
    ident = create_from_pem(consumer["idCert"]["cert"])
    assert isinstance(ident, IdentityCertificate) and ident.subject["CN"] == uuid
    cert_file, key_file = _identity(tmp_path, "guest1", consumer)
    me = rc.UEPConnection(cert_file=cert_file, key_file=key_file, **rhsm_common)
    back = me.getConsumer(uuid)
    assert back["uuid"] == uuid and back["owner"]["key"] == org and back["facts"]["virt.uuid"] == VIRT_UUID
    assert me.getOwner(uuid)["key"] == org
    assert back["entitlementStatus"] == "invalid"

    # Check-in data: facts, installed products, guest ids (a nested host reports its guests too)
    me.updateConsumer(uuid, facts={**facts, "cpu.cpu_socket(s)": "2"}, installed_products=installed,
                      guest_uuids=["0a0b0c0d-0000-1111-2222-333344445555"])
    back = me.getConsumer(uuid)
    assert back["facts"]["cpu.cpu_socket(s)"] == "2"
    assert [g["guestId"] for g in back["guestIds"]] == ["0a0b0c0d-0000-1111-2222-333344445555"]
    assert [p["productId"] for p in back["installedProducts"]] == ["479"]

    # Pools for the consumer: the new URL (with the owner) and the old one agree
    listed = {p["id"] for p in me.getPoolsList(consumer=uuid, owner=org)}
    assert listed == {p["id"] for p in me.getPoolsList(consumer=uuid)}
    derived = [p for p in me.getPoolsList(consumer=uuid, owner=org) if p["type"] == "ENTITLEMENT_DERIVED"]
    assert len(derived) == 1 and pools["GL-SUB"] in listed
    assert me.getPool(pools["GL-SUB"])["productName"] == "Guest Linux Subscription"
    plan = me.dryRunBind(uuid, "")
    assert [p["pool"]["id"] for p in plan] == [derived[0]["id"]]  # the host's virt pool is preferred

    # bindByEntitlementPool, serials, certificates parsed by rhsm.certificate
    [ent] = me.bindByEntitlementPool(uuid, pools["GL-SUB"], quantity=1)
    serials = me.getCertificateSerials(uuid)
    assert [s["serial"] for s in serials] == [c["serial"]["serial"] for c in ent["certificates"]]
    [item] = me.getCertificates(uuid, serials=[str(serials[0]["serial"])])  # subscription-manager passes strings
    cert = create_from_pem(item["cert"])
    assert isinstance(cert, EntitlementCertificate) and cert.version.major == 3
    assert cert.order.sku == "GL-SUB" and [p.id for p in cert.products] == ["479"]
    assert [c.label for c in cert.content] == ["guest-linux-rpms"] and cert.pool.id == pools["GL-SUB"]
    compliance = me.getCompliance(uuid)
    assert compliance["status"] == "valid" and list(compliance["compliantProducts"]) == ["479"]
    assert "compliantUntil" in compliance
    assert [e["pool"]["id"] for e in me.getEntitlementList(uuid)] == [pools["GL-SUB"]]

    # unbindBySerial, bind (auto), unbindByPoolId, regenerate entitlement certificates, unbindAll
    me.unbindBySerial(uuid, serials[0]["serial"])
    assert me.getCertificateSerials(uuid) == []
    auto = me.bind(uuid)
    assert [e["pool"]["id"] for e in auto] == [derived[0]["id"]]
    me.unbindByPoolId(uuid, derived[0]["id"])
    assert me.getEntitlementList(uuid) == []
    me.bindByEntitlementPool(uuid, pools["GL-SUB"])
    before = {s["serial"] for s in me.getCertificateSerials(uuid)}
    assert me.regenEntitlementCertificates(uuid) is True
    after = {s["serial"] for s in me.getCertificateSerials(uuid)}
    assert len(after) == 1 and after.isdisjoint(before)
    me.unbindAll(uuid)
    assert me.getEntitlementList(uuid) == [] and me.getCompliance(uuid)["status"] == "invalid"

    # regenIdCertificate: a new identity (server key); the old certificate is retired
    renewed = me.regenIdCertificate(uuid)
    assert renewed["uuid"] == uuid and renewed["idCert"]["serial"]["serial"] != consumer["idCert"]["serial"]["serial"]
    with pytest.raises(rc.RestlibException) as retired:
        me.getConsumer(uuid)
    assert retired.value.code == 401
    cert_file, key_file = _identity(tmp_path, "guest1-renewed", renewed)
    me = rc.UEPConnection(cert_file=cert_file, key_file=key_file, **rhsm_common)
    assert me.getConsumer(uuid)["uuid"] == uuid

    # Registration with an activation key (no credentials at all)
    anonymous = rc.UEPConnection(**rhsm_common)
    keyed = anonymous.registerConsumer(name="guest2", type="system", facts={}, owner=org, keys=["guest-key"])
    assert [e["pool"]["id"] for e in admin.getEntitlementList(keyed["uuid"])] == [pools["GL-SUB"]]

    # A hypervisor registered by id, as virt-who's older path did
    hyp = admin.registerConsumer(name="esx-2", type="hypervisor", facts={}, owner=org, hypervisor_id="esx-2")
    assert hyp["hypervisorId"]["hypervisorId"] == "esx-2"

    # unregister: then every call for it is 410 (rhsm's GoneException, with the deleted id)
    me.unregisterConsumer(uuid)
    with pytest.raises(rc.GoneException) as gone:
        admin.getConsumer(uuid)
    assert gone.value.code == 410 and gone.value.deleted_id == uuid
