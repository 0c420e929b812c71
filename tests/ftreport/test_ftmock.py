"""ftreport against the reference server ftmock: check-in, full reports, a server that forgot,
outages, reload, signals."""

from __future__ import annotations

import json
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ftreport import examples
from ftreport.config import load_config
from ftreport.service import Reporter
from tests.conftest import FtmockServer
from tests.kit.orgs import new_org
from tests.kit.wait import wait_until

from .conftest import Daemon, Vcsim, esx_section, held_back_factory, run_ftreport, write_config


def consumers(server: FtmockServer, org: str, ctype: str | None = None) -> list[dict[str, Any]]:
    r = requests.get(server.url + f"/owners/{org}/consumers", params={"type": ctype} if ctype else None,
                     auth=server.admin_auth, verify=str(server.ca_path), timeout=30)
    assert r.status_code == 200, r.text
    return list(r.json())


def ft_roles(server: FtmockServer, org: str) -> dict[str, tuple[str, bool]]:
    """instanceUUID -> (ftinfo.role, failed over?) of the FT guest consumers the server holds."""
    return {c["facts"]["instanceUUID"]: (c["facts"]["ftinfo.role"], "failedOverTo" in c)
            for c in consumers(server, org) if "instanceUUID" in c["facts"]}


def server_section(server: FtmockServer, org: str) -> dict[str, object]:
    return {"owner": org, "rhsm_hostname": server.url, "rhsm_ca_cert": server.ca_path,
            "rhsm_username": server.admin_auth[0], "rhsm_password": server.admin_auth[1]}


def test_checkin_creates_hypervisors_and_guests_and_a_second_run_changes_nothing(
        ftmock_session: FtmockServer, tmp_path: Path, isolated_env: dict[str, str]) -> None:
    org = new_org(ftmock_session)
    conf = write_config(tmp_path / "f.conf", {"report1": {"type": "fake", **server_section(ftmock_session, org)}})
    out = run_ftreport(["-c", str(conf), "-o"], isolated_env)
    assert out.returncode == 0, out.stderr
    assert f"report accepted by {org}@{ftmock_session.url}: 2 hypervisors, 2 guests (2 created" in out.stderr
    hvs = consumers(ftmock_session, org, "hypervisor")
    assert {(c["hypervisorId"]["hypervisorId"], c["name"]) for c in hvs} == {
        (examples.HYPERVISOR_A, "hypervisor-a.example.com"), (examples.HYPERVISOR_B, "hypervisor-b.example.com")}
    assert all(c["facts"]["hypervisor.type"] == "VMware ESXi" and c["facts"]["cpu.cpu_socket(s)"] == "2"
               for c in hvs)
    # One consumer per FT instance, with the FT facts the report carried.
    assert ft_roles(ftmock_session, org) == {examples.INSTANCE_A: ("0", False), examples.INSTANCE_B: ("1", False)}
    before = {c["uuid"]: c["updated"] for c in consumers(ftmock_session, org)}
    out = run_ftreport(["-c", str(conf), "-o"], isolated_env)
    assert out.returncode == 0, out.stderr
    # Every one-shot run sends the full report; the same report again changes nothing on the server.
    assert f"report accepted by {org}@{ftmock_session.url}: 2 hypervisors, 2 guests (0 created, 0 updated, 2 unchanged" in out.stderr
    assert {c["uuid"]: c["updated"] for c in consumers(ftmock_session, org)} == before


def test_a_server_that_forgot_has_every_hypervisor_back_within_one_interval(
        ftmock: FtmockServer, tmp_path: Path, isolated_env: dict[str, str]) -> None:
    """The server loses its database (an old backup restored, or a new server) and its operator
    brings the organisation back: with nothing changed in the source, the daemon's next full
    report, due `interval` after the last one, gives the server every hypervisor again."""
    org = new_org(ftmock)
    conf = write_config(tmp_path / "f.conf", {
        "global": {"state_dir": tmp_path / "state", "interval": 600, "settle": 0},
        "site": {"type": "fake", **server_section(ftmock, org)}})
    now = [0.0]  # the reporter's clock: the interval passes when the test says so

    def hypervisors() -> set[str]:
        return {c["hypervisorId"]["hypervisorId"] for c in consumers(ftmock, org, "hypervisor")}

    expected = {examples.HYPERVISOR_A, examples.HYPERVISOR_B}
    with Reporter(load_config([str(conf)]), clock=lambda: now[0]) as rep:
        wait_until(lambda: rep.step(wait=0.1) and hypervisors() == expected, 30, "the first report")
        ftmock.stop()
        for db in ftmock.data_dir.glob("ftmock.db*"):
            db.unlink()  # the CA and the server's certificate stay, as after a restore
        ftmock.start()
        r = requests.post(ftmock.url + "/owners", json={"key": org}, auth=ftmock.admin_auth,
                          verify=str(ftmock.ca_path), timeout=30)
        assert r.status_code == 200, r.text
        assert hypervisors() == set()
        now[0] += 599
        for _ in range(3):
            assert rep.step(wait=0)
        assert hypervisors() == set()  # the same report within the interval is not sent again
        now[0] += 1
        assert rep.step(wait=0)
        assert hypervisors() == expected
        assert ft_roles(ftmock, org) == {examples.INSTANCE_A: ("0", False), examples.INSTANCE_B: ("1", False)}


