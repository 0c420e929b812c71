"""An FT VM registered in another org than its hypervisors', through ftreport, ftmock and ftagent."""

from __future__ import annotations

from pathlib import Path

from ftreport import examples
from tests.conftest import FtmockServer
from tests.e2e.conftest import Admin, report_config, run, vm_guest
from tests.kit.orgs import ENTITLEMENT, new_org


def test_failover_reported_by_the_sharing_org_reaches_the_guest(server: FtmockServer, admin: Admin,
                                                                tmp_path: Path, isolated_reporter_env: None) -> None:
    orgx, orgy = new_org(server, mode=ENTITLEMENT), new_org(server, mode=ENTITLEMENT)
    pool = admin.virt_pool(orgx)
    conf = report_config(tmp_path / "ftreport.conf", server, orgx, {"type": "fake", "file": "builtin:report1"})
    run("ftreport", "-c", str(conf), "--oneshot")
    admin.entitle_hypervisors(orgx, pool)
    server.admin("share", "create", "--org", orgx, "--with", orgy)
    a, b = examples.INSTANCE_A.lower(), examples.INSTANCE_B.lower()
    consumer1 = admin.ft_consumers(orgx)[a]["uuid"]

    guest = vm_guest(tmp_path / "guest", server, examples.VM1_UUID)
    reg = guest.json("register", "--org", orgy, "--username", "admin", "--password", server.admin_password,
                     "--auto-attach")
    assert reg["uuid"] == consumer1 and admin.call("GET", f"/consumers/{consumer1}")["owner"]["key"] == orgy
    assert admin.entitlement_hosts(consumer1) == [examples.HYPERVISOR_A.lower()]
    assert len(guest.entitlement_serials()) == 1

    # orgx's reporter sees the failover; the guest, registered in orgy, follows it.
    conf.write_text(conf.read_text().replace("builtin:report1", "builtin:report2"))
    run("ftreport", "-c", str(conf), "--oneshot")
    admin.entitle_hypervisors(orgx, pool)
    consumer2 = admin.ft_consumers(orgy)[b]["uuid"]
    guest.ftagent("checkin", check=True)
    ident = guest.json("identity")
    assert ident["uuid"] == consumer2 and ident["failed_over_from"] == consumer1
    assert admin.entitlement_hosts(consumer2) == [examples.HYPERVISOR_B.lower()]
    serials = {c["serial"] for c in admin.call("GET", f"/consumers/{consumer2}/certificates/serials")}
    assert serials and guest.entitlement_serials() == serials
    assert guest.json("status")["status"] == "valid"

    # Revoking the share takes the entitlements away at the guest's next refresh; it stays registered.
    revoked = admin.call("DELETE", f"/owners/{orgx}/shares/{orgy}")
    assert consumer2 in revoked["consumers"]
    guest.ftagent("refresh", check=True)
    assert guest.entitlement_serials() == set()
    assert guest.json("identity")["uuid"] == consumer2
    assert guest.json("status")["status"] != "valid"
