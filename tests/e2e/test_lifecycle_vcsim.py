"""FT groups over their whole life, from vCenter (the simulator) through ftreport's daemon to ftmock.

Each of the four ends of an FT VM's protection (FT turned off, the secondary removed, the VM
deleted, the guest unregistered) is played with a registered, entitled guest, and the pool
consumption is compared before and after: what no longer runs, or was unregistered, keeps no
consumer and consumes nothing. The server runs with a short grace (2 s) for departed instances.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Admin, report_config, vm_guest
from tests.ftreport.conftest import VCSIM_PASSWORD, VCSIM_USER, Vcsim
from tests.kit.ftmock import FtmockServer, start_ftmock
from tests.kit.guest import Guest
from tests.kit.orgs import ENTITLEMENT, new_org
from tests.kit.wait import hold_for, wait_until

GRACE = 2.0


@pytest.fixture(scope="module")
def short_grace_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtmockServer]:
    server = start_ftmock(tmp_path_factory.mktemp("ftmock-lifecycle"), extra_args=["--departed-grace", str(GRACE)])
    yield server
    server.stop()


class FtVm:
    """One FT VM of the simulator, reported by an ftreport daemon to its own org, its guest
    registered and entitled."""

    def __init__(self, vcsim: Vcsim, server: FtmockServer, tmp_path: Path) -> None:
        self.vcsim, self.server, self.admin = vcsim, server, Admin(server)
        self.org = new_org(server, mode=ENTITLEMENT)  # the pools' consumption is what is checked
        self.pool = self.admin.virt_pool(self.org)
        group = vcsim.state()["ft"][0]
        self.uuid = group["uuid"]
        self.primary, self.backup = group["instances"]
        conf = report_config(tmp_path / "ftreport.conf", server, self.org,
                             {"type": "esx", "server": vcsim.url, "username": VCSIM_USER,
                              "password": VCSIM_PASSWORD, "ca_cert": vcsim.tls.ca_path},
                             extra_global={"settle": 0.2})
        self._log = open(tmp_path / "ftreport.log", "wb")  # noqa: SIM115
        self.daemon = subprocess.Popen([sys.executable, "-m", "ftreport", "-c", str(conf)],
                                       stdout=subprocess.DEVNULL, stderr=self._log)
        wait_until(lambda: len(self.ft_consumers()) == 2, 30, "the first report")
        self.admin.entitle_hypervisors(self.org, self.pool)
        self.guest: Guest = vm_guest(tmp_path / "guest", server, self.uuid)
        self.registration = self.register()
        wait_until(lambda: self.consumed() == 2, 30, "both instances entitled")

    def close(self) -> None:
        self.daemon.terminate()
        self.daemon.wait(timeout=20)
        self._log.close()

    def register(self) -> dict[str, Any]:
        return dict(self.guest.json("register", "--org", self.org, "--username", "admin", "--password",
                                    self.server.admin_password, "--auto-attach"))

    def consumers(self) -> list[dict[str, Any]]:
        """The org's consumers of this VM (any with its virt.uuid)."""
        return [c for c in self.admin.call("GET", f"/owners/{self.org}/consumers")
                if c.get("facts", {}).get("virt.uuid", "").lower() == self.uuid.lower()]

    def ft_consumers(self) -> dict[str, dict[str, Any]]:
        return {c["facts"]["instanceUUID"].lower(): c for c in self.consumers() if "instanceUUID" in c["facts"]}

    def consumed(self) -> int:
        """Entitlements consumed from the virt pools the hypervisors' subscription derived."""
        return sum(p["consumed"] for p in self.admin.call("GET", f"/owners/{self.org}/pools")
                   if p.get("sourceEntitlement"))

    def entitlements(self, consumer: str) -> list[Any]:
        return list(self.admin.call("GET", f"/consumers/{consumer}/entitlements"))

    def group(self) -> dict[str, Any] | None:
        groups = self.admin.call("GET", f"/fleet/orgs/{self.org}/ftgroups")
        return next((g for g in groups if g["guestId"].lower() == self.uuid.lower()), None)

    def reported(self, instance: dict[str, Any]) -> bool:
        """Whether the fleet view has the instance on a host (a report lists it)."""
        group = self.group()
        return group is not None and any(i["instanceUUID"] == instance["instanceUuid"].lower() and i["host"]
                                         for i in group["instances"])


