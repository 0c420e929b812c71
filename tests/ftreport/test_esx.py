"""The esx source against govmomi's simulator (FT pairs, TLS with a test CA)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ftreport.config import load_config
from ftreport.service import Reporter
from tests.kit.ca import TLSFiles
from tests.kit.wait import wait_until

from .conftest import (
    VCSIM_PASSWORD,
    Recorder,
    Vcsim,
    esx_section,
    ft_guests,
    run_ftreport,
    write_config,
)


def _print(tmp_path: Path, env: dict[str, str], section: dict[str, object]) -> dict[str, Any]:
    conf = write_config(tmp_path / "esx.conf", {"vcenter": section})
    out = run_ftreport(["-c", str(conf), "-p"], env)
    assert out.returncode == 0, out.stderr
    body: dict[str, Any] = json.loads(out.stdout)
    return body


def test_print_reports_hosts_guests_and_ft_attributes(vcsim_session: Vcsim, tmp_path: Path,
                                                      isolated_env: dict[str, str]) -> None:
    conf = write_config(tmp_path / "esx.conf", {"vcenter": esx_section(vcsim_session)})
    out = run_ftreport(["-c", str(conf), "-o", "-p"], isolated_env)
    assert out.returncode == 0, out.stderr
    # stdout is exactly one JSON document; logs went to stderr.
    body = json.loads(out.stdout)
    assert "vcenter: 7 hypervisors, 12 guests" in out.stderr
    state = vcsim_session.state(all_objects=True)
    hosts = {h["uuid"]: h for h in state["hosts"]}
    hvs = body["hypervisors"]
    assert [h["hypervisorId"]["hypervisorId"] for h in hvs] == sorted(hosts)
    for hv in hvs:
        host = hosts[hv["hypervisorId"]["hypervisorId"]]
        assert hv["name"] == f"{host['name'].lower()}.vcsim.test"
        facts = hv["facts"]
        assert facts["cpu.cpu_socket(s)"] == "2"
        assert facts["hypervisor.type"] == "VMware ESXi"
        assert facts["hypervisor.version"]
        assert facts["dmi.system.uuid"] == host["uuid"]
        if "_C" in host["name"]:
            assert facts["hypervisor.cluster"] == host["name"].rsplit("_", 1)[0]
        else:
            assert "hypervisor.cluster" not in facts  # the standalone host
        keys = [(g["guestId"], g["attributes"].get("instanceUUID", "")) for g in hv["guestIds"]]
        assert keys == sorted(keys)
    # Every VM is reported once, on the host it runs on, by its BIOS UUID (config.uuid).
    reported = {(g["guestId"], hv["hypervisorId"]["hypervisorId"], g.get("attributes", {}).get("instanceUUID"))
                for hv in hvs for g in hv["guestIds"]}
    assert len(reported) == len(state["vms"]) == 12
    for vm in state["vms"]:
        ft = vm.get("ftInstanceUuids")
        assert (vm["uuid"], vm["hostUuid"], vm["instanceUuid"] if ft else None) in reported
    # FT pairs: same guestId on two hypervisors, role converted to 0-based, instances in vSphere order.
    ft = ft_guests(body)
    assert len(ft) == 4
    for group in state["ft"]:
        primary, backup = group["instances"]
        assert ft[primary["instanceUuid"]] == {
            "hypervisor": primary["hostUuid"], "role": "0", "guestId": group["uuid"], "state": 1,
            "instances": [primary["instanceUuid"], backup["instanceUuid"]]}
        assert ft[backup["instanceUuid"]] == {
            "hypervisor": backup["hostUuid"], "role": "1", "guestId": group["uuid"], "state": 1,
            "instances": [primary["instanceUuid"], backup["instanceUuid"]]}
        assert primary["hostUuid"] != backup["hostUuid"]
    # vSphere's runtime.faultToleranceState, collected in the same filter, travels with the FT info.
    assert {g["attributes"].get("faultToleranceState") for hv in hvs for g in hv["guestIds"]
            if "instanceUUID" in g["attributes"]} == {"running"}
    non_ft = [g for hv in hvs for g in hv["guestIds"] if "instanceUUID" not in g["attributes"]]
    assert len(non_ft) == 8
    assert all(g["attributes"] == {"virtWhoType": "esx", "active": 1} and g["state"] == 1 for g in non_ft)


@pytest.mark.parametrize("server_form", ["hostport", "url-without-sdk"])
def test_server_address_forms(vcsim_session: Vcsim, tmp_path: Path, isolated_env: dict[str, str],
                              server_form: str) -> None:
    hostport = vcsim_session.url.split("://", 1)[1].split("/", 1)[0]
    server = hostport if server_form == "hostport" else f"https://{hostport}"
    body = _print(tmp_path, isolated_env, esx_section(vcsim_session, server=server))
    assert len(body["hypervisors"]) == 7


def test_hypervisor_id_kinds_and_host_filters(vcsim_session: Vcsim, tmp_path: Path,
                                              isolated_env: dict[str, str]) -> None:
    body = _print(tmp_path, isolated_env, esx_section(vcsim_session, hypervisor_id="hostname",
                                                      filter_hosts="dc0_c1_*"))
    assert [h["hypervisorId"]["hypervisorId"] for h in body["hypervisors"]] == [
        f"dc0_c1_h{i}.vcsim.test" for i in range(3)]
    body = _print(tmp_path, isolated_env, esx_section(vcsim_session, hypervisor_id="hwuuid",
                                                      exclude_hosts=r"DC0_C0_H\d, DC0_H0"))
    ids = [h["hypervisorId"]["hypervisorId"] for h in body["hypervisors"]]
    assert len(ids) == 3 and all(i.startswith("host-") for i in ids)
    body = _print(tmp_path, isolated_env, esx_section(vcsim_session, filter_host_parents="DC0_C0"))
    assert {h["facts"]["hypervisor.cluster"] for h in body["hypervisors"]} == {"DC0_C0"}


def test_wrong_password_is_reported(vcsim_session: Vcsim, tmp_path: Path, isolated_env: dict[str, str]) -> None:
    conf = write_config(tmp_path / "esx.conf", {"vcenter": esx_section(vcsim_session, password="nope")})
    out = run_ftreport(["-c", str(conf), "-p"], isolated_env)
    assert out.returncode == 1
    assert out.stdout == ""
    assert "vcenter: login to" in out.stderr
    assert "refused: wrong user name or password" in out.stderr
    assert VCSIM_PASSWORD not in out.stderr and "nope" not in out.stderr


def test_untrusted_certificate_is_refused(vcsim_session: Vcsim, other_ca: TLSFiles, tmp_path: Path,
                                          isolated_env: dict[str, str]) -> None:
    conf = write_config(tmp_path / "esx.conf",
                        {"vcenter": esx_section(vcsim_session, ca=other_ca.ca_path)})
    out = run_ftreport(["-c", str(conf), "-p"], isolated_env)
    assert out.returncode == 1
    assert out.stdout == ""
    assert "certificate of https://127.0.0.1:" in out.stderr and "not trusted" in out.stderr
    # Without ca_cert the system trust store is used, which does not know the test CA either.
    section = esx_section(vcsim_session)
    del section["ca_cert"]
    conf = write_config(tmp_path / "esx2.conf", {"vcenter": section})
    out = run_ftreport(["-c", str(conf), "-p"], isolated_env)
    assert out.returncode == 1 and "not trusted" in out.stderr
    # Only an explicit opt-out skips verification.
    conf = write_config(tmp_path / "esx3.conf", {"vcenter": {**section, "insecure": "true"}})
    out = run_ftreport(["-c", str(conf), "-p"], isolated_env)
    assert out.returncode == 0, out.stderr
    assert "TLS verification of https://127.0.0.1:" in out.stderr and "disabled" in out.stderr


@pytest.fixture
def reporter(vcsim: Vcsim, tmp_path: Path, isolated_env: dict[str, str]) -> Iterator[tuple[Reporter, Recorder]]:
    """An in-process daemon watching the test's simulator, reporting to a recording server."""
    conf = write_config(tmp_path / "daemon.conf", {
        "global": {"state_dir": tmp_path / "state", "max_backoff": 1, "settle": 0.2, "interval": 3600},
        "vcenter": esx_section(vcsim, owner="org1", rhsm_hostname="https://127.0.0.1:9/candlepin"),
    })
    recorder = Recorder()
    rep = Reporter(load_config(paths=[conf]), connection_factory=recorder.factory)
    thread = threading.Thread(target=rep.run, daemon=True)
    thread.start()
    yield rep, recorder
    rep.stop()
    thread.join(timeout=20)
    assert not thread.is_alive()


