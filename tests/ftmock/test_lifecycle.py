"""FT groups over their life on the server: departures and their grace, the sweep, failover paths
kept whole, tombstones across shared orgs, and Candlepin's inactive consumer cleaner. The orgs use
entitlements (not Simple Content Access): what is checked is what the pools' consumption shows."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ftmock.conftest import admin_client, checkin, hypervisor, register
from tests.ftmock.test_failover import REPORT1, REPORT2, REPORT3, VM1, entitle_hosts, ft_guest, group
from tests.kit.ftmock import FtmockServer, start_ftmock
from tests.kit.orgs import ENTITLEMENT, make_pool, new_org
from tests.kit.wait import hold_for, wait_until

GRACE = 1.0

#: Report 1 without the backup: hyp-b no longer lists it (a removed secondary).
WITHOUT_BACKUP = {"hypervisors": [
    hypervisor("hyp-a", [ft_guest("VM_A", 0, ["VM_A", "VM_B"])]),
    hypervisor("hyp-b", []),
    hypervisor("hyp-c", []),
]}


@pytest.fixture(scope="module")
def short_grace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtmockServer]:
    server = start_ftmock(tmp_path_factory.mktemp("ftmock-grace"), extra_args=["--departed-grace", str(GRACE)])
    yield server
    server.stop()


def _entitled_group(server: FtmockServer, tmp_path: Path, org: str) -> Any:
    """Report 1, the hosts entitled, the VM registered with auto-attach: both instances entitled."""
    checkin(server, org, REPORT1)
    pool = make_pool(server, org, "RH1", attributes={"virt_limit": "unlimited"})
    entitle_hosts(server, org, pool, ["hyp-a", "hyp-b", "hyp-c"])
    reg = register(server, tmp_path, org, facts={"virt.uuid": VM1}, installed=["RH1"])
    assert reg.client.post(f"/consumers/{reg.uuid}/entitlements").status_code == 200
    return reg


def _entitlements(server: FtmockServer, consumer: str) -> list[Any]:
    return list(admin_client(server).get(f"/consumers/{consumer}/entitlements").json())


def _instances(server: FtmockServer, org: str) -> dict[str, dict[str, Any]]:
    groups = admin_client(server).get(f"/fleet/orgs/{org}/ftgroups").json()
    return {i["instanceUUID"]: i for g in groups for i in g["instances"]}


@pytest.mark.content_access(ENTITLEMENT)
def test_an_instance_back_within_the_grace_keeps_everything(server: FtmockServer, org: str, tmp_path: Path) -> None:
    """The session's server has the default grace (an hour): a missed report or a short migration
    changes nothing but the mark of when the instance was last seen."""
    _entitled_group(server, tmp_path, org)
    backup = group(server, org)["VM_B"]
    assert len(_entitlements(server, backup["uuid"])) == 1
    checkin(server, org, WITHOUT_BACKUP)
    assert _instances(server, org)["vm_b"]["departedAt"] is not None
    assert len(_entitlements(server, backup["uuid"])) == 1
    checkin(server, org, REPORT1)
    assert _instances(server, org)["vm_b"]["departedAt"] is None
    assert group(server, org)["VM_B"]["uuid"] == backup["uuid"]
    assert len(_entitlements(server, backup["uuid"])) == 1
    # A report of other hypervisors (another reporter's) leaves the instance where it was.
    checkin(server, org, {"hypervisors": [hypervisor("hyp-x", ["plain-guest"])]}, reporter="rep2")
    assert _instances(server, org)["vm_b"]["departedAt"] is None


def test_an_instance_that_stops_appearing_departs_without_another_report(short_grace: FtmockServer,
                                                                        tmp_path: Path) -> None:
    server = short_grace
    org = new_org(server, mode=ENTITLEMENT)
    reg = _entitled_group(server, tmp_path, org)
    backup = group(server, org)["VM_B"]["uuid"]
    checkin(server, org, WITHOUT_BACKUP)
    # Nothing else is sent: the sweep retires the backup once the grace has passed.
    admin = admin_client(server)
    wait_until(lambda: admin.get(f"/consumers/{backup}").status_code == 410, 15, "the backup's consumer deleted")
    assert set(group(server, org)) == {"VM_A"}
    assert len(_entitlements(server, reg.uuid)) == 1  # the primary still runs, still entitled
    derived = [p for p in admin.get(f"/owners/{org}/pools").json() if p.get("sourceEntitlement")]
    assert sum(p["consumed"] for p in derived) == 1


def test_older_identities_still_reach_the_current_primary(short_grace: FtmockServer, tmp_path: Path) -> None:
    """A -> B -> C, the guest never took B: B (made by the server) departs and is deleted, and
    A's 308 leads to C directly."""
    server = short_grace
    org = new_org(server, mode=ENTITLEMENT)
    reg = _entitled_group(server, tmp_path, org)
    checkin(server, org, REPORT2)
    checkin(server, org, REPORT3)
    b = admin_client(server).get(f"/consumers/{reg.uuid}").json()["failedOverTo"]
    wait_until(lambda: admin_client(server).get(f"/consumers/{b}").status_code == 410, 15, "B deleted")
    answer = reg.client.get(f"/consumers/{reg.uuid}")
    assert answer.status_code == 308
    c = group(server, org)["VM_C"]["uuid"]
    assert answer.json()["failover"]["to"] == c
    assert len(_entitlements(server, c)) == 1


