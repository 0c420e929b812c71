"""What a consumer sets on itself is stored and read back: release, service level and the rest of its
system purpose, autoheal, package profiles, guest ids; and what the org offers (service levels,
purpose values, owner info) is answered to whom Candlepin answers it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import FtmockServer
from tests.ftmock.conftest import Registered, admin_client, checkin, hypervisor, register
from tests.kit.orgs import ENTITLEMENT, new_org


def _offer(server: FtmockServer, org: str, pid: str, **attributes: str) -> None:
    admin = admin_client(server)
    assert admin.post(f"/owners/{org}/products", json={"id": pid, "name": pid, "attributes": attributes}).status_code == 200
    assert admin.post(f"/owners/{org}/pools", json={"productId": pid, "quantity": 5}).status_code == 200


def _me(reg: Registered) -> dict[str, Any]:
    r = reg.client.get(f"/consumers/{reg.uuid}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_release_is_stored_as_sent_and_always_an_object(server: FtmockServer, org: str, tmp_path: Path) -> None:
    reg = register(server, tmp_path, org, name="rel")
    assert _me(reg)["releaseVer"] == {"releaseVer": None}
    assert reg.client.get(f"/consumers/{reg.uuid}/release").json() == {"releaseVer": None}
    for sent, stored in (("9.2", "9.2"), ({"releaseVer": "9.4"}, "9.4"), ("", None)):
        assert reg.client.put(f"/consumers/{reg.uuid}", json={"releaseVer": sent}).status_code == 204
        assert _me(reg)["releaseVer"] == {"releaseVer": stored}
        assert reg.client.get(f"/consumers/{reg.uuid}/release").json() == {"releaseVer": stored}
    # A PUT that does not name it leaves it alone.
    reg.client.put(f"/consumers/{reg.uuid}", json={"releaseVer": "9"})
    reg.client.put(f"/consumers/{reg.uuid}", json={"facts": {"a": "1"}})
    assert _me(reg)["releaseVer"] == {"releaseVer": "9"}
    assert reg.client.put(f"/consumers/{reg.uuid}", json={"releaseVer": 9}).status_code == 400


def test_service_levels_come_from_the_orgs_subscriptions(server: FtmockServer, org: str, tmp_path: Path) -> None:
    _offer(server, org, "PREM", support_level="Premium", support_type="L1-L3", roles="Server,Workstation",
           usage="Production", addons="Smart Management")
    _offer(server, org, "STD", support_level="Standard")
    _offer(server, org, "PREM2", support_level="premium")  # the same level, another case
    _offer(server, org, "LAB", support_level="Lab", support_level_exempt="true")
    reg = register(server, tmp_path, org, name="sla")
    levels = reg.client.get(f"/owners/{org}/servicelevels")
    assert levels.status_code == 200 and levels.json() == ["Premium", "Standard"]
    assert reg.client.get(f"/owners/{org}/servicelevels?exempt=true").json() == ["Lab"]
    purpose = reg.client.get(f"/owners/{org}/system_purpose").json()["systemPurposeAttributes"]
    assert purpose == {"roles": ["Server", "Workstation"], "usage": ["Production"], "addons": ["Smart Management"],
                       "support_level": ["Lab", "Premium", "Standard"], "support_type": ["L1-L3"]}
    assert reg.client.put(f"/consumers/{reg.uuid}", json={"serviceLevel": "standard"}).status_code == 204
    assert _me(reg)["serviceLevel"] == "standard"
    r = reg.client.put(f"/consumers/{reg.uuid}", json={"serviceLevel": "Gold"})
    assert r.status_code == 400 and "'Gold'" in r.json()["displayMessage"]
    assert _me(reg)["serviceLevel"] == "standard"  # refused: nothing changed
    assert reg.client.put(f"/consumers/{reg.uuid}", json={"serviceLevel": ""}).status_code == 204
    assert _me(reg)["serviceLevel"] == ""
    # Another org's levels are not this consumer's to read.
    other = new_org(server)
    assert reg.client.get(f"/owners/{other}/servicelevels").status_code == 403


def test_system_purpose_and_autoheal_are_stored(server: FtmockServer, org: str, tmp_path: Path) -> None:
    reg = register(server, tmp_path, org, name="purpose")
    me = _me(reg)
    assert (me["role"], me["usage"], me["serviceType"], me["addOns"], me["autoheal"]) == ("", "", "", [], True)
    body = {"role": "Red Hat Enterprise Linux Server", "usage": "Development/Test", "serviceType": "L3",
            "addOns": ["ADDON1", "ADDON2"], "autoheal": False}
    assert reg.client.put(f"/consumers/{reg.uuid}", json=body).status_code == 204
    me = _me(reg)
    assert {k: me[k] for k in body} == body
    assert reg.client.put(f"/consumers/{reg.uuid}", json={"role": "", "addOns": [], "autoheal": "true"}).status_code == 204
    me = _me(reg)
    assert (me["role"], me["addOns"], me["autoheal"], me["usage"]) == ("", [], True, "Development/Test")
    for bad in ({"autoheal": "maybe"}, {"addOns": "ADDON1"}, {"role": 7}):
        assert reg.client.put(f"/consumers/{reg.uuid}", json=bad).status_code == 400, bad
    # The purpose is set at registration too.
    admin = admin_client(server)
    r = admin.post(f"/consumers?owner={org}", json={"name": "born-with-purpose", "facts": {}, "role": "Server",
                                                    "usage": "Production", "releaseVer": {"releaseVer": "9"},
                                                    "autoheal": False})
    assert r.status_code == 200, r.text
    born = r.json()
    assert (born["role"], born["usage"], born["releaseVer"], born["autoheal"]) == \
        ("Server", "Production", {"releaseVer": "9"}, False)


def test_package_profiles_read_back_what_was_sent(server: FtmockServer, org: str, tmp_path: Path) -> None:
    reg = register(server, tmp_path, org, name="packages")
    assert reg.client.get(f"/consumers/{reg.uuid}/packages").json() == []
    rpms = [{"name": "bash", "version": "5.1.8", "release": "9.el9", "arch": "x86_64", "epoch": 0, "vendor": "Red Hat"},
            {"name": "kernel", "version": "5.14.0", "release": "427.el9", "arch": "x86_64", "epoch": None,
             "vendor": "Red Hat"}]
    assert reg.client.put(f"/consumers/{reg.uuid}/packages", json=rpms).status_code == 204
    assert reg.client.get(f"/consumers/{reg.uuid}/packages").json() == rpms
    repos = [{"repositoryid": "baseos", "baseurl": ["https://cdn/content/baseos"]}]
    combined = [{"profile_type": "rpm", "profile": rpms[:1]}, {"profile_type": "enabled_repos", "profile": repos}]
    assert reg.client.put(f"/consumers/{reg.uuid}/profiles", json=combined).status_code == 204
    assert reg.client.get(f"/consumers/{reg.uuid}/packages").json() == rpms[:1]
    assert reg.client.get(f"/consumers/{reg.uuid}/profiles").json() == sorted(combined, key=lambda p: p["profile_type"])
    for bad in ([{"version": "1"}], {"name": "bash"}, [{"profile_type": "rpm"}]):
        path = "profiles" if bad == [{"profile_type": "rpm"}] else "packages"
        assert reg.client.put(f"/consumers/{reg.uuid}/{path}", json=bad).status_code == 400, bad
    other = register(server, tmp_path, org, name="other")
    assert other.client.get(f"/consumers/{reg.uuid}/packages").status_code == 403


def test_guest_ids_of_a_host_one_by_one_and_all_at_once(server: FtmockServer, org: str, tmp_path: Path) -> None:
    host = register(server, tmp_path, org, name="nested-host")
    path = f"/consumers/{host.uuid}/guestids"
    # Candlepin keeps guest attributes as strings; numbers are taken and read back as text.
    assert host.client.put(path, json=[{"guestId": "G-1", "attributes": {"active": 1, "virtWhoType": "libvirt"}},
                                       "g-2"]).status_code == 204
    assert sorted(g["guestId"] for g in host.client.get(path).json()) == ["G-1", "g-2"]
    one = host.client.get(f"{path}/g-1")  # guest ids match whatever their case
    assert one.status_code == 200 and one.json()["attributes"] == {"active": "1", "virtWhoType": "libvirt"}
    assert host.client.put(f"{path}/g-3", json={"guestId": "g-3", "attributes": {"active": 0}}).status_code == 204
    assert host.client.put(f"{path}/g-4").status_code == 204  # python-rhsm's addOrUpdateGuestId with a bare id
    assert host.client.put(f"{path}/g-5", json={"guestId": "other"}).status_code == 400
    assert host.client.delete(f"{path}/g-2").status_code == 204
    assert host.client.delete(f"{path}/g-2").status_code == 404
    assert sorted(g["guestId"] for g in host.client.get(path).json()) == ["G-1", "g-3", "g-4"]
    assert [g["guestId"] for g in _me(host)["guestIds"]] == ["G-1", "g-3", "g-4"]


def test_owner_calls_stay_a_users(server: FtmockServer, tmp_path: Path) -> None:
    org = new_org(server, mode=ENTITLEMENT)
    checkin(server, org, {"hypervisors": [hypervisor("esx-a", ["g1"]), hypervisor("esx-b", [])]})
    guest = register(server, tmp_path, org, name="g", facts={"virt.is_guest": "true"})
    admin = admin_client(server)
    info = admin.get(f"/owners/{org}/info").json()
    assert info["consumerCounts"] == {"hypervisor": 2, "system": 1}
    assert info["consumerGuestCounts"] == {"guest": 1, "physical": 0}
    assert sum(info["consumerCountsByComplianceStatus"].values()) == 3
    hosts = admin.get(f"/owners/{org}/hypervisors").json()
    assert sorted(h["name"] for h in hosts) == ["esx-a", "esx-b"]
    assert [h["name"] for h in admin.get(f"/owners/{org}/hypervisors?hypervisor_id=ESX-A").json()] == ["esx-a"]
    for path in (f"/owners/{org}/info", f"/owners/{org}/hypervisors"):
        assert guest.client.get(path).status_code == 403, path


def test_an_administrator_lists_every_pool(server: FtmockServer, tmp_path: Path) -> None:
    orgs = [new_org(server), new_org(server)]
    for org in orgs:
        _offer(server, org, "ALL")
    pools = admin_client(server).get("/pools")
    assert pools.status_code == 200
    assert {p["owner"]["key"] for p in pools.json()} >= set(orgs)
    reg = register(server, tmp_path, orgs[0], name="p")
    assert reg.client.get("/pools").status_code == 403


def test_integers_at_the_int64_bounds_and_numeric_guest_attributes(server: FtmockServer, org: str) -> None:
    """JSON integers down to int64's minimum are taken, as Candlepin's Java longs take them."""
    guest = {"guestId": "g", "state": -(2**63), "attributes": {"instanceUUID": 42, "active": 1}}
    job = checkin(server, org, {"hypervisors": [hypervisor("h1", [guest])]})
    assert job["state"] == "FINISHED", job
    [host] = admin_client(server).get(f"/owners/{org}/hypervisors").json()
    assert host["guestIds"][0]["guestId"] == "g"
    r = admin_client(server).post(f"/hypervisors/{org}?reporter_id=r", headers={"Content-Type": "application/json"},
                   data=b'{"hypervisors": [{"hypervisorId": "h2", "guestIds": [{"guestId": "g", '
                        b'"state": -9223372036854775809}]}]}')
    assert r.status_code == 400 and "64 bits" in r.json()["displayMessage"]
