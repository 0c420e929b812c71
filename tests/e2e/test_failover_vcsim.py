"""An FT failover in vCenter (the simulator) followed through ftreport's daemon to the guest's agent."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import FtmockServer
from tests.e2e.conftest import Admin, esx_reporter, vm_guest
from tests.ftreport.conftest import Vcsim
from tests.kit.orgs import ENTITLEMENT, new_org
from tests.kit.wait import wait_until


def test_vcsim_failover_reaches_the_guest(vcsim: Vcsim, server: FtmockServer, admin: Admin, tmp_path: Path,
                                          isolated_reporter_env: None) -> None:
    org = new_org(server, mode=ENTITLEMENT)  # the design's entitlements follow the hypervisor
    pool = admin.virt_pool(org)
    group = vcsim.state()["ft"][0]
    primary, backup = group["instances"]
    with esx_reporter(tmp_path, server, org, vcsim):
        wait_until(lambda: len(admin.ft_consumers(org)) == 2, 30, "the first report")
        admin.entitle_hypervisors(org, pool)
        guest = vm_guest(tmp_path / "guest", server, primary["uuid"])
        reg = guest.json("register", "--org", org, "--username", "admin", "--password", server.admin_password,
                         "--auto-attach")
        assert reg["uuid"] == admin.ft_consumers(org)[primary["instanceUuid"].lower()]["uuid"]
        assert admin.entitlement_hosts(reg["uuid"]) == [primary["hostUuid"].lower()]

        after = vcsim.failover()["ft"][0]["instances"]
        assert after[0]["instanceUuid"] == backup["instanceUuid"]
        new_host = after[0]["hostUuid"].lower()

        def swapped() -> bool:
            guest.ftagent("checkin", check=True)
            return bool(guest.json("identity")["uuid"] != reg["uuid"])

        wait_until(swapped, 30, "the guest's identity swap")
        ident = guest.json("identity")
        successor = admin.ft_consumers(org)[backup["instanceUuid"].lower()]
        assert ident["uuid"] == successor["uuid"] and ident["failed_over_from"] == reg["uuid"]
        assert admin.entitlement_hosts(ident["uuid"]) == [new_host]
        assert guest.json("status")["status"] == "valid"
        assert after[1]["instanceUuid"].lower() in admin.ft_consumers(org)  # the new backup's consumer
