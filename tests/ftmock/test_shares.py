"""FT groups whose hypervisors belong to another organization, through explicit shares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import FtmockServer
from tests.ftmock.conftest import Client, admin_client, checkin, register
from tests.ftmock.test_failover import REPORT1, REPORT2, VM1, entitle_hosts
from tests.kit.orgs import ENTITLEMENT, make_pool, new_org, org_user


def consumer(server: FtmockServer, uuid: str) -> dict[str, Any]:
    r = admin_client(server).get(f"/consumers/{uuid}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def group_of(server: FtmockServer, reporter_org: str) -> dict[str, str]:
    """instanceUUID -> consumer uuid, for the FT consumers the reporting org still lists (no org yet)."""
    rows = admin_client(server).get(f"/owners/{reporter_org}/consumers?type=system").json()
    return {c["facts"]["instanceUUID"]: c["uuid"] for c in rows if "instanceUUID" in c["facts"]}


def hosts_of_entitlements(server: FtmockServer, uuid: str) -> list[tuple[str, str]]:
    """(pool owner, hypervisorId) behind each entitlement of a consumer."""
    ents = admin_client(server).get(f"/consumers/{uuid}/entitlements").json()
    return sorted((e["pool"]["owner"]["key"], str(e["pool"].get("hypervisorId"))) for e in ents)


def ft_setup(server: FtmockServer) -> tuple[str, str, dict[str, str]]:
    """orgx reports the design's Report 1 and entitles its hypervisors; orgy is where the VM registers.

    Both in entitlement mode: what a share grants is entitlements from orgx's hosts."""
    orgx, orgy = new_org(server, mode=ENTITLEMENT), new_org(server, mode=ENTITLEMENT)
    pool = make_pool(server, orgx, "RHEL-VDC", attributes={"virt_limit": "unlimited"})
    assert checkin(server, orgx, REPORT1)["state"] == "FINISHED"
    entitle_hosts(server, orgx, pool, ["hyp-a", "hyp-b", "hyp-c"])
    return orgx, orgy, group_of(server, orgx)


def test_share_lets_another_org_adopt_and_entitle_the_group(server: FtmockServer, tmp_path: Path) -> None:
    orgx, orgy, g = ft_setup(server)
    out = json.loads(server.admin("share", "create", "--org", orgx, "--with", orgy))
    assert out["owner"]["key"] == orgx and out["recipient"]["key"] == orgy
    listed = json.loads(server.admin("share", "list", "--org", orgy))
    assert [(s["owner"]["key"], s["recipient"]["key"]) for s in listed] == [(orgx, orgy)]

    reg = register(server, tmp_path, orgy, name="ft-vm", facts={"virt.uuid": VM1}, installed=["RHEL-VDC"])
    # The registration returns the group's role-0 consumer and the whole group moves to orgy.
    assert reg.uuid == g["VM_A"]
    for uuid in g.values():
        assert consumer(server, uuid)["owner"]["key"] == orgy
    # The reporting org no longer lists them: they are orgy's now.
    assert group_of(server, orgx) == {}

    # Auto-attach takes the virt pool derived from hypervisor A, which belongs to orgx.
    r = reg.client.post(f"/consumers/{reg.uuid}/entitlements")
    assert r.status_code == 200, r.text
    assert hosts_of_entitlements(server, g["VM_A"]) == [(orgx, "hyp-a")]
    # The backup is entitled from its own host, across the share too.
    assert hosts_of_entitlements(server, g["VM_B"]) == [(orgx, "hyp-b")]
    compliance = reg.client.get(f"/consumers/{reg.uuid}/compliance").json()
    assert compliance["status"] == "valid"

    # Failover reported by orgx after the group moved: same rules as within one org.
    assert checkin(server, orgx, REPORT2)["state"] == "FINISHED"
    r = reg.client.get(f"/consumers/{reg.uuid}")
    assert r.status_code == 308
    successor = r.json()["failover"]["to"]
    assert successor == g["VM_B"]
    assert consumer(server, successor)["owner"]["key"] == orgy
    assert hosts_of_entitlements(server, successor) == [(orgx, "hyp-b")]
    assert hosts_of_entitlements(server, g["VM_A"]) == []
    rows = admin_client(server).get(f"/owners/{orgy}/consumers?type=system").json()
    new_backup = [c for c in rows if c["facts"].get("instanceUUID") == "VM_C"]
    assert len(new_backup) == 1 and hosts_of_entitlements(server, new_backup[0]["uuid"]) == [(orgx, "hyp-c")]