def test_unregistering_in_a_shared_org_and_registering_again(short_grace: FtmockServer, tmp_path: Path) -> None:
    """Org x reports the VM, which registers in y (x shares with y): the guest's unregistration
    ends the group for good, until it registers in y again."""
    server = short_grace
    x, y = new_org(server, mode=ENTITLEMENT), new_org(server, mode=ENTITLEMENT)
    admin = admin_client(server)
    assert admin.post(f"/owners/{x}/shares", json={"recipient": {"key": y}}).status_code == 200
    checkin(server, x, REPORT1)
    reg = register(server, tmp_path, y, facts={"virt.uuid": VM1})
    assert set(group(server, y)) == {"VM_A", "VM_B"}
    assert reg.client.delete(f"/consumers/{reg.uuid}").status_code == 204
    assert group(server, y) == {} and group(server, x) == {}
    checkin(server, x, REPORT1)
    for _ in hold_for(GRACE + 0.5):
        assert group(server, x) == {}
    # An org the reporting org does not share with cannot lift the tombstone.
    z = new_org(server)
    register(server, tmp_path, z, facts={"virt.uuid": VM1})
    assert group(server, x) == {}
    again = register(server, tmp_path, y, facts={"virt.uuid": VM1})
    members = group(server, y)
    assert set(members) == {"VM_A", "VM_B"} and members["VM_A"]["uuid"] == again.uuid


@pytest.mark.content_access(ENTITLEMENT)
def test_deleting_a_backup_deletes_only_it(server: FtmockServer, org: str, tmp_path: Path) -> None:
    _entitled_group(server, tmp_path, org)
    members = group(server, org)
    assert admin_client(server).delete(f"/consumers/{members['VM_B']['uuid']}").status_code == 204
    assert set(group(server, org)) == {"VM_A"}
    checkin(server, org, REPORT1)  # no tombstone: the next report makes the backup's consumer again
    assert set(group(server, org)) == {"VM_A", "VM_B"}


def _age(server: FtmockServer, consumer: str, days: int) -> None:
    """Make a consumer's last check-in ``days`` old, as if the server had run that long."""
    when = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)).isoformat(timespec="milliseconds")
    conn = sqlite3.connect(server.data_dir / "ftmock.db", timeout=30)
    try:
        with conn:
            conn.execute("UPDATE consumers SET last_checkin = ? WHERE uuid = ?", (when, consumer))
    finally:
        conn.close()


def test_inactive_consumers_are_cleaned_as_candlepin_does(ftmock: FtmockServer, tmp_path: Path) -> None:
    server = ftmock
    org = new_org(server, mode=ENTITLEMENT)
    silent = register(server, tmp_path, org, name="silent")
    recent = register(server, tmp_path, org, name="recent")
    entitled = register(server, tmp_path, org, name="entitled")
    pool = make_pool(server, org, "RH1")
    assert entitled.client.post(f"/consumers/{entitled.uuid}/entitlements?pool={pool}").status_code == 200
    for consumer, days in ((silent.uuid, 398), (recent.uuid, 396), (entitled.uuid, 500)):
        _age(server, consumer, days)
    server.restart()  # the job runs at start (and every hour)
    admin = admin_client(server)
    assert admin.get(f"/consumers/{silent.uuid}").status_code == 410
    assert admin.get(f"/consumers/{recent.uuid}").status_code == 200
    assert admin.get(f"/consumers/{entitled.uuid}").status_code == 200  # Candlepin keeps consumers with entitlements
    runs = json.loads(server.admin("job", "list", "--json"))
    assert runs[0]["key"] == "InactiveConsumerCleanerJob"
    assert [r["uuid"] for r in runs[0]["removed"]] == [silent.uuid]
    assert "1 consumers removed" in runs[0]["message"]
    assert "InactiveConsumerCleanerJob" in server.admin("job", "list")
    assert admin.get("/fleet/jobs").json()[0]["id"] == runs[0]["id"]
    log = (server.data_dir.parent / f"{server.data_dir.name}.log").read_text()
    assert f"{silent.uuid} (silent)" in log
    # A shorter retention, chosen by the operator.
    server.extra_args = ["--inactive-days", "30"]
    _age(server, recent.uuid, 31)
    server.restart()
    assert admin.get(f"/consumers/{recent.uuid}").status_code == 410
