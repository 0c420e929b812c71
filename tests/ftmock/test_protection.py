"""Each FT group's protection status on the server, its reasons, and who may see it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.ftmock.conftest import Client, admin_client, checkin, hypervisor, register
from tests.ftmock.test_failover import VM1
from tests.kit.ftmock import FtmockServer, start_ftmock
from tests.kit.orgs import new_org, org_user
from tests.kit.wait import wait_until

SILENT_AFTER = 2.0


def ft(instance: str, role: int, instances: list[str], state: str | None = "running") -> dict[str, Any]:
    attrs: dict[str, Any] = {"virtWhoType": "esx", "active": 1, "instanceUUID": instance, "ftinfo.role": str(role),
                             "ftinfo.instanceUUIDs": instances}
    if state is not None:
        attrs["faultToleranceState"] = state
    return {"guestId": VM1, "state": 1, "attributes": attrs}


def report(*hosts: tuple[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {"hypervisors": [hypervisor(name, guests) for name, guests in hosts]}


RUNNING = report(("hyp-a", [ft("VM_A", 0, ["VM_A", "VM_B"])]), ("hyp-b", [ft("VM_B", 1, ["VM_A", "VM_B"])]),
                 ("hyp-c", []))
#: hyp-a failed: B is primary, vSphere needs a secondary.
LOST_A = report(("hyp-a", []), ("hyp-b", [ft("VM_B", 0, ["VM_B"], "needSecondary")]), ("hyp-c", []))


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtmockServer]:
    """A server that calls a guest silent after two seconds."""
    server = start_ftmock(tmp_path_factory.mktemp("ftmock-protection"),
                          extra_args=["--guest-silent-after", str(SILENT_AFTER)])
    yield server
    server.stop()


def status(server: FtmockServer, org: str) -> tuple[str, list[str]]:
    groups = admin_client(server).get(f"/fleet/orgs/{org}/ftgroups").json()
    assert len(groups) == 1
    return groups[0]["protection"], groups[0]["reasons"]


def test_reasons_through_a_failover(quick: FtmockServer, tmp_path: Path) -> None:
    server, org = quick, new_org(quick)
    checkin(server, org, RUNNING)
    assert status(server, org) == ("unprotected", ["guestNotRegistered"])
    reg = register(server, tmp_path, org, facts={"virt.uuid": VM1})
    assert status(server, org) == ("protected", [])
    assert reg.client.post(f"/consumers/{reg.uuid}/lease", json={"holder": "vm-a", "ttl": 300}).status_code == 200
    assert status(server, org) == ("protected", [])
    checkin(server, org, LOST_A)
    # B runs alone, the guest still is A (it has not followed the 308) and so is the lease holder.
    assert status(server, org) == ("unprotected", ["needSecondary", "secondaryNotReported", "guestNotRegistered",
                                                   "staleLeaseHolder"])
    answer = reg.client.get(f"/consumers/{reg.uuid}")
    assert answer.status_code == 308
    successor = answer.json()["failover"]["consumer"]
    key = Path(reg.key_path)
    cert = tmp_path / "successor.pem"
    cert.write_text(successor["idCert"]["cert"])
    b = Client(server, cert=(str(cert), str(key)))
    assert b.post(f"/consumers/{successor['uuid']}/lease", json={"holder": "vm-a", "generation": 1,
                                                                  "ttl": 300}).status_code == 200
    assert status(server, org) == ("unprotected", ["needSecondary", "secondaryNotReported"])
    # The guest sees the same, for its own group only.
    own = b.get(f"/consumers/{successor['uuid']}/protection").json()
    assert (own["protection"], own["reasons"], own["faultToleranceState"], own["role"]) == (
        "unprotected", ["needSecondary", "secondaryNotReported"], "needSecondary", 0)
    # A new secondary, starting then running.
    checkin(server, org, report(("hyp-b", [ft("VM_B", 0, ["VM_B", "VM_C"], "starting")]),
                                ("hyp-c", [ft("VM_C", 1, ["VM_B", "VM_C"], "starting")])))
    assert status(server, org) == ("unprotected", ["needSecondary"])
    checkin(server, org, report(("hyp-b", [ft("VM_B", 0, ["VM_B", "VM_C"])]),
                                ("hyp-c", [ft("VM_C", 1, ["VM_B", "VM_C"])])))
    assert status(server, org) == ("protected", [])
    # The guest stops checking in and renewing: silent, then its lease is no longer live.
    assert b.delete(f"/consumers/{successor['uuid']}/lease?holder=vm-a&generation=2").status_code == 204
    assert status(server, org) == ("unprotected", ["leaseNotHeld"])
    wait_until(lambda: status(server, org) == ("unprotected", ["guestSilent", "leaseNotHeld"]), 10,
               "the guest silent")
    assert b.put(f"/consumers/{successor['uuid']}", json={}).status_code == 204  # a check-in
    assert status(server, org) == ("unprotected", ["leaseNotHeld"])


def test_a_reporter_without_the_state_is_not_judged_on_it(server: FtmockServer, org: str, tmp_path: Path) -> None:
    checkin(server, org, report(("hyp-a", [ft("VM_A", 0, ["VM_A", "VM_B"], None)]),
                                ("hyp-b", [ft("VM_B", 1, ["VM_A", "VM_B"], None)])))
    register(server, tmp_path, org, facts={"virt.uuid": VM1})
    groups = admin_client(server).get(f"/fleet/orgs/{org}/ftgroups").json()
    assert (groups[0]["protection"], groups[0]["faultToleranceState"]) == ("protected", None)


def test_who_sees_which_protection(server: FtmockServer, tmp_path: Path) -> None:
    org, other = new_org(server), new_org(server)
    checkin(server, org, LOST_A)
    reg = register(server, tmp_path, org, facts={"virt.uuid": VM1})
    plain = register(server, tmp_path, org, name="plain")
    assert reg.client.get(f"/consumers/{reg.uuid}/protection").status_code == 200
    # Another consumer's group, or a consumer in none, is not for this consumer to read.
    assert plain.client.get(f"/consumers/{reg.uuid}/protection").status_code == 403
    assert plain.client.get(f"/consumers/{plain.uuid}/protection").status_code == 404
    assert reg.client.get(f"/fleet/orgs/{org}/protection").status_code == 403
    assert reg.client.get("/fleet/metrics").status_code == 403
    # The admin route sums it up.
    summary = admin_client(server).get(f"/fleet/orgs/{org}/protection").json()
    assert (summary["protected"], summary["unprotected"]) == (0, 1)
    assert summary["reasons"]["needSecondary"] == summary["reasons"]["secondaryNotReported"] == 1
    assert summary["reasons"]["guestSilent"] == 0
    assert summary["unprotectedGroups"] == [{"guestId": VM1, "primary": reg.uuid, "protection": "unprotected",
                                             "reasons": ["needSecondary", "secondaryNotReported"],
                                             "faultToleranceState": "needSecondary"}]
    # An org's admin scrapes its own org's metrics only.
    name, password = org_user(server, other)
    scraped = Client(server, auth=(name, password)).get("/fleet/metrics")
    assert scraped.status_code == 200
    orgs = {s.labels["org"] for f in text_string_to_metric_families(scraped.text) for s in f.samples}
    assert orgs == {other}
    everything = admin_client(server).get("/fleet/metrics").text
    samples = {(s.name, s.labels.get("protection") or s.labels.get("reason")): s.value
               for f in text_string_to_metric_families(everything) for s in f.samples if s.labels["org"] == org}
    assert samples[("ftmock_ft_groups", "unprotected")] == 1 and samples[("ftmock_ft_groups", "protected")] == 0
    assert samples[("ftmock_ft_groups_unprotected", "needSecondary")] == 1
    assert samples[("ftmock_ft_groups_unprotected", "leaseNotHeld")] == 0