def test_failover_reaches_next_report_within_seconds(vcsim: Vcsim, reporter: tuple[Reporter, Recorder]) -> None:
    _rep, recorder = reporter
    group = vcsim.state()["ft"][0]
    a, b = group["instances"]
    first = recorder.wait_for(lambda body: len(ft_guests(body)) == 2)
    assert ft_guests(first)[a["instanceUuid"]]["role"] == "0"

    started = time.monotonic()
    after = vcsim.failover()["ft"][0]["instances"]
    new_primary, new_backup = after
    assert new_primary["instanceUuid"] == b["instanceUuid"]
    body = recorder.wait_for(lambda body: ft_guests(body).get(b["instanceUuid"], {}).get("role") == "0")
    elapsed = recorder.times[-1] - started
    assert elapsed < 3.0, f"failover took {elapsed:.2f} s to reach the server"
    ft = ft_guests(body)
    instances = [b["instanceUuid"], new_backup["instanceUuid"]]
    assert ft == {
        b["instanceUuid"]: {"hypervisor": b["hostUuid"], "role": "0", "instances": instances,
                            "guestId": group["uuid"], "state": 1},
        new_backup["instanceUuid"]: {"hypervisor": new_backup["hostUuid"], "role": "1", "instances": instances,
                                     "guestId": group["uuid"], "state": 1},
    }
    # Report 2 of the design: the old primary's instance is gone, the new backup runs on a third host.
    assert a["instanceUuid"] not in ft
    assert new_backup["hostUuid"] not in (a["hostUuid"], b["hostUuid"])
    # Both halves of the failover arrived in one report, not as a half-applied intermediate state.
    for sent in recorder.bodies[1:]:
        roles = sorted(g["role"] for g in ft_guests(sent).values())
        assert roles == ["0", "1"]


