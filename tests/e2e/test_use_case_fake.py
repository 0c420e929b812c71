"""The design's use case through all three programs: ftreport (fake source) -> ftmock -> ftagent."""

from __future__ import annotations

from pathlib import Path

import requests

from ftreport import examples
from tests.conftest import FtmockServer
from tests.e2e.conftest import Admin, report_config, run, vm_guest
from tests.kit.orgs import ENTITLEMENT, new_org


def test_report1_register_report2_checkin_swaps_identity(server: FtmockServer, admin: Admin, tmp_path: Path,
                                                         isolated_reporter_env: None) -> None:
    org = new_org(server, mode=ENTITLEMENT)  # the design's entitlements follow the hypervisor
    pool = admin.virt_pool(org)
    conf = report_config(tmp_path / "ftreport.conf", server, org, {"type": "fake", "file": "builtin:report1"})

    # Report 1: consumers for instance A (primary) and B (backup), no org yet.
    run("ftreport", "-c", str(conf), "--oneshot")
    ft = admin.ft_consumers(org)
    a, b = examples.INSTANCE_A.lower(), examples.INSTANCE_B.lower()
    assert set(ft) == {a, b}
    assert ft[a].get("owner") is None and ft[a]["facts"]["ftinfo.role"] == "0"
    admin.entitle_hypervisors(org, pool)

    # VM registration by virt.uuid returns consumer 1 (instance A) and entitles it from hypervisor A.
    guest = vm_guest(tmp_path / "guest", server, examples.VM1_UUID)
    reg = guest.json("register", "--org", org, "--username", "admin", "--password", server.admin_password,
                     "--auto-attach")
    consumer1 = ft[a]["uuid"]
    assert reg["uuid"] == consumer1
    assert admin.entitlement_hosts(consumer1) == [examples.HYPERVISOR_A.lower()]
    old_cert, old_key = (p.read_bytes() for p in guest.identity_files())
    (tmp_path / "old-cert.pem").write_bytes(old_cert)
    (tmp_path / "old-key.pem").write_bytes(old_key)

    # Report 2: failover to B, new backup C.
    conf.write_text(conf.read_text().replace("builtin:report1", "builtin:report2"))
    run("ftreport", "-c", str(conf), "--oneshot")
    admin.entitle_hypervisors(org, pool)
    ft = admin.ft_consumers(org)
    consumer2, consumer3 = ft[b]["uuid"], ft[examples.INSTANCE_C.lower()]["uuid"]
    assert ft[examples.INSTANCE_C.lower()]["facts"]["ftinfo.role"] == "1"

    # The guest's next check-in swaps to consumer 2 and holds consumer 2's entitlements.
    guest.ftagent("checkin", check=True)
    ident = guest.json("identity")
    assert ident["uuid"] == consumer2
    assert ident["failed_over_from"] == consumer1
    assert guest.identity_files()[1].read_bytes() == old_key  # the key never changed hands
    server_serials = {c["serial"] for c in admin.call("GET", f"/consumers/{consumer2}/certificates/serials")}
    assert server_serials and guest.entitlement_serials() == server_serials
    assert admin.entitlement_hosts(consumer2) == [examples.HYPERVISOR_B.lower()]
    assert guest.json("status")["status"] == "valid"

    # Consumer 1 answers 308 (to its old identity), and consumer 3 exists for the new backup.
    r = requests.get(f"{server.url}/consumers/{consumer1}", cert=(str(tmp_path / "old-cert.pem"),
                     str(tmp_path / "old-key.pem")), verify=str(server.ca_path), timeout=30, allow_redirects=False)
    assert r.status_code == 308
    assert r.json()["failover"]["to"] == consumer2
    assert admin.call("GET", f"/consumers/{consumer3}")["owner"]["key"] == org
    # A second check-in is an ordinary one.
    guest.ftagent("checkin", check=True)
    assert guest.json("identity")["uuid"] == consumer2
