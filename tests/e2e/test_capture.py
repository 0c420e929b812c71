"""Issue 30, item 1: nobody captures a running FT guest's identity or lease.

The victim is a real guest: registered with `ftagent`, its `ftagent heartbeat` daemon holding the FT
group's lease. The attacker is another `ftagent` installation naming the victim's `virt.uuid` (no
secret: every hypervisor report carries it), with the org's activation key, a user's password, and
finally the victim's holder id copied from its disk. Each attempt fails, and the victim's heartbeat
(state, generation, no fence) and identity (certificate, check-in) are exactly as before. The one way
in is an org administrator's explicit `register --force`, which is recorded and still cannot take the
live lease: the old guest fences at its own deadline and only then does the newcomer hold the lease.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import requests

from ftreport import examples
from tests.conftest import FtmockServer
from tests.e2e.conftest import report_config, run
from tests.ftmock.conftest import admin_client
from tests.kit.guest import Guest, guests, make_guest
from tests.kit.lease import assert_no_overlap, lease_guest
from tests.kit.orgs import new_org, org_user
from tests.kit.wait import wait_until

__all__ = ["guests"]  # the fixture, imported for pytest

VM = examples.VM1_UUID


def _org_with_key(server: FtmockServer) -> str:
    org = new_org(server)
    assert admin_client(server).post(f"/owners/{org}/activation_keys", json={"name": "ft-vms"}).status_code == 200
    return org


def _report(server: FtmockServer, org: str, tmp: Path) -> None:
    run("ftreport", "-c", str(report_config(tmp / "ftreport.conf", server, org,
                                            {"type": "fake", "file": "builtin:report1"})), "--oneshot")


def _bare_guest(server: FtmockServer, root: Path, org: str) -> Guest:
    """An unregistered ftagent installation whose facts name ``VM`` (the attacker's machine)."""
    return make_guest(root, server, org, virt_uuid=VM, lease={"fence_command": "/bin/true"})


class Watch:
    """What the running victim looks like now; :meth:`unchanged` compares with that later."""

    def __init__(self, victim: Guest) -> None:
        self.victim = victim
        wait_until(lambda: victim.state() == "HELD", 15, "the victim HELD")
        st = victim.status()
        self.uuid, self.generation, self.renewals = victim.uuid(), st["generation"], st["renewals"]
        self.cert = (victim.root / "identity" / "cert.pem").read_bytes()

    def unchanged(self) -> None:
        v = self.victim
        renewals = self.renewals
        wait_until(lambda: v.status().get("renewals", 0) >= renewals + 3, 10, "the victim renewing on")
        st = v.status()
        assert (st["state"], st["generation"], st["consumer"]) == ("HELD", self.generation, self.uuid), st
        assert st["held_by"] == st["holder_fingerprint"]  # it still recognises the lease as its own
        assert v.fences() == []
        assert v.uuid() == self.uuid and (v.root / "identity" / "cert.pem").read_bytes() == self.cert
        res = v.ftagent("checkin")
        assert res.returncode == 0, res.stderr  # its certificate still works
        assert v.server is not None
        log = assert_no_overlap(v.server, self.uuid)
        assert {(e["consumer"], e["holderFingerprint"]) for e in log} == {(self.uuid, st["holder_fingerprint"])}


def _running_ft_guest(server: FtmockServer, tmp: Path, guests: list[Guest]) -> tuple[str, Guest, Any, Watch]:
    """An org whose report shows the FT VM, and the VM's guest registered with its heartbeat HELD."""
    org = _org_with_key(server)
    _report(server, org, tmp)
    victim = lease_guest(server, tmp / "victim", org, VM)
    guests.append(victim)
    pv = victim.start()
    return org, victim, pv, Watch(victim)


def test_capture_of_a_registered_ft_guest_fails(server: FtmockServer, tmp_path: Path, guests: list[Guest],
                                                isolated_reporter_env: None) -> None:
    org, victim, pv, watch = _running_ft_guest(server, tmp_path, guests)
    attacker = _bare_guest(server, tmp_path / "attacker", org)

    res = attacker.ftagent("register", "--org", org, "--activationkey", "ft-vms")
    assert res.returncode == 64, res.stderr
    assert watch.uuid in res.stderr and "victim" in res.stderr and "live" in res.stderr
    name, password = org_user(server, org, "user")
    res = attacker.ftagent("register", "--org", org, "--username", name, "--password", password, "--force")
    assert res.returncode == 64 and "administrator" in res.stderr, res.stderr
    assert not (attacker.root / "identity" / "cert.pem").exists()
    # Nor can the user free the VM's place by unregistering the running guest.
    r = requests.delete(f"{server.url}/consumers/{watch.uuid}", auth=(name, password), verify=str(server.ca_path),
                        timeout=30)
    assert r.status_code == 403, r.text

    # Registered as a system of its own, it copies the victim's holder id: no lease comes with it.
    attacker.set_fact("virt.uuid", "attacker-vm")
    assert attacker.ftagent("register", "--org", org, "--activationkey", "ft-vms").returncode == 0
    shutil.copy(victim.root / "lease.holder", attacker.root / "lease.holder")
    res = attacker.ftagent("heartbeat", "--once", "--json")
    assert res.returncode == 3 and json.loads(res.stdout)["state"] == "ACQUIRING", res.stdout + res.stderr
    assert admin_client(server).get(f"/consumers/{attacker.uuid()}/lease").status_code == 404  # nothing granted
    watch.unchanged()
    assert pv.poll() is None and victim.stop(pv) == 0


def test_plain_lookalikes_before_the_report_share_nothing(server: FtmockServer, tmp_path: Path,
                                                          guests: list[Guest], isolated_reporter_env: None) -> None:
    org = _org_with_key(server)
    victim = lease_guest(server, tmp_path / "victim", org, VM)  # no report yet: a plain system
    guests.append(victim)
    pv = victim.start()
    watch = Watch(victim)
    attacker = _bare_guest(server, tmp_path / "attacker", org)
    assert attacker.ftagent("register", "--org", org, "--activationkey", "ft-vms").returncode == 0
    assert attacker.uuid() != watch.uuid
    shutil.copy(victim.root / "lease.holder", attacker.root / "lease.holder")
    res = attacker.ftagent("heartbeat", "--once", "--json")  # the victim's holder id is not the attacker's
    assert res.returncode == 3 and json.loads(res.stdout)["state"] == "ACQUIRING", res.stdout + res.stderr
    assert admin_client(server).get(f"/consumers/{attacker.uuid()}/lease").status_code == 404
    (attacker.root / "lease.holder").unlink()
    res = attacker.ftagent("heartbeat", "--once", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["consumer"] == attacker.uuid()  # a lease of its own
    watch.unchanged()

    # The report makes the victim (registered first) the FT primary; its lease moves with it.
    _report(server, org, tmp_path)
    consumer = admin_client(server).get(f"/consumers/{watch.uuid}").json()
    assert consumer["facts"]["instanceUUID"] == examples.INSTANCE_A
    watch.unchanged()
    res = _bare_guest(server, tmp_path / "late", org).ftagent("register", "--org", org, "--activationkey", "ft-vms")
    assert res.returncode == 64 and watch.uuid in res.stderr
    assert victim.stop(pv) == 0


def test_an_org_admin_forces_the_takeover_and_it_is_recorded(server: FtmockServer, tmp_path: Path,
                                                             guests: list[Guest], isolated_reporter_env: None) -> None:
    org, victim, pv, watch = _running_ft_guest(server, tmp_path, guests)
    name, password = org_user(server, org, "admin")
    newcomer = _bare_guest(server, tmp_path / "newcomer", org)
    forced = time.time()
    res = newcomer.ftagent("register", "--org", org, "--username", name, "--password", password, "--force")
    assert res.returncode == 0, res.stderr
    assert newcomer.uuid() == watch.uuid  # the FT group's primary, with a new certificate
    events = server.admin("event", "list", "--org", org, "--json")
    (event,) = json.loads(events)
    assert (event["type"], event["principal"]["name"], event["consumerUuid"]) == ("IDENTITY_REPLACED", name, watch.uuid)
    # The old guest's renewals are refused (its certificate is retired): it fences at its deadline,
    # and the newcomer gets the lease only after the old one ran out.
    wait_until(lambda: victim.fences(), 10, "the replaced guest fences")
    assert victim.fences()[0][0] - forced < float(victim.lease["ttl"]) + 1
    wait_until(lambda: newcomer.ftagent("heartbeat", "--once").returncode == 0, 10, "the newcomer holds the lease")
    assert_no_overlap(server, watch.uuid)
    victim.stop(pv)