def test_without_a_share_the_group_is_not_adoptable(server: FtmockServer, tmp_path: Path) -> None:
    _orgx, orgy, g = ft_setup(server)
    reg = register(server, tmp_path, orgy, name="guessing-vm", facts={"virt.uuid": VM1}, installed=["RHEL-VDC"])
    assert reg.uuid not in g.values()
    assert all(consumer(server, uuid).get("owner") is None for uuid in g.values())  # Candlepin leaves nulls out
    # The plain consumer cannot take the other org's virt pools either.
    r = reg.client.post(f"/consumers/{reg.uuid}/entitlements")
    assert r.status_code == 200 and r.json() == []
    log = (server.data_dir.parent / f"{server.data_dir.name}.log").read_text()
    assert f"registration in {orgy} names virt.uuid {VM1}" in log and "does not share" in log


def test_revoking_a_share_removes_its_entitlements_and_keeps_the_consumers(server: FtmockServer,
                                                                            tmp_path: Path) -> None:
    orgx, orgy, g = ft_setup(server)
    admin = admin_client(server)
    r = admin.post(f"/owners/{orgx}/shares", json={"recipient": {"key": orgy}})
    assert r.status_code == 200, r.text
    own_pool = make_pool(server, orgy, "OWN-PRODUCT")
    reg = register(server, tmp_path, orgy, name="ft-vm", facts={"virt.uuid": VM1}, installed=["RHEL-VDC"])
    assert reg.client.post(f"/consumers/{reg.uuid}/entitlements").status_code == 200
    assert reg.client.post(f"/consumers/{reg.uuid}/entitlements?pool={own_pool}").status_code == 200
    assert len(reg.client.get(f"/consumers/{reg.uuid}/certificates/serials").json()) == 2

    r = admin.delete(f"/owners/{orgx}/shares/{orgy}")
    assert r.status_code == 200, r.text
    assert r.json()["removedEntitlements"] == 2  # primary's and backup's
    assert sorted(r.json()["consumers"]) == sorted([g["VM_A"], g["VM_B"]])
    # The consumers stay, with orgy's own entitlement; the shared ones are gone.
    assert reg.client.get(f"/consumers/{reg.uuid}").status_code == 200
    assert [p for p, _ in hosts_of_entitlements(server, reg.uuid)] == [orgy]
    assert hosts_of_entitlements(server, g["VM_B"]) == []
    assert len(reg.client.get(f"/consumers/{reg.uuid}/certificates/serials").json()) == 1
    # Nothing from orgx is attachable any more.
    assert reg.client.post(f"/consumers/{reg.uuid}/entitlements").json() == []
    assert admin.get(f"/owners/{orgx}/shares").json() == []
    assert admin.delete(f"/owners/{orgx}/shares/{orgy}").status_code == 404
    log = (server.data_dir.parent / f"{server.data_dir.name}.log").read_text()
    assert f"share {orgx} -> {orgy} revoked: 2 entitlements removed" in log