@pytest.fixture
def vm(vcsim: Vcsim, short_grace_server: FtmockServer, tmp_path: Path,
       isolated_reporter_env: None) -> Iterator[FtVm]:
    ft_vm = FtVm(vcsim, short_grace_server, tmp_path)
    yield ft_vm
    ft_vm.close()


def _left_every_report(vm: FtVm, instance: dict[str, Any]) -> None:
    """The instance's report arrived; within the grace, nothing is taken from it (no churn)."""
    wait_until(lambda: not vm.reported(instance), 30, "the report without the instance")
    consumer = vm.ft_consumers()[instance["instanceUuid"].lower()]
    assert len(vm.entitlements(consumer["uuid"])) == 1, "an instance keeps its entitlement during the grace"


def test_turning_ft_off_keeps_the_primary_as_a_plain_guest(vm: FtVm) -> None:
    before = vm.consumed()
    primary = vm.registration["uuid"]
    vm.vcsim.ft_off()
    _left_every_report(vm, vm.backup)
    wait_until(lambda: vm.consumed() == 1, 30, "the secondary's entitlement returned")
    after = vm.consumed()
    assert (before, after) == (2, 1)
    # The backup's server-made consumer is gone; the primary is the guest's plain consumer, still entitled.
    remaining = vm.consumers()
    assert [c["uuid"] for c in remaining] == [primary]
    assert "instanceUUID" not in remaining[0]["facts"] and "ftinfo.role" not in remaining[0]["facts"]
    assert vm.group() is None
    assert vm.guest.json("status")["status"] == "valid"


def test_removing_the_secondary_returns_its_entitlement(vm: FtVm) -> None:
    before = vm.consumed()
    backup_consumer = vm.ft_consumers()[vm.backup["instanceUuid"].lower()]["uuid"]
    vm.vcsim.remove_secondary()
    _left_every_report(vm, vm.backup)
    wait_until(lambda: vm.consumed() == 1, 30, "the secondary's entitlement returned")
    assert (before, vm.consumed()) == (2, 1)
    assert set(vm.ft_consumers()) == {vm.primary["instanceUuid"].lower()}
    gone = vm.guest.admin_api("GET", f"consumers/{backup_consumer}")
    assert gone.status_code == 410
    # The primary runs alone: the group is unprotected, and says why.
    group = vm.group()
    assert group is not None and group["protection"] == "unprotected"
    assert group["reasons"] == ["needSecondary", "secondaryNotReported"]


def test_deleting_the_vm_leaves_no_consumption(vm: FtVm) -> None:
    before = vm.consumed()
    vm.vcsim.destroy(vm.uuid)
    _left_every_report(vm, vm.primary)
    wait_until(lambda: vm.consumed() == 0, 30, "both instances' entitlements returned")
    assert (before, vm.consumed()) == (2, 0)
    # The server-made backup is deleted; the guest's own consumer is kept, outside any group, unentitled.
    remaining = vm.consumers()
    assert [c["uuid"] for c in remaining] == [vm.registration["uuid"]]
    assert "instanceUUID" not in remaining[0]["facts"] and not vm.entitlements(vm.registration["uuid"])
    assert vm.group() is None