def test_power_off_and_move_are_reported(vcsim: Vcsim, reporter: tuple[Reporter, Recorder]) -> None:
    _rep, recorder = reporter
    recorder.wait_for(lambda body: True)
    vms = vcsim.state(all_objects=True)
    plain = next(v for v in vms["vms"] if "ftRole" not in v)
    target = next(h for h in vms["hosts"] if h["uuid"] != plain["hostUuid"])
    vcsim.power(plain["name"], "poweredOff")

    def state_of(body: dict[str, Any]) -> tuple[str, int] | None:
        for hv in body["hypervisors"]:
            for g in hv["guestIds"]:
                if g["guestId"] == plain["uuid"]:
                    return hv["hypervisorId"]["hypervisorId"], g["state"]
        return None

    recorder.wait_for(lambda body: state_of(body) == (plain["hostUuid"], 5))
    vcsim.move(plain["name"], target["name"])
    recorder.wait_for(lambda body: state_of(body) == (target["uuid"], 5))


def test_vcenter_restart_is_survived(vcsim: Vcsim, reporter: tuple[Reporter, Recorder]) -> None:
    rep, recorder = reporter
    recorder.wait_for(lambda body: True)
    sent = len(recorder.bodies)
    vcsim.kill()
    wait_until(lambda: not rep.snapshots.describe()["vcenter"]["ok"], 10, "the daemon noticing the outage")
    vcsim.start()
    plain = next(v for v in vcsim.state(all_objects=True)["vms"] if "ftRole" not in v)
    # The restarted simulator has the same inventory: nothing new to send until something changes.
    wait_until(lambda: rep.snapshots.describe()["vcenter"]["ok"], 20, "the daemon reconnecting")
    assert len(recorder.bodies) == sent
    vcsim.power(plain["name"], "poweredOff")
    recorder.wait_for(lambda body: any(g["guestId"] == plain["uuid"] and g["state"] == 5
                                       for hv in body["hypervisors"] for g in hv["guestIds"]))


def test_expired_session_is_logged_in_again(vcsim: Vcsim, reporter: tuple[Reporter, Recorder],
                                            caplog: pytest.LogCaptureFixture) -> None:
    """vCenter ends the daemon's session (expiry, an administrator): the daemon notices, logs in
    again by itself, and a failover made once the old session is gone reaches the server promptly.
    Twice, so the new session is a working one too."""
    caplog.set_level(logging.INFO, logger="ftreport")
    rep, recorder = reporter
    recorder.wait_for(lambda body: len(ft_guests(body)) == 2)

    def wait_log(needle: str, deadline: float, what: str) -> None:
        wait_until(lambda: needle in caplog.text, max(0.0, deadline - time.monotonic()),
                   lambda: f"{what}; log:\n{caplog.text}")

    for round_ in (1, 2):
        caplog.clear()
        started = time.monotonic()
        deadline = started + 15
        assert vcsim.expire_sessions(), "the daemon had no session to end"
        # The daemon's next call (at most a WaitForUpdatesEx wait later) is refused.
        wait_log("ended (expired or vCenter restarted); retrying in", deadline,
                 f"round {round_}: the ended session went unnoticed")
        # Only a new session can carry this change to the server.
        sent = len(recorder.bodies)
        primary = vcsim.failover()["ft"][0]["instances"][0]["instanceUuid"]
        recorder.wait_for(lambda body: ft_guests(body).get(primary, {}).get("role") == "0", timeout=15)
        elapsed = recorder.times[-1] - started
        assert elapsed < 10, f"round {round_}: the failover took {elapsed:.1f} s to reach the server"
        wait_log("again (new session)", deadline, f"round {round_}: no new login logged")
        logins = [r.getMessage() for r in caplog.records if "again (new session)" in r.getMessage()]
        assert logins == [f"vcenter: logged in to {vcsim.url} again (new session)"]
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, errors  # one refused call, then the new login worked
        assert errors[0].startswith(f"vcenter: session with {vcsim.url} ended (expired or vCenter restarted); "
                                    "retrying in "), errors
        # Healthy again, and nothing stale or half-applied was sent around the reconnect.
        wait_until(lambda: rep.snapshots.describe()["vcenter"]["ok"], max(0.0, deadline - time.monotonic()),
                   "the source healthy again")
        later = recorder.bodies[sent:]
        assert later and all(ft_guests(b)[primary]["role"] == "0" for b in later)
