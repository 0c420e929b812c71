"""The agent side of FT failover against ftmock: hypervisor reports make consumers, the guest
registers, a report moves the primary, and the guest's next `checkin` swaps to the successor with
the successor's entitlements.  Also: a crash of `ftagent checkin` at random points of the swap."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest

from ftagent.connection import Connection
from ftagent.errors import FailoverRequired
from ftagent.identity import IdentityStore
from tests.conftest import FtmockServer
from tests.ftmock.conftest import checkin, hypervisor
from tests.kit.guest import FTAGENT, Guest, cli_guest
from tests.kit.orgs import ENTITLEMENT, new_org


def hyp_checkin(g: Guest, report: dict[str, Any]) -> dict[str, Any]:
    assert g.server is not None
    job = checkin(g.server, g.org, report)
    assert job["state"] == "FINISHED", job
    return job


def ft_guest(virt: str, inst: str, role: int, instances: list[str]) -> dict[str, Any]:
    return {"guestId": virt, "state": 1,
            "attributes": {"instanceUUID": inst, "ftinfo.role": str(role), "ftinfo.instanceUUIDs": instances}}


class FtScenario:
    """Report 1, VM registration (with an entitlement from hypervisor A), Report 2."""

    def __init__(self, g: Guest) -> None:
        self.g = g
        v = g.virt_uuid
        self.a, self.b, self.c = (str(uuidlib.uuid4()) for _ in range(3))
        hosts = [f"esx-{n}-{uuidlib.uuid4().hex[:6]}" for n in "abc"]
        self.report1 = {"hypervisors": [hypervisor(hosts[0], [ft_guest(v, self.a, 0, [self.a, self.b])]),
                                        hypervisor(hosts[1], [ft_guest(v, self.b, 1, [self.a, self.b])]),
                                        hypervisor(hosts[2], [])]}
        self.report2 = {"hypervisors": [hypervisor(hosts[0], []),
                                        hypervisor(hosts[1], [ft_guest(v, self.b, 0, [self.b, self.c])]),
                                        hypervisor(hosts[2], [ft_guest(v, self.c, 1, [self.b, self.c])])]}
        hyp_checkin(g, self.report1)
        # Each hypervisor holds a subscription with virt_limit: its guests get derived pools.
        g.server.admin("product", "create", "--org", g.org, "--id", "100", "--name", "OS",
                       "--attribute", "virt_limit=4")
        pool = json.loads(g.server.admin("pool", "create", "--org", g.org, "--product", "100", "--quantity", "10"))["id"]
        hyps = g.admin_api("GET", f"owners/{g.org}/consumers", params={"type": "hypervisor"}).json()
        assert len(hyps) == 3
        for h in hyps:
            r = g.admin_api("POST", f"consumers/{h['uuid']}/entitlements", params={"pool": pool})
            assert r.status_code == 200, r.text
        self.first = g.register("--auto-attach")
        assert len(self.first["entitlement_serials"]) == 1
        hyp_checkin(g, self.report2)

    @property
    def uuid1(self) -> str:
        return str(self.first["uuid"])


@pytest.fixture
def ft(tmp_path: Path, ftmock_session: FtmockServer) -> FtScenario:
    return FtScenario(cli_guest(tmp_path / "vm", ftmock_session, new_org(ftmock_session, mode=ENTITLEMENT)))


def server_serials(g: Guest, uuid: str) -> set[int]:
    items = g.admin_api("GET", f"consumers/{uuid}/certificates/serials").json()
    return {int(i["serial"]["serial"] if isinstance(i["serial"], dict) else i["serial"]) for i in items}


def test_checkin_follows_the_failover_to_the_successor(ft: FtScenario) -> None:
    g = ft.g
    key_before = (g.id_dir / "key.pem").read_bytes()
    old_cert = (g.id_dir / "cert.pem").read_bytes()
    old_serials = set(ft.first["entitlement_serials"])

    result = g.ok("checkin")
    assert result["failed_over_from"] == ft.uuid1
    uuid2 = result["uuid"]
    assert uuid2 != ft.uuid1
    ident = g.ok("identity")
    assert ident["uuid"] == uuid2 and ident["failed_over_from"] == ft.uuid1
    assert (g.id_dir / "key.pem").read_bytes() == key_before  # same key, new certificate
    consumer2 = g.admin_api("GET", f"consumers/{uuid2}").json()
    assert consumer2["facts"]["instanceUUID"].lower() == ft.b.lower()
    assert consumer2["facts"]["ftinfo.role"] == "0"
    # The guest holds exactly consumer 2's entitlement certificates, none of consumer 1's.
    local = {int(p.name[:-4]) for p in g.ent_dir.glob("*.pem") if not p.name.endswith("-key.pem")}
    assert local == server_serials(g, uuid2) and local
    assert not (local & old_serials)
    assert g.ok("status")["status"] == "valid"
    # A consumer exists for the new backup.
    consumers = g.admin_api("GET", f"owners/{g.org}/consumers").json()
    assert any(c.get("facts", {}).get("instanceUUID", "").lower() == ft.c.lower() for c in consumers)
    # Consumer 1's identity now gets the 308.
    saved = g.root / "old"
    saved.mkdir()
    (saved / "cert.pem").write_bytes(old_cert)
    (saved / "key.pem").write_bytes(key_before)
    with Connection(g.server.url, ca_cert=g.server.ca_path, cert_file=saved / "cert.pem",
                    key_file=saved / "key.pem") as conn, pytest.raises(FailoverRequired) as info:
        conn.get(f"consumers/{ft.uuid1}")
    assert info.value.failover["to"] == uuid2
    # Nothing more to do on the next checkin.
    again = g.ok("checkin")
    assert again["failed_over_from"] is None and again["requests"] == 2


def test_any_command_follows_the_failover(ft: FtScenario) -> None:
    status = ft.g.ok("status")
    assert status["consumerUuid"] != ft.uuid1
    assert ft.g.ok("identity")["failed_over_from"] == ft.uuid1


def test_forged_successor_virt_uuid_mismatch_refused(ft: FtScenario) -> None:
    """The guest's own virt.uuid differs from the successor's (e.g. a cloned disk): refused."""
    ft.g.set_fact("virt.uuid", str(uuidlib.uuid4()))
    before = ft.g.ok("identity")
    res = ft.g.run("checkin")
    assert res.exit_code == 69
    assert "failover refused" in res.stderr and "virt.uuid" in res.stderr
    assert ft.g.ok("identity") == before


def test_kill_during_swap_leaves_usable_identity_and_next_checkin_completes(ft: FtScenario) -> None:
    runs = int(os.environ.get("FTAGENT_SWAP_CRASH_RUNS", "8"))
    g = ft.g
    backup = g.root / "backup"
    for state in (g.id_dir, g.ent_dir):
        shutil.copytree(state, backup / state.name, symlinks=True)
    rng = random.Random(int(os.environ.get("FTAGENT_CRASH_SEED", "99")))
    env = dict(os.environ, FTAGENT_CONFIG=str(g.conf))
    seen: set[str] = set()
    successor = None
    for _ in range(runs):
        for state in (g.id_dir, g.ent_dir):
            shutil.rmtree(state)
            shutil.copytree(backup / state.name, state, symlinks=True)
        proc = subprocess.Popen([FTAGENT, "checkin"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.15, 0.6))  # a real duration: the kill lands at a random point of the swap
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ident = IdentityStore(g.id_dir).load(full=True)  # old or new, always a valid pair
        assert ident.uuid in (ft.uuid1, successor) or successor is None
        seen.add("old" if ident.uuid == ft.uuid1 else "new")
        res = subprocess.run([FTAGENT, "checkin", "--json"], env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        successor = successor or out["uuid"]
        assert out["uuid"] == successor != ft.uuid1
        local = {int(p.name[:-4]) for p in g.ent_dir.glob("*.pem") if not p.name.endswith("-key.pem")}
        assert local == server_serials(g, successor)
    assert seen  # the kills landed; which side each left depends on timing
    print(f"swap crash runs={runs} states seen={sorted(seen)}")