def test_a_share_grants_only_the_derived_pools_of_the_consumers_host(server: FtmockServer, tmp_path: Path) -> None:
    orgx, orgy, _g = ft_setup(server)
    admin = admin_client(server)
    assert admin.post(f"/owners/{orgx}/shares", json={"recipient": orgy}).status_code == 200
    reg = register(server, tmp_path, orgy, name="ft-vm", facts={"virt.uuid": VM1}, installed=["RHEL-VDC"])
    pools = reg.client.get(f"/pools?consumer={reg.uuid}").json()
    # Of orgx's pools, only the one derived from the consumer's own host (hypervisor A).
    assert [(p["owner"]["key"], p["hypervisorId"]) for p in pools] == [(orgx, "hyp-a")]
    orgx_pools = admin.get(f"/owners/{orgx}/pools").json()
    base = next(p for p in orgx_pools if p.get("sourceEntitlement") is None)
    other_host = next(p for p in orgx_pools if p.get("hypervisorId") == "hyp-c")
    assert reg.client.get(f"/pools/{pools[0]['id']}").status_code == 200
    assert reg.client.get(f"/pools/{base['id']}").status_code == 403
    assert reg.client.get(f"/pools/{other_host['id']}").status_code == 403
    assert reg.client.post(f"/consumers/{reg.uuid}/entitlements?pool={base['id']}").status_code == 403
    assert reg.client.post(f"/consumers/{reg.uuid}/entitlements?pool={other_host['id']}").status_code == 403
    # A consumer has no access to either org's collections.
    for path in (f"/owners/{orgx}/pools", f"/owners/{orgx}/consumers", f"/owners/{orgx}/shares",
                 f"/owners/{orgy}/shares"):
        assert reg.client.get(path).status_code == 403, path


def test_share_input_errors(server: FtmockServer) -> None:
    orgx = new_org(server)
    admin = admin_client(server)
    assert admin.post(f"/owners/{orgx}/shares", json={"recipient": {"key": orgx}}).status_code == 400
    assert admin.post(f"/owners/{orgx}/shares", json={"recipient": {"key": "no-such-org"}}).status_code == 404
    assert admin.post(f"/owners/{orgx}/shares", json={"recipient": 5}).status_code == 400
    assert admin.post(f"/owners/{orgx}/shares", json=[]).status_code == 400
    assert admin.post("/owners/no-such-org/shares", json={"recipient": orgx}).status_code == 404
    for r in (admin.post(f"/owners/{orgx}/shares", json={"recipient": "x"}),):
        assert "displayMessage" in r.json()


def user_client(server: FtmockServer, org: str, role: str = "admin") -> Client:
    return Client(server, auth=org_user(server, org, role))


def test_users_of_the_recipient_org_see_nothing_of_the_sharing_org(server: FtmockServer, tmp_path: Path) -> None:
    orgx, orgy, g = ft_setup(server)
    x_admin, y_admin, y_reporter = user_client(server, orgx), user_client(server, orgy), user_client(server, orgy, "reporter")
    # Only an admin of the sharing org creates the share.
    assert y_admin.post(f"/owners/{orgx}/shares", json={"recipient": orgy}).status_code == 403
    assert y_reporter.post(f"/owners/{orgy}/shares", json={"recipient": orgx}).status_code == 403
    assert x_admin.post(f"/owners/{orgx}/shares", json={"recipient": orgy}).status_code == 200
    reg = register(server, tmp_path, orgy, name="ft-vm", facts={"virt.uuid": VM1}, installed=["RHEL-VDC"])
    assert reg.client.post(f"/consumers/{reg.uuid}/entitlements").status_code == 200
    shared_pool = admin_client(server).get(f"/consumers/{reg.uuid}/entitlements").json()[0]["pool"]["id"]

    # orgy's admin manages its own consumers (the adopted group included) and nothing of orgx.
    assert y_admin.get(f"/consumers/{g['VM_A']}").status_code == 200
    assert {c["uuid"] for c in y_admin.get(f"/owners/{orgy}/consumers").json()} >= set(g.values())
    for path in (f"/owners/{orgx}/consumers", f"/owners/{orgx}/consumers?type=hypervisor", f"/owners/{orgx}/pools",
                 f"/pools?owner={orgx}", f"/pools/{shared_pool}", f"/owners/{orgx}/products"):
        assert y_admin.get(path).status_code == 403, path
    hyp_a = next(c["uuid"] for c in admin_client(server).get(f"/owners/{orgx}/consumers?type=hypervisor").json()
                 if c["name"] == "hyp-a")
    assert y_admin.get(f"/consumers/{hyp_a}").status_code == 403
    assert all(p["owner"]["key"] == orgy for p in y_admin.get(f"/owners/{orgy}/pools").json())
    # And orgx's admin no longer reads the VM it shared away.
    assert x_admin.get(f"/consumers/{reg.uuid}").status_code == 403
    assert x_admin.get(f"/owners/{orgx}/shares").json()[0]["recipient"]["key"] == orgy
