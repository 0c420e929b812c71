"""Two instances holding the same old identity meet the 308: exactly one becomes the successor."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ftreport import examples
from tests.conftest import FtmockServer
from tests.e2e.conftest import Admin, report_config, run, vm_guest
from tests.kit.guest import FTAGENT, Guest, copy_identity
from tests.kit.lease import no_overlap
from tests.kit.orgs import new_org


def _setup(server: FtmockServer, admin: Admin, tmp_path: Path) -> tuple[str, Path, Guest, Guest, str]:
    org = new_org(server)
    pool = admin.virt_pool(org)
    conf = report_config(tmp_path / "ftreport.conf", server, org, {"type": "fake", "file": "builtin:report1"})
    run("ftreport", "-c", str(conf), "--oneshot")
    admin.entitle_hypervisors(org, pool)
    live = vm_guest(tmp_path / "live", server, examples.VM1_UUID, lease=True)
    zombie = vm_guest(tmp_path / "zombie", server, examples.VM1_UUID, lease=True)
    old = live.json("register", "--org", org, "--username", "admin", "--password", server.admin_password,
                    "--auto-attach")["uuid"]
    copy_identity(live, zombie)
    assert zombie.json("identity")["uuid"] == old
    return org, conf, live, zombie, old


def _report2(conf: Path) -> None:
    conf.write_text(conf.read_text().replace("builtin:report1", "builtin:report2"))
    run("ftreport", "-c", str(conf), "--oneshot")


def test_concurrent_checkins_exactly_one_swaps(server: FtmockServer, admin: Admin, tmp_path: Path,
                                                isolated_reporter_env: None) -> None:
    org, conf, live, zombie, old = _setup(server, admin, tmp_path)
    _report2(conf)
    procs = [subprocess.Popen([FTAGENT, "--config", str(g.conf), "checkin", "--json"], env=g.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for g in (live, zombie)]
    results = [(p.wait(timeout=60), p.stdout.read() if p.stdout else "", p.stderr.read() if p.stderr else "")
               for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 69], results
    loser_err = next(err for code, _, err in results if code == 69)
    assert "another instance is live" in loser_err
    uuids = sorted(g.json("identity")["uuid"] for g in (live, zombie))
    successor = admin.ft_consumers(org)[examples.INSTANCE_B.lower()]["uuid"]
    assert uuids == sorted([old, successor])  # one moved on, the other kept its old identity intact
    log = admin.call("GET", f"/consumers/{successor}/lease/log")
    assert len({e["holderFingerprint"] for e in log}) == 1 and no_overlap(log)


def test_lease_holder_wins_and_zombie_is_refused(server: FtmockServer, admin: Admin, tmp_path: Path,
                                                 isolated_reporter_env: None) -> None:
    org, conf, live, zombie, old = _setup(server, admin, tmp_path)
    assert live.ftagent("heartbeat", "--once").returncode == 0  # the live instance holds the group's lease
    _report2(conf)
    # The zombie checks in first: the 308 reaches it, but the successor's lease is not its to take.
    res = zombie.ftagent("checkin")
    assert res.returncode == 69, res.stderr
    assert "another instance is live" in res.stderr
    assert zombie.json("identity")["uuid"] == old
    # The live instance claims it as the same holder (a handover) and swaps.
    res = live.ftagent("checkin", "--json", check=True)
    successor = admin.ft_consumers(org)[examples.INSTANCE_B.lower()]["uuid"]
    assert json.loads(res.stdout)["uuid"] == successor
    assert live.json("identity")["failed_over_from"] == old
    lease = live.json("status")["lease"]
    assert (lease["state"], lease["generation"]) == ("HELD", 2)  # what the server granted the claim
    assert live.ftagent("heartbeat", "--once").returncode == 0  # still the holder, now as the successor
    assert zombie.ftagent("heartbeat", "--once").returncode == 3  # another instance holds it
    log = admin.call("GET", f"/consumers/{successor}/lease/log")
    assert [e["event"] for e in log][:2] == ["grant", "handover"]
    assert no_overlap(log)
