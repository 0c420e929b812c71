"""Fault tests of ``ftagent heartbeat`` with the lease on the server: agent processes against a real
ftmock on loopback.  What only the server's lease has (the server itself gone, the 308 to a zombie
primary) and what is the heartbeat's whatever the backend (the fencing ladder under systemd, the
wall clock, the kill switch); the scenarios every backend faces are in test_lease_faults.py.

Short timings (renew 0.5 s, ttl 3 s, margin 1 s unless a test needs more).  After every test the
server's lease log must show no overlap of valid periods between holders.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FtmockServer
from tests.ftmock.conftest import Client, checkin
from tests.ftmock.test_failover import REPORT1, REPORT2, VM1
from tests.kit.guest import Guest, clone_guest, send_signal
from tests.kit.lease import assert_no_overlap, lease_guest, unique_vm
from tests.kit.notify import NotifySocket
from tests.kit.orgs import new_org
from tests.kit.wait import hold_for, wait_until


def vm() -> str:
    return unique_vm("lease")


def test_server_unreachable_degrades_then_fences_before_takeover(ftmock: FtmockServer, tmp_path: Path,
                                                                guests: list[Guest]) -> None:
    server = ftmock
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "systemctl.txt"
    (bin_dir / "systemctl").write_text(f"#!/bin/sh\necho \"$(date +%s.%N) $@\" >> {calls}\n")
    (bin_dir / "systemctl").chmod(0o755)
    victim = __import__("subprocess").Popen(["sleep", "120"])
    (tmp_path / "app.pid").write_text(str(victim.pid))
    a = lease_guest(server, tmp_path / "a", new_org(server), vm(), fence_units="app.service",
                   fence_signal=f"SIGTERM {tmp_path / 'app.pid'}")
    b = clone_guest(a, tmp_path / "b", fence_units="", fence_signal="")
    guests += [a, b]
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        pa = a.start(env={"NOTIFY_SOCKET": str(notify.path), "PATH": f"{bin_dir}:{os.environ['PATH']}"})
        wait_until(lambda: a.state() == "HELD", 15, "A HELD")
        pb = b.start()
        wait_until(lambda: b.status().get("held_by") == a.status()["holder_fingerprint"], 10, "B sees A holding")
        assert any(m == "WATCHDOG=1" for _, m in notify.messages)
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)  # the server drops every request on the floor
        stopped = time.time()
        try:
            wait_until(lambda: a.state() == "DEGRADED", 3, "A DEGRADED")
            wait_until(lambda: a.state() == "FENCED", 5, "A FENCED")
            for _ in hold_for(1.0):  # the outage goes on a while after the fence: A stays fenced
                assert a.state() == "FENCED"
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        wait_until(lambda: b.state() == "HELD", 15, "B takes over once the server is back")
        fence_time, reason = a.fences()[0]
        assert "deadline" in reason
        assert fence_time - stopped < 3.0  # fenced within ttl of the last renewal
        log = assert_no_overlap(server, a.uuid())
        grant_b = next(e for e in log if e["holderFingerprint"] == b.status()["holder_fingerprint"]
                       and e["event"] == "grant")
        last_a = max(e["expires"] for e in log if e["holderFingerprint"] == a.status()["holder_fingerprint"])
        assert fence_time < last_a <= grant_b["start"]  # fenced before the server could grant to B
        # The rest of the ladder ran, and the watchdog was no longer petted once fencing began.
        assert "stop -- app.service" in calls.read_text()
        assert victim.wait(timeout=5) == -signal.SIGTERM
        pets = [t for t, m in notify.messages if "WATCHDOG=1" in m.split("\n")]
        assert pets and max(pets) < fence_time + 0.05
        assert a.status()["fence"]["steps"][0]["status"] == 0
        for _ in hold_for(1.0):  # terminal: no new claim, no second fence
            assert a.state() == "FENCED" and len(a.fences()) == 1
        assert a.stop(pa) == 3 and b.stop(pb) == 0
    finally:
        notify.close()
        if victim.poll() is None:
            victim.kill()


class JumpingClock:
    """CLOCK_BOOTTIME for timers, and a wall clock the test moves by hours."""

    def __init__(self) -> None:
        from ftagent.lease.clock import SystemClock

        self.base = SystemClock()
        self.name = self.base.name
        self.offset = 0.0

    def now(self) -> float:
        return self.base.now()

    def wall(self) -> float:
        return time.time()  # patched below together with time.time itself


def test_wall_clock_jumps_change_nothing(ftmock_session: FtmockServer, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from ftagent.config import load_config
    from ftagent.lease.heartbeat import Heartbeat, Stopper

    server = ftmock_session
    a = lease_guest(server, tmp_path / "a", new_org(server), vm())
    clock = JumpingClock()
    beat = Heartbeat(load_config(a.conf), clock=clock)
    stop = Stopper()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(beat.run(stop)))
    real_time = time.time
    thread.start()
    try:
        wait_until(lambda: beat.keeper.state.value == "HELD", 10, "HELD")
        gen = beat.keeper.generation
        for jump in (3600.0, -3600.0):
            monkeypatch.setattr(time, "time", lambda j=jump: real_time() + j)
            renewals = beat.keeper.renewals
            wait_until(lambda r=renewals: beat.keeper.renewals >= r + 3, 2.0, "three renewals after the jump")
            assert beat.keeper.state.value == "HELD" and beat.keeper.generation == gen
            assert a.status()["state"] == "HELD"
        monkeypatch.setattr(time, "time", real_time)
    finally:
        stop.request()
        thread.join(timeout=20)
    assert result == [0] and not a.fences() and beat.fence_count == 0
    assert_no_overlap(server, a.uuid())


def test_zombie_primary_gets_308_claims_successor_gets_409_and_fences(ftmock_session: FtmockServer, tmp_path: Path,
                                                                     guests: list[Guest]) -> None:
    server = ftmock_session
    org = new_org(server)  # simple content access: the swap also moves the repository file
    server.admin("product", "create", "--org", org, "--id", "69", "--name", "OS", "--content", "os-rpms=/content/os")
    server.admin("pool", "create", "--org", org, "--product", "69")
    checkin(server, org, REPORT1)
    timing = {"ttl": "10", "margin": "2", "renew_interval": "0.5"}
    a = lease_guest(server, tmp_path / "a", org, VM1, **timing)
    guests.append(a)
    consumer1 = a.uuid()
    pa = a.start()
    wait_until(lambda: a.state() == "HELD", 15, "A HELD")
    gen = a.status()["generation"]
    send_signal(pa, signal.SIGSTOP)  # the old primary freezes (partitioned, paused)
    paused = time.monotonic()
    job = checkin(server, org, REPORT2)
    consumer2 = job["resultData"]["failovers"][0]["to"]
    # The new primary: the same VM (same memory and disk, so the same identity and holder id).
    b = clone_guest(a, tmp_path / "b", share_holder=True)
    guests.append(b)
    pb = b.start()
    wait_until(lambda: b.status().get("consumer") == consumer2 and b.state() == "HELD", 10, "B took over")
    wait_until(lambda: b.uuid() == consumer2, 5, "B swapped its identity after the claim")
    assert b.status()["generation"] == gen + 1
    assert time.monotonic() - paused < 7, "A must come back before its own deadline for this test"
    send_signal(pa, signal.SIGCONT)  # the zombie returns with the old identity
    wait_until(lambda: a.state() == "FENCED", 5, "A fences")
    assert "refused" in a.status()["reason"] and "another instance is live" in a.status()["reason"]
    assert len(a.fences()) == 1
    assert a.uuid() == consumer1  # nothing was swapped
    for _ in hold_for(1.0):  # the live instance is untouched
        st = b.status()
        assert st["state"] == "HELD" and st["generation"] == gen + 1 and st["consumer"] == consumer2
    assert not b.fences()
    log = assert_no_overlap(server, consumer2)
    assert [e["event"] for e in log if e["event"] != "renew"] == ["grant", "handover"]
    # The heartbeat's swap rewrote the repository file for the successor's content access certificate.
    [cert] = [line.split(" = ", 1)[1] for line in b.repo_file.read_text().splitlines()
              if line.startswith("sslclientcert")]
    served = Client(server, cert=tuple(str(p) for p in b.identity_files()))  # type: ignore[arg-type]
    [serial] = [s["serial"] for s in served.get(f"/consumers/{consumer2}/certificates/serials").json()]
    assert cert == str(b.ent_dir / f"{serial}.pem") and Path(cert).is_file()
    assert a.stop(pa) == 3 and b.stop(pb) == 0


def test_kill_switch_observes_without_fencing(ftmock_session: FtmockServer, tmp_path: Path,
                                              guests: list[Guest]) -> None:
    server = ftmock_session
    a = lease_guest(server, tmp_path / "a", new_org(server), vm(), enabled="false")
    b = clone_guest(a, tmp_path / "b", enabled="true")
    guests += [a, b]
    pa = a.start()
    wait_until(lambda: a.status().get("observed") == "HELD", 15, "A observes holding")
    assert a.state() == "DISABLED"
    pb = b.start()
    send_signal(pa, signal.SIGSTOP)
    wait_until(lambda: b.state() == "HELD", 10, "B acquires after A's lease expired")
    send_signal(pa, signal.SIGCONT)
    wait_until(lambda: a.status().get("suppressed_fences"), 5, "A would have fenced")
    wait_until(lambda: (a.status().get("observed"), a.status().get("held_by"))
               == ("ACQUIRING", b.status()["holder_fingerprint"]), 5, "A observing that B holds")
    st = a.status()
    assert st["state"] == "DISABLED" and st["observed"] == "ACQUIRING"
    assert st["held_by"] == b.status()["holder_fingerprint"]
    assert not a.fences() and pa.poll() is None  # never fenced, still running and reporting
    out: dict[str, Any] = json.loads(a.ftagent("status", "--json").stdout)
    assert out["lease"]["state"] == "DISABLED"
    assert a.stop(pa) == 0 and b.stop(pb) == 0
    assert_no_overlap(server, a.uuid())
