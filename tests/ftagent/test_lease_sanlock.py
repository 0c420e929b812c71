"""The sanlock lease backend with two real sanlock daemons sharing one lease file (two simulated hosts):
what only sanlock has (its on-disk layout, its kill path, a frozen daemon, a killed agent).  The fault
scenarios every backend faces (a steady holder and a release, two instances racing, a frozen host
taken over only after host_dead) are in test_lease_faults.py.

Runs on the venv whose Python matches Debian's python3-sanlock (CPython 3.11 on bookworm): marked
``sanlock``, run by ``make test-sanlock``; on another leg the module is skipped with a reason that
says so (see tests/kit/sanlock.py).  io_timeout 1 s everywhere: sanlock's host_dead bound is then
8 x 1 + 60 = 68 s; bench/lease_sanlock.py measures more.
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
from tests.kit.lease import unique_vm
from tests.kit.orgs import new_org
from tests.kit.sanlock import SanlockSite, require_binding
from tests.kit.wait import hold_for, wait_until

pytestmark = pytest.mark.sanlock

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
    for _ in hold_for(2):
        assert proc_a.poll() is None
    assert site.daemons["a"].held_resources() == []
    assert "SIGUSR1" in a.status()["fence"]["reason"]
    assert a.stop(proc_a) == 3