def test_unregistering_the_guest_ends_the_group_until_it_registers_again(vm: FtVm) -> None:
    before = vm.consumed()
    vm.guest.ftagent("unregister", check=True)
    assert (before, vm.consumed()) == (2, 0)
    assert vm.consumers() == []
    # Later reports still map the VM's guest ids to their hosts, but make no consumer for it.
    plain = next(v for v in vm.vcsim.state(all_objects=True)["vms"] if not v.get("ftRole"))
    vm.vcsim.power(plain["name"], "poweredOff")

    def host_reports_power_off() -> bool:
        hyps = vm.admin.call("GET", f"/owners/{vm.org}/consumers?type=hypervisor")
        return any(g["guestId"] == plain["uuid"] and g["attributes"].get("active") == "0"  # kept as text, as Candlepin
                   for h in hyps for g in h.get("guestIds", []))

    wait_until(host_reports_power_off, 30, "a report after the unregistration")
    hyps = vm.admin.call("GET", f"/owners/{vm.org}/consumers?type=hypervisor")
    mapped = {g["guestId"].lower() for h in hyps for g in h.get("guestIds", [])}
    assert vm.uuid.lower() in mapped
    for _ in hold_for(GRACE + 1):
        assert vm.consumers() == [] and vm.consumed() == 0
    # Registering again rebuilds the group from the latest reports, the guest as its primary.
    again = vm.register()
    ft = vm.ft_consumers()
    assert set(ft) == {vm.primary["instanceUuid"].lower(), vm.backup["instanceUuid"].lower()}
    assert again["uuid"] == ft[vm.primary["instanceUuid"].lower()]["uuid"] != vm.registration["uuid"]
    wait_until(lambda: vm.consumed() == 2, 30, "both instances entitled again")


def _metric(vm: FtVm, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    r = vm.guest.admin_api("GET", "fleet/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain"), r.text
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in {"org": vm.org, **labels}.items()):
                return float(sample.value)
    raise AssertionError(f"no {name} {labels} for {vm.org} in:\n{r.text}")


def _seen_everywhere(vm: FtVm, protection: str, reasons: list[str]) -> None:
    """The group's protection, the same in the fleet view, the table, the metrics and the guest."""
    wait_until(lambda: (lambda g: g is not None and (g["protection"], g["reasons"]) == (protection, reasons))(
        vm.group()), 30, lambda: f"{protection} {reasons}; the fleet view says {vm.group()}")
    table = vm.server.admin("ftgroup", "list", "--org", vm.org)
    assert f"FT group {vm.uuid}: {protection}" + (f" ({', '.join(reasons)})" if reasons else "") + ";" in table
    assert _metric(vm, "ftmock_ft_groups", protection=protection) == 1
    for reason in ("needSecondary", "secondaryNotReported", "guestNotRegistered"):
        assert _metric(vm, "ftmock_ft_groups_unprotected", reason=reason) == (reason in reasons)
    status = vm.guest.json("status")
    assert (status["protection"]["protection"], status["protection"]["reasons"]) == (protection, reasons)
    line = vm.guest.ftagent("status", check=True).stdout
    assert f"FT protection: {protection}" in line


def test_protection_through_a_failover_and_recovery(vm: FtVm) -> None:
    _seen_everywhere(vm, "protected", [])
    assert vm.guest.json("status")["protection"]["faultToleranceState"] == "running"
    # The primary's host fails: the backup runs on alone, vSphere needs a secondary. Until the guest
    # follows the failover, the new primary is not the guest's yet.
    vm.vcsim.failover(secondary="later")
    wait_until(lambda: (vm.group() or {}).get("reasons") == ["needSecondary", "secondaryNotReported",
                                                             "guestNotRegistered"], 30, "the failover report")
    vm.guest.ftagent("checkin", check=True)  # the 308: the guest takes the successor's identity
    _seen_everywhere(vm, "unprotected", ["needSecondary", "secondaryNotReported"])
    assert "vSphere state needSecondary" in vm.guest.ftagent("status", check=True).stdout
    # vSphere starts a new secondary: reported, but not in lock step yet.
    vm.vcsim.add_secondary(state="starting")
    _seen_everywhere(vm, "unprotected", ["needSecondary"])
    assert vm.group()["faultToleranceState"] == "starting"  # type: ignore[index]
    vm.vcsim.set_ft_state("0", "running")
    _seen_everywhere(vm, "protected", [])
