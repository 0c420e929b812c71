"""Pools, entitlements, derived virt pools, activation keys and compliance."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import FtmockServer
from tests.ftmock.conftest import admin_client, checkin, hypervisor, register
from tests.kit.orgs import make_pool

# Attach, auto-attach and derived pools: entitlement-mode behaviour.
pytestmark = pytest.mark.content_access("entitlement")


def test_attach_issues_certificates_and_unattach_removes_them(server: FtmockServer, org: str,
                                                              tmp_path: Path) -> None:
    pool = make_pool(server, org, "RHEL", quantity=2)
    reg = register(server, tmp_path, org, name="sys", installed=["RHEL"])
    r = reg.client.post(f"/consumers/{reg.uuid}/entitlements?pool={pool}")
    assert r.status_code == 200, r.text
    ent = r.json()[0]
    assert ent["pool"]["id"] == pool
    serial = ent["certificates"][0]["serial"]["serial"]
    serials = reg.client.get(f"/consumers/{reg.uuid}/certificates/serials").json()
    assert [s["serial"] for s in serials] == [serial]
    certs = reg.client.get(f"/consumers/{reg.uuid}/certificates?serials={serial}").json()
    assert len(certs) == 1
    assert "BEGIN CERTIFICATE" in certs[0]["cert"] and "PRIVATE KEY" in certs[0]["key"]
    assert reg.client.get(f"/consumers/{reg.uuid}/certificates?serials=999999").json() == []
    assert reg.client.delete(f"/consumers/{reg.uuid}/entitlements/{ent['id']}").status_code == 204
    assert reg.client.get(f"/consumers/{reg.uuid}/certificates/serials").json() == []


def test_pool_quantity_is_enforced(server: FtmockServer, org: str, tmp_path: Path) -> None:
    pool = make_pool(server, org, "ONE", quantity=1)
    a = register(server, tmp_path, org, name="a")
    b = register(server, tmp_path, org, name="b")
    assert a.client.post(f"/consumers/{a.uuid}/entitlements?pool={pool}").status_code == 200
    r = b.client.post(f"/consumers/{b.uuid}/entitlements?pool={pool}")
    assert r.status_code == 403
    assert "no subscriptions are available" in r.json()["displayMessage"]
    assert pool not in [p["id"] for p in b.client.get(f"/pools?consumer={b.uuid}").json()]


def test_compliance_valid_partial_invalid(server: FtmockServer, org: str, tmp_path: Path) -> None:
    p1 = make_pool(server, org, "P1")
    p2 = make_pool(server, org, "P2")
    reg = register(server, tmp_path, org, name="c", installed=["P1", "P2"])

    def status() -> str:
        return str(reg.client.get(f"/consumers/{reg.uuid}/compliance").json()["status"])

    assert status() == "invalid"
    reg.client.post(f"/consumers/{reg.uuid}/entitlements?pool={p1}")
    assert status() == "partial"
    reg.client.post(f"/consumers/{reg.uuid}/entitlements?pool={p2}")
    assert status() == "valid"
    assert reg.client.get(f"/consumers/{reg.uuid}/compliance").json()["compliant"] is True


def test_auto_attach_covers_installed_products(server: FtmockServer, org: str, tmp_path: Path) -> None:
    make_pool(server, org, "A1")
    make_pool(server, org, "A2")
    reg = register(server, tmp_path, org, name="auto", installed=["A1", "A2", "NOPE"])
    r = reg.client.post(f"/consumers/{reg.uuid}/entitlements")
    assert r.status_code == 200
    assert sorted(e["pool"]["productId"] for e in r.json()) == ["A1", "A2"]
    comp = reg.client.get(f"/consumers/{reg.uuid}/compliance").json()
    assert comp["status"] == "partial"
    assert comp["nonCompliantProducts"] == ["NOPE"]


def test_activation_key_registration_without_password(server: FtmockServer, org: str, tmp_path: Path) -> None:
    pool = make_pool(server, org, "AK")
    r = admin_client(server).post(f"/owners/{org}/activation_keys",
                                  json={"name": "key1", "pools": [{"poolId": pool, "quantity": 1}]})
    assert r.status_code == 200, r.text
    reg = register(server, tmp_path, org, name="ak-sys", activation_keys="key1")
    ents = reg.client.get(f"/consumers/{reg.uuid}/entitlements").json()
    assert [e["pool"]["id"] for e in ents] == [pool]
    from tests.ftmock.conftest import Client

    r = Client(server).post(f"/consumers?owner={org}&activation_keys=nosuchkey", json={"name": "x"})
    assert r.status_code == 400
    assert "nosuchkey" in r.json()["displayMessage"]


def test_failed_attach_during_registration_leaves_no_consumer(server: FtmockServer, org: str,
                                                              tmp_path: Path) -> None:
    pool = make_pool(server, org, "SCARCE", quantity=1)
    admin = admin_client(server)
    admin.post(f"/owners/{org}/activation_keys", json={"name": "k", "pools": [pool]})
    register(server, tmp_path, org, name="first", activation_keys="k")
    from tests.ftmock.conftest import Client

    r = Client(server).post(f"/consumers?owner={org}&activation_keys=k", json={"name": "second"})
    assert r.status_code == 403
    names = [c["name"] for c in admin.get(f"/owners/{org}/consumers").json()]
    assert names == ["first"]


def test_hypervisor_entitlement_derives_host_restricted_virt_pool(server: FtmockServer, org: str,
                                                                  tmp_path: Path) -> None:
    pool = make_pool(server, org, "VDC", quantity=2, attributes={"virt_limit": "unlimited"})
    guest_uuid = "11223344-5566-7788-99aa-bbccddeeff00"
    # Reported in the byte-swapped, upper-case spelling: the server must still link the guest.
    swapped = "44332211-6655-8877-99AA-BBCCDDEEFF00"
    job = checkin(server, org, {"hypervisors": [hypervisor("host-a", [swapped]),
                                                hypervisor("host-b", ["other-guest"])]})
    assert job["state"] == "FINISHED"
    admin = admin_client(server)
    hyps = {c["name"]: c for c in admin.get(f"/owners/{org}/consumers?type=hypervisor").json()}
    r = admin.post(f"/consumers/{hyps['host-a']['uuid']}/entitlements?pool={pool}")
    assert r.status_code == 200, r.text
    derived = [p for p in admin.get(f"/owners/{org}/pools").json() if p["type"] == "ENTITLEMENT_DERIVED"]
    assert len(derived) == 1
    assert derived[0]["requiresHost"] == hyps["host-a"]["uuid"]
    assert derived[0]["hypervisorId"] == "host-a"

    guest = register(server, tmp_path, org, name="g", facts={"virt.uuid": guest_uuid, "virt.is_guest": "true"},
                     installed=["VDC"])
    # The guest is linked to the hypervisor that reports it, whatever the spelling of its UUID.
    assert guest.client.get(f"/consumers/{guest.uuid}/host").json()["uuid"] == hyps["host-a"]["uuid"]
    assert [g["uuid"] for g in admin.get(f"/consumers/{hyps['host-a']['uuid']}/guests").json()] == [guest.uuid]
    attachable = [p["id"] for p in guest.client.get(f"/pools?consumer={guest.uuid}").json()]
    assert derived[0]["id"] in attachable
    r = guest.client.post(f"/consumers/{guest.uuid}/entitlements")
    assert r.status_code == 200
    assert [e["pool"]["id"] for e in r.json()] == [derived[0]["id"]]

    # A guest of another host may not use host-a's virt pool.
    stranger = register(server, tmp_path, org, name="s", facts={"virt.uuid": "other-guest"})
    r = stranger.client.post(f"/consumers/{stranger.uuid}/entitlements?pool={derived[0]['id']}")
    assert r.status_code == 403
    assert "another hypervisor" in r.json()["displayMessage"]

    # Removing the host's entitlement removes the derived pool and what it entitled.
    host_ent = admin.get(f"/consumers/{hyps['host-a']['uuid']}/entitlements").json()[0]
    admin.delete(f"/consumers/{hyps['host-a']['uuid']}/entitlements/{host_ent['id']}")
    assert guest.client.get(f"/consumers/{guest.uuid}/entitlements").json() == []
