"""The sanlock lease backend with two real sanlock daemons sharing one lease file (two simulated hosts).

Runs on the venv whose Python matches Debian's python3-sanlock (CPython 3.11 on bookworm); on another
leg the module is skipped with a reason that says so (see tests/ftagent/sanlock_kit.py).  io_timeout
1 s everywhere: sanlock's host_dead bound is then 8 x 1 + 60 = 68 s, so only one test waits for a
takeover after a frozen host; bench/lease_sanlock.py measures more.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FtmockServer
from tests.ftagent.sanlock_kit import SanlockSite, boottime, require_binding
from tests.kit.lease import unique_vm
from tests.kit.orgs import new_org
from tests.kit.wait import wait_until

require_binding()

@pytest.fixture
def site(ftmock_session: FtmockServer, tmp_path: Path) -> Iterator[SanlockSite]:
    made = SanlockSite(ftmock_session, tmp_path, new_org(ftmock_session), unique_vm("sl"))
    try:
        made.start_daemons()
        made.init()
        yield made
    finally:
        made.close()


def held(site: SanlockSite, host: str, timeout: float = 30) -> dict[str, object]:
    guest = site.guests[host]
    wait_until(lambda: guest.state() == "HELD", timeout, f"{host} HELD")
    return guest.status()


def test_init_writes_the_documented_layout_and_refuses_a_live_lease(site: SanlockSite) -> None:
    # sanlock's own reader finds the lockspace at 0 and the resource (virt.uuid) at 1 MiB.
    leader = site.leader()
    assert leader["resource_name"] == site.vm and leader["space_name"] == "ftagent"
    assert leader["sector_size"] == "512" and leader["lver"] == "0"
    lockspace = json.loads(site.ftagent("a", "sanlock-init", "--json").stdout)
    assert lockspace["written"] == [] and lockspace["resource_offset"] == 1048576  # already there: left alone
    # Another lease in the file (written by sanlock's own tool) is overwritten only with --force...
    subprocess.run(["sanlock", "direct", "init", "-r", f"ftagent:other-vm:{site.lease_file}:1048576"], check=True,
                   capture_output=True, timeout=30)
    other = site.ftagent("a", "sanlock-init")
    assert other.returncode == 64 and "use --force" in other.stderr, other.stderr
    forced = site.ftagent("a", "sanlock-init", "--force", "--json")
    assert forced.returncode == 0 and json.loads(forced.stdout)["written"] == ["resource"]
    assert site.leader()["resource_name"] == site.vm
    site.start("a")
    status = held(site, "a")
    assert status["generation"] == 1 == int(site.leader()["lver"])
    # ...and a held one never, not even with --force.
    refused = site.ftagent("b", "sanlock-init", "--force")
    assert refused.returncode == 64, refused.stdout + refused.stderr
    assert "not overwriting a live lease" in refused.stderr
    assert site.guests["a"].state() == "HELD"


def test_steady_state_waiting_instance_then_clean_release_hands_over(site: SanlockSite) -> None:
    a, b = site.guests["a"], site.guests["b"]
    proc_a = site.start("a")
    status = held(site, "a")
    assert status["backend"] == "sanlock" and status["ttl"] == 68  # 8 x io_timeout 1 + 60
    assert status["backend_timing"] == {"io_timeout": 1, "renewal": 2, "renewal_fail": 8, "host_dead": 68}
    site.start("b")
    # b joins the lockspace (2 x io_timeout), finds the resource held by host id 1 and waits.
    wait_until(lambda: b.status().get("held_by") == "sanlock host id 1", 30, "b seeing a as the holder")
    for holders in site.watch(3):
        assert holders == ["a"]
    assert b.state() == "ACQUIRING"
    assert a.status()["renewals"] >= 3 and a.status()["deadline_in"] > 50
    assert len(site.daemons["a"].held_resources()) == 1 and site.daemons["b"].held_resources() == []
    # ftagent status --json reports sanlock's timing.
    summary = json.loads(site.ftagent("a", "status", "--json").stdout)["lease"]
    assert summary["ttl"] == 68 and summary["backend"] == "sanlock" and summary["state"] == "HELD"
    stopped_at = time.monotonic()
    assert a.stop(proc_a) == 0
    assert a.state() == "RELEASED"
    status_b = held(site, "b", timeout=15)
    assert time.monotonic() - stopped_at < 10  # a release hands over at once, no host_dead wait
    assert status_b["generation"] == 2 == int(site.leader()["lver"])
    assert site.leader()["owner_id"] == "2"
    for _ in site.watch(2):
        pass
    assert site.violations == [] and a.fences() == [] and b.fences() == []


def test_two_instances_racing_only_one_holds(site: SanlockSite) -> None:
    site.start("a")
    site.start("b")
    wait_until(lambda: site.holders(), 30, "a holder")
    for holders in site.watch(5):
        assert len(holders) == 1
    winner = site.holders()[0]
    loser = "b" if winner == "a" else "a"
    assert site.guests[loser].state() == "ACQUIRING"
    assert site.leader()["owner_id"] == site.guests[winner].lease["sanlock_host_id"]
    assert site.violations == []


def test_holder_agent_killed_other_takes_over_after_margin_not_host_dead(site: SanlockSite) -> None:
    proc_a = site.start("a")
    held(site, "a")
    site.start("b")
    for _ in site.watch(2):
        pass
    killed_at = time.monotonic()
    proc_a.kill()
    proc_a.wait()
    # Nobody ran a's ladder: its lease holder keeps the lease `margin` (5 s) for the service manager
    # to stop what a protected, then exits; the daemon frees the resource: no 68 s host_dead wait.
    for holders in site.watch(4):
        assert holders == []
    assert site.leader()["owner_id"] == "1" and site.guests["b"].state() == "ACQUIRING"
    status_b = held(site, "b", timeout=20)
    assert 5 <= time.monotonic() - killed_at < 15
    assert status_b["generation"] == 2 and site.leader()["owner_id"] == "2"
    for _ in site.watch(2):
        pass
    assert site.violations == []


def test_daemon_briefly_frozen_degrades_and_recovers_without_fencing(site: SanlockSite) -> None:
    a = site.guests["a"]
    site.start("a")
    held(site, "a")
    site.daemons["a"].signal(signal.SIGSTOP)
    try:
        # Every call into the frozen daemon times out, the guard goes on.  Resumed within 8 x
        # io_timeout, before the daemon itself gives the lockspace up.
        wait_until(lambda: a.state() == "DEGRADED", 6, "DEGRADED")
    finally:
        site.daemons["a"].signal(signal.SIGCONT)
    wait_until(lambda: a.state() == "HELD", 20, "HELD again")
    assert a.fences() == [] and a.status()["generation"] == 1


def test_lockspace_lost_runs_the_fencing_ladder_through_killpath(site: SanlockSite) -> None:
    a = site.guests["a"]
    proc_a = site.start("a")
    held(site, "a")
    lost_at = time.monotonic()
    # Storage gone: the daemon's renewals fail, after 8 x io_timeout it runs our kill path.
    os.truncate(site.lease_file, 0)
    wait_until(lambda: a.fences(), 30, "the fence hook")
    assert time.monotonic() - lost_at < 20
    (_, reason), = a.fences()
    assert "SIGUSR1" in reason and "sanlock" in reason
    wait_until(lambda: a.state() == "FENCED", 5, "FENCED")
    # The ladder ran instead of a SIGKILL: the agent is alive, fenced, and has given the lease up.
    time.sleep(2)
    assert proc_a.poll() is None
    assert site.daemons["a"].held_resources() == []
    assert "SIGUSR1" in a.status()["fence"]["reason"]
    assert a.stop(proc_a) == 3


@pytest.mark.slow
def test_frozen_host_loses_the_lease_only_after_host_dead_and_fences_on_resume(site: SanlockSite) -> None:
    """Host a (its daemon and its agent) frozen: b gets the lease only once sanlock declares host 1
    dead (68 s after its last renewal); a, resumed, fences at once and never overlapped b."""
    a, b = site.guests["a"], site.guests["b"]
    proc_a = site.start("a")
    held(site, "a")
    site.start("b")
    for _ in site.watch(2):
        pass
    deadline_a = float(a.status()["deadline"])
    site.daemons["a"].signal(signal.SIGSTOP)
    os.kill(proc_a.pid, signal.SIGSTOP)
    frozen_at = boottime()
    try:
        wait_until(lambda: b.state() == "HELD" or site.violations, 150, "b's takeover", step=0.5)
        for _ in site.watch(0.5):
            pass
        took_over = boottime()
        assert site.violations == []
        # sanlock's bound: not before host_dead (68 s) after a's last renewal, which was < 2 s before the freeze.
        assert took_over - frozen_at >= 68 - 2 - 1
        assert deadline_a < took_over  # a's own deadline ran out before b could take over
        assert b.status()["generation"] == 2 and site.leader()["owner_id"] == "2"
        assert a.fences() == []
    finally:
        os.kill(proc_a.pid, signal.SIGCONT)
        site.daemons["a"].signal(signal.SIGCONT)
    wait_until(lambda: a.fences(), 10, "a fencing on resume")
    assert "deadline passed" in a.fences()[0][1] or "SIGUSR1" in a.fences()[0][1]
    wait_until(lambda: a.state() == "FENCED", 5, "a FENCED")
    for holders in site.watch(3):
        assert holders == ["b"]
    assert site.violations == []