def test_daemon_survives_server_outage_and_sends_newest_report(
        ftmock: FtmockServer, tmp_path: Path, isolated_env: dict[str, str],
        daemons: Callable[..., Daemon]) -> None:
    org = new_org(ftmock)
    data = tmp_path / "report.json"
    data.write_text(json.dumps(examples.REPORT_1))
    conf = write_config(tmp_path / "f.conf", {
        "global": {"state_dir": tmp_path / "state", "max_backoff": 1, "settle": 0.1},
        "site": {"type": "fake", "file": data, **server_section(ftmock, org)}})
    daemon = daemons(["-c", str(conf)], isolated_env, tmp_path / "daemon.log")
    daemon.wait_log("report accepted")
    ftmock.stop()
    tmp = data.with_suffix(".tmp")
    tmp.write_text(json.dumps(examples.REPORT_2))
    tmp.replace(data)
    daemon.wait_log("next attempt in")
    ftmock.start()
    daemon.wait_log("report accepted", count=2, timeout=30)
    daemon.wait_log("is reachable again")
    # Report 2 reached the server: B is the primary, C the new backup, A failed over.
    assert ft_roles(ftmock, org) == {examples.INSTANCE_A: ("0", True), examples.INSTANCE_B: ("0", False),
                                     examples.INSTANCE_C: ("1", False)}
    assert daemon.stop() == 0


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(30)
    yield sock
    sock.close()


def _next_notification(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_reload_on_sighup_stop_on_sigterm_and_sd_notify(
        ftmock_session: FtmockServer, tmp_path: Path, isolated_env: dict[str, str],
        daemons: Callable[..., Daemon], notify_socket: socket.socket) -> None:
    org = new_org(ftmock_session)
    sections: dict[str, dict[str, object]] = {
        "global": {"state_dir": tmp_path / "state", "settle": 0.1},
        "first": {"type": "fake", **server_section(ftmock_session, org)}}
    conf = write_config(tmp_path / "f.conf", sections)
    env = dict(isolated_env, NOTIFY_SOCKET=str(tmp_path / "notify.sock"))
    daemon = daemons(["-c", str(conf)], env, tmp_path / "daemon.log")
    assert _next_notification(notify_socket).startswith("READY=1")
    daemon.wait_log("report accepted")
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"hypervisors": [{"uuid": "kvm-host-9", "name": "kvm9", "guests": ["g-9"]}]}))
    sections["second"] = {"type": "fake", "file": extra, **server_section(ftmock_session, org)}
    write_config(conf, sections)
    daemon.process.send_signal(signal.SIGHUP)
    assert _next_notification(notify_socket) == "RELOADING=1"
    assert _next_notification(notify_socket).startswith("READY=1")
    # Both sources report to the same org: one merged check-in.
    daemon.wait_log("3 hypervisors, 3 guests")
    assert {c["hypervisorId"]["hypervisorId"] for c in consumers(ftmock_session, org, "hypervisor")} == {
        examples.HYPERVISOR_A, examples.HYPERVISOR_B, "kvm-host-9"}
    # A broken configuration on reload keeps the running one.
    conf.write_text("[broken\n")
    daemon.process.send_signal(signal.SIGHUP)
    assert _next_notification(notify_socket) == "RELOADING=1"
    assert "previous configuration" in _next_notification(notify_socket)
    daemon.wait_log("reload failed, keeping the running configuration")
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 5
    assert _next_notification(notify_socket) == "STOPPING=1"


