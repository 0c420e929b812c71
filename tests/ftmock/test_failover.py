"""The fault-tolerance design on the server: FT consumers, registration merge, failover, the 308."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.conftest import FtmockServer
from tests.ftmock.conftest import Client, admin_client, checkin, hypervisor, public_key_der, register
from tests.kit.orgs import make_pool

# The FT rules' entitlement moves are checked where content comes from entitlements.
pytestmark = pytest.mark.content_access("entitlement")

VM1 = "4a2f3e1c-0d9b-4e5f-8a7b-6c5d4e3f2a1b"


def ft_guest(instance: str, role: int, instances: list[str], guest: str = VM1) -> dict[str, Any]:
    return {"guestId": guest, "state": 1, "attributes": {
        "virtWhoType": "esx", "active": 1, "instanceUUID": instance,
        "ftinfo.role": str(role), "ftinfo.instanceUUIDs": instances}}


REPORT1 = {"hypervisors": [
    hypervisor("hyp-a", [ft_guest("VM_A", 0, ["VM_A", "VM_B"])]),
    hypervisor("hyp-b", [ft_guest("VM_B", 1, ["VM_A", "VM_B"])]),
    hypervisor("hyp-c", []),
]}
REPORT2 = {"hypervisors": [
    hypervisor("hyp-a", []),
    hypervisor("hyp-b", [ft_guest("VM_B", 0, ["VM_B", "VM_C"])]),
    hypervisor("hyp-c", [ft_guest("VM_C", 1, ["VM_B", "VM_C"])]),
]}
REPORT3 = {"hypervisors": [
    hypervisor("hyp-b", []),
    hypervisor("hyp-c", [ft_guest("VM_C", 0, ["VM_C", "VM_D"])]),
    hypervisor("hyp-d", [ft_guest("VM_D", 1, ["VM_C", "VM_D"])]),
]}


def group(server: FtmockServer, org: str) -> dict[str, dict[str, Any]]:
    """FT consumers of the org by instance UUID."""
    rows = admin_client(server).get(f"/owners/{org}/consumers?type=system").json()
    return {c["facts"]["instanceUUID"]: c for c in rows if "instanceUUID" in c["facts"]}


def entitle_hosts(server: FtmockServer, org: str, pool: str, names: list[str]) -> None:
    admin = admin_client(server)
    hyps = {h["name"]: h for h in admin.get(f"/owners/{org}/consumers?type=hypervisor").json()}
    for name in names:
        r = admin.post(f"/consumers/{hyps[name]['uuid']}/entitlements?pool={pool}")
        assert r.status_code == 200, r.text


def derived_pool_host(server: FtmockServer, org: str, pool_id: str) -> str:
    pool = admin_client(server).get(f"/pools/{pool_id}").json()
    return str(pool["hypervisorId"])


def held_hosts(server: FtmockServer, org: str, consumer: str) -> list[str]:
    ents = admin_client(server).get(f"/consumers/{consumer}/entitlements").json()
    return sorted(derived_pool_host(server, org, e["pool"]["id"]) for e in ents)


def test_design_use_case(server: FtmockServer, org: str, tmp_path: Path) -> None:
    pool = make_pool(server, org, "RHEL-VDC", attributes={"virt_limit": "unlimited"})
    # Report 1: one consumer per (virt.uuid, instanceUUID), FT facts, no org yet.
    job = checkin(server, org, REPORT1)
    assert job["state"] == "FINISHED"
    g = group(server, org)
    assert set(g) == {"VM_A", "VM_B"}
    assert g["VM_A"]["facts"]["ftinfo.role"] == "0" and g["VM_B"]["facts"]["ftinfo.role"] == "1"
    assert g["VM_A"]["facts"]["virt.uuid"] == VM1
    assert g["VM_A"].get("owner") is None and g["VM_B"].get("owner") is None  # Candlepin leaves nulls out
    consumer1, consumer2 = g["VM_A"]["uuid"], g["VM_B"]["uuid"]
    entitle_hosts(server, org, pool, ["hyp-a", "hyp-b"])

    # VM registration: the existing role-0 consumer comes back, merged with the registration facts.
    reg = register(server, tmp_path, org, name="ft-vm", facts={"virt.uuid": VM1.upper(), "os": "linux",
                                                                "ftinfo.role": "7"},
                   installed=["RHEL-VDC"])
    assert reg.uuid == consumer1
    assert reg.dto["facts"]["os"] == "linux"
    assert reg.dto["facts"]["ftinfo.role"] == "0"  # server-side facts win
    g = group(server, org)
    assert g["VM_B"]["owner"]["key"] == org  # the whole group joined the org
    r = reg.client.post(f"/consumers/{consumer1}/entitlements")
    assert r.status_code == 200
    assert held_hosts(server, org, consumer1) == ["hyp-a"]
    assert held_hosts(server, org, consumer2) == ["hyp-b"]  # the backup, from its own host

    # Report 2: failover.
    job = checkin(server, org, REPORT2)
    (fo,) = job["resultData"]["failovers"]
    assert (fo["from"], fo["to"]) == (consumer1, consumer2)
    # what a reporter logs: the VM, the old primary instance and host -> the new ones
    assert (fo["guestId"], fo["name"]) == (VM1, "ft-vm")
    assert (fo["fromInstance"], fo["fromHypervisor"]["hypervisorId"]) == ("VM_A", "hyp-a")
    assert (fo["toInstance"], fo["toHypervisor"]["hypervisorId"]) == ("VM_B", "hyp-b")
    assert fo["toHypervisor"]["name"] == "hyp-b" and fo["toHypervisor"]["uuid"]
    g = group(server, org)
    consumer3 = g["VM_C"]["uuid"]
    assert g["VM_B"]["facts"]["ftinfo.role"] == "0"
    assert g["VM_C"]["facts"]["ftinfo.role"] == "1" and g["VM_C"]["owner"]["key"] == org
    assert admin_client(server).get(f"/consumers/{consumer1}/entitlements").json() == []
    assert held_hosts(server, org, consumer2) == ["hyp-b"]
    # hyp-c has no virt subscription: the new backup is unentitled, the primary is not affected.
    comp2 = admin_client(server).get(f"/consumers/{consumer2}/compliance").json()["status"]
    comp3 = admin_client(server).get(f"/consumers/{consumer3}/compliance").json()["status"]
    assert (comp2, comp3) == ("valid", "invalid")
    entitle_hosts(server, org, pool, ["hyp-c"])
    checkin(server, org, REPORT2)  # the next report gives the backup what its host now offers
    assert held_hosts(server, org, consumer3) == ["hyp-c"]

    # The old identity gets a 308 with the successor's certificate for the same key.
    r = reg.client.get(f"/consumers/{consumer1}")
    assert r.status_code == 308
    assert r.headers["Location"] == f"/candlepin/consumers/{consumer2}"
    body = r.json()
    assert body["failover"]["from"] == consumer1 and body["failover"]["to"] == consumer2
    successor = body["failover"]["consumer"]
    assert "key" not in successor["idCert"]
    cert = x509.load_pem_x509_certificate(successor["idCert"]["cert"].encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == consumer2
    old_cert = x509.load_pem_x509_certificate(reg.dto["idCert"]["cert"].encode())
    assert public_key_der(cert) == public_key_der(old_cert)
    assert successor["facts"]["virt.uuid"] == VM1
    # Every request with the old identity, repeated, gets the same successor and never a 2xx.
    for method, path in (("GET", f"/consumers/{consumer1}/certificates"), ("PUT", f"/consumers/{consumer1}"),
                         ("POST", f"/consumers/{consumer1}/entitlements"), ("GET", "/status")):
        again = reg.client.call(method, path, json={})
        assert again.status_code == 308, (method, path)
        assert again.json()["failover"]["consumer"]["idCert"]["serial"] == successor["idCert"]["serial"]

    # With the new certificate and the same local key the guest is consumer 2.
    new_cert = tmp_path / "successor.pem"
    new_cert.write_text(successor["idCert"]["cert"])
    client2 = Client(server, cert=(str(new_cert), reg.key_path))
    r = client2.get(f"/consumers/{consumer2}")
    assert r.status_code == 200 and r.json()["uuid"] == consumer2
    assert r.json()["facts"]["os"] == "linux"  # the successor is the same VM: registration facts carry over
    assert r.json()["name"] == "ft-vm"
    assert client2.get(f"/consumers/{consumer2}/certificates/serials").json()

    # A chain: a second failover leads every older identity to the current primary.
    job = checkin(server, org, REPORT3)
    (fo,) = job["resultData"]["failovers"]
    assert (fo["from"], fo["to"]) == (consumer2, consumer3)
    assert (fo["fromInstance"], fo["fromHypervisor"]["hypervisorId"]) == ("VM_B", "hyp-b")
    assert (fo["toInstance"], fo["toHypervisor"]["hypervisorId"]) == ("VM_C", "hyp-c")
    for client in (reg.client, Client(server, cert=(str(new_cert), reg.key_path))):
        r = client.get("/status")
        assert r.status_code == 308
        assert r.json()["failover"]["to"] == consumer3


def test_stale_duplicate_and_partial_reports(server: FtmockServer, org: str, tmp_path: Path) -> None:
    checkin(server, org, REPORT1)
    g = group(server, org)
    c1, c2 = g["VM_A"]["uuid"], g["VM_B"]["uuid"]
    reg = register(server, tmp_path, org, name="vm", facts={"virt.uuid": VM1})
    assert reg.uuid == c1
    checkin(server, org, REPORT2)
    # Report 1 again, late: failover is monotonic, nothing flips back.
    job = checkin(server, org, REPORT1)
    assert "failovers" not in job["resultData"]
    g = group(server, org)
    assert g["VM_B"]["facts"]["ftinfo.role"] == "0"
    assert reg.client.get(f"/consumers/{c1}").status_code == 308
    # A partial report that leaves the group out changes nothing.
    checkin(server, org, {"hypervisors": [hypervisor("hyp-z", ["unrelated"])]})
    assert group(server, org)["VM_B"]["facts"]["ftinfo.role"] == "0"
    # The same instance reported by two hypervisors: one consumer, the primary unchanged.
    dup = {"hypervisors": [hypervisor("hyp-b", [ft_guest("VM_B", 0, ["VM_B", "VM_C"])]),
                           hypervisor("hyp-y", [ft_guest("VM_B", 0, ["VM_B", "VM_C"])])]}
    job = checkin(server, org, dup)
    assert job["state"] == "FINISHED" and "failovers" not in job["resultData"]
    assert sorted(group(server, org)) == ["VM_A", "VM_B", "VM_C"]
    assert group(server, org)["VM_B"]["uuid"] == c2


def test_vm_registered_before_any_report_becomes_the_primary(server: FtmockServer, org: str,
                                                             tmp_path: Path) -> None:
    reg = register(server, tmp_path, org, name="early", facts={"virt.uuid": VM1})
    checkin(server, org, REPORT1)
    g = group(server, org)
    assert g["VM_A"]["uuid"] == reg.uuid
    assert g["VM_A"]["facts"]["ftinfo.role"] == "0"
    assert g["VM_B"]["owner"]["key"] == org
    checkin(server, org, REPORT2)
    r = reg.client.get(f"/consumers/{reg.uuid}")
    assert r.status_code == 308 and r.json()["failover"]["to"] == g["VM_B"]["uuid"]


def test_ft_groups_are_per_organization(server: FtmockServer, org: str, tmp_path: Path) -> None:
    from tests.kit.orgs import new_org

    checkin(server, org, REPORT1)
    reg = register(server, tmp_path, org, name="vm", facts={"virt.uuid": VM1})
    other = new_org(server)
    stranger = register(server, tmp_path, other, name="same-uuid-elsewhere", facts={"virt.uuid": VM1})
    assert stranger.uuid != reg.uuid
    assert stranger.dto["owner"]["key"] == other
    assert {c["owner"]["key"] for c in group(server, org).values()} == {org}
    # A failover in one org leaves the other org's system alone.
    checkin(server, org, REPORT2)
    assert stranger.client.get(f"/consumers/{stranger.uuid}").status_code == 200


@pytest.mark.content_access("org_environment")
def test_failover_in_an_sca_org_moves_content_access_and_overrides(server: FtmockServer, org: str,
                                                                   tmp_path: Path) -> None:
    """The FT rules hold in SCA: role-0 registration, 308, successor; content access follows the instance."""
    admin = admin_client(server)
    assert admin.post(f"/owners/{org}/products", json={"id": "69", "name": "OS", "productContent": [
        {"content": {"label": "os", "contentUrl": "/content/os"}, "enabled": True}]}).status_code == 200
    assert admin.post(f"/owners/{org}/pools", json={"productId": "69", "quantity": 5}).status_code == 200
    checkin(server, org, REPORT1)
    reg = register(server, tmp_path, org, name="ft-vm", facts={"virt.uuid": VM1}, installed=["69"])
    g = group(server, org)
    assert reg.uuid == g["VM_A"]["uuid"]
    assert reg.client.post(f"/consumers/{reg.uuid}/entitlements").json() == []  # SCA: auto-attach binds nothing
    [old_serial] = [s["serial"] for s in reg.client.get(f"/consumers/{reg.uuid}/certificates/serials").json()]
    assert reg.client.put(f"/consumers/{reg.uuid}/content_overrides",
                          json=[{"contentLabel": "os", "name": "enabled", "value": "0"}]).status_code == 200
    chosen = {"releaseVer": {"releaseVer": "9.2"}, "role": "Server", "usage": "Production", "addOns": ["A1"],
              "serviceType": "L3", "autoheal": False}
    assert reg.client.put(f"/consumers/{reg.uuid}", json=chosen).status_code == 204

    checkin(server, org, REPORT2)
    successor = g["VM_B"]["uuid"]
    r = reg.client.get(f"/consumers/{reg.uuid}/certificates/serials")
    assert r.status_code == 308 and r.json()["failover"]["to"] == successor
    new_cert = tmp_path / "successor.pem"
    new_cert.write_text(r.json()["failover"]["consumer"]["idCert"]["cert"])
    client2 = Client(server, cert=(str(new_cert), reg.key_path))
    [new_serial] = [s["serial"] for s in client2.get(f"/consumers/{successor}/certificates/serials").json()]
    assert new_serial != old_serial
    # The predecessor's certificate is gone (revoked), the successor kept the VM's repository choices.
    assert not any(s["serial"] == old_serial for s in admin.get(f"/consumers/{reg.uuid}/certificates/serials").json())
    assert [(o["contentLabel"], o["value"]) for o in client2.get(f"/consumers/{successor}/content_overrides").json()] \
        == [("os", "0")]
    # ... and what the guest set on itself: release, system purpose, autoheal.
    me = client2.get(f"/consumers/{successor}").json()
    assert {k: me[k] for k in chosen} == chosen