def test_esx_failover_reaches_ftmock(vcsim: Vcsim, ftmock_session: FtmockServer, tmp_path: Path,
                                     isolated_env: dict[str, str], daemons: Callable[..., Daemon]) -> None:
    org = new_org(ftmock_session)
    conf = write_config(tmp_path / "esx.conf", {
        "global": {"state_dir": tmp_path / "state", "settle": 0.2},
        "vcenter": {**esx_section(vcsim), **server_section(ftmock_session, org)}})
    daemon = daemons(["-c", str(conf)], isolated_env, tmp_path / "daemon.log")
    daemon.wait_log("report accepted")
    a, b = vcsim.state()["ft"][0]["instances"]
    assert ft_roles(ftmock_session, org) == {a["instanceUuid"]: ("0", False), b["instanceUuid"]: ("1", False)}
    new_backup = vcsim.failover()["ft"][0]["instances"][1]
    started = time.monotonic()
    wait_until(lambda: ft_roles(ftmock_session, org).get(b["instanceUuid"]) == ("0", False), 10,
               "the failover reaching ftmock")
    assert time.monotonic() - started < 5
    assert ft_roles(ftmock_session, org) == {a["instanceUuid"]: ("0", True), b["instanceUuid"]: ("0", False),
                                             new_backup["instanceUuid"]: ("1", False)}
    # The job result names the failover; ftreport logs it at warning, with both instances and hosts.
    line = next(x for x in daemon.wait_log("FT failover").splitlines() if "FT failover" in x)
    assert " WARNING " in line
    assert f"virt.uuid {a['uuid']}" in line
    old_side, new_side = line.split(" -> ")
    assert a["instanceUuid"] in old_side and a["hostUuid"] in old_side
    assert b["instanceUuid"] in new_side and b["hostUuid"] in new_side
    assert daemon.stop() == 0


def test_status_says_what_works(vcsim_session: Vcsim, ftmock_session: FtmockServer, tmp_path: Path,
                                isolated_env: dict[str, str]) -> None:
    org = new_org(ftmock_session)
    good = server_section(ftmock_session, org)
    conf = write_config(tmp_path / "s.conf", {
        "vcenter": {**esx_section(vcsim_session), **good},
        "badvc": {**esx_section(vcsim_session, password="wrong"), **good},
        "fake": {"type": "fake", **good, "rhsm_username": "intruder"},
    })
    out = run_ftreport(["-c", str(conf), "--status", "--json"], isolated_env)
    assert out.returncode == 1, out.stderr
    status = json.loads(out.stdout)
    assert status["sources"]["vcenter"] == {"ok": True, "type": "esx", "hypervisors": 7, "guests": 12}
    assert status["sources"]["fake"]["ok"] is True
    assert status["sources"]["badvc"]["ok"] is False
    assert "wrong user name or password" in status["sources"]["badvc"]["error"]
    label = f"{org}@{ftmock_session.url} as admin"
    assert status["servers"][label]["ok"] is True
    (bad,) = [v for k, v in status["servers"].items() if k != label]
    assert bad["ok"] is False and "invalid credentials (http 401" in bad["error"].lower()
    out = run_ftreport(["-c", str(conf), "--status"], isolated_env)
    assert "source vcenter (esx): OK, 7 hypervisors, 12 guests" in out.stdout
    assert "source badvc (esx): FAILED: badvc: login to" in out.stdout
    assert f"server {label}: OK" in out.stdout


def test_a_slow_source_is_reported_later_and_the_others_stay(
        ftmock_session: FtmockServer, tmp_path: Path, isolated_env: dict[str, str]) -> None:
    """first_report_wait against the real server: the fast source's hypervisors are checked in while
    the slow one still collects; its own follow, and the first ones keep their guests."""
    import threading

    org = new_org(ftmock_session)
    fast, slow = tmp_path / "fast.json", tmp_path / "slow.json"
    fast.write_text(json.dumps(examples.REPORT_1))
    slow.write_text(json.dumps({"hypervisors": [
        {"hypervisorId": {"hypervisorId": "slow-esx-1"}, "name": "slow-esx-1.example.com", "facts": {},
         "guestIds": [{"guestId": str(uuid.uuid4()), "state": 1, "attributes": {"virtWhoType": "esx", "active": 1}}]}]}))
    conf = write_config(tmp_path / "f.conf", {
        "global": {"state_dir": tmp_path / "state", "settle": 0.05, "first_report_wait": 0.5},
        "fast": {"type": "fake", "file": fast, **server_section(ftmock_session, org)},
        "slow": {"type": "fake", "file": slow, **server_section(ftmock_session, org)}})
    release = threading.Event()
    factory = held_back_factory("slow", release)

    def hypervisors() -> dict[str, int]:
        return {c["hypervisorId"]["hypervisorId"]: len(c.get("guestIds") or [])
                for c in consumers(ftmock_session, org, "hypervisor")}

    rep = Reporter(load_config([str(conf)]), factory=factory)
    thread = threading.Thread(target=rep.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: bool(hypervisors()), 30, "the fast source's report")
        first = hypervisors()
        assert set(first) == {examples.HYPERVISOR_A, examples.HYPERVISOR_B} and all(first.values())
        release.set()
        wait_until(lambda: "slow-esx-1" in hypervisors(), 30, "the slow source's report")
        assert hypervisors() == {**first, "slow-esx-1": 1}
    finally:
        release.set()
        rep.stop()
        thread.join(timeout=20)
