"""The operator's fleet view (CLI and HTTPS) and organization users with roles."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import FtmockServer
from tests.ftmock.conftest import Client, admin_client, checkin, hypervisor, register
from tests.ftmock.test_failover import REPORT1, REPORT2, VM1
from tests.kit.lease import fingerprint
from tests.kit.orgs import new_org


def ftmock_cli(server: FtmockServer, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("ftmock")
    assert exe, "the ftmock command is installed"
    return subprocess.run([exe, "--data-dir", str(server.data_dir), *args], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=60)


def fleet_json(server: FtmockServer, *args: str) -> Any:
    out = ftmock_cli(server, *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_fleet_view_of_ft_groups_and_leases(server: FtmockServer, org: str, tmp_path: Path) -> None:
    checkin(server, org, REPORT1)
    reg = register(server, tmp_path, org, name="ft-vm", facts={"virt.uuid": VM1})
    assert reg.client.post(f"/consumers/{reg.uuid}/lease",
                           json={"holder": "vm-a", "generation": None, "ttl": 300}).status_code == 200
    checkin(server, org, REPORT2)

    groups = fleet_json(server, "ftgroup", "list", "--org", org)
    assert len(groups) == 1
    group = groups[0]
    by_instance = {i["instanceUUID"]: i for i in group["instances"]}
    assert set(by_instance) == {"vm_a", "vm_b", "vm_c"}
    a, b, c = by_instance["vm_a"], by_instance["vm_b"], by_instance["vm_c"]
    assert a["failedOver"] and a["failedOverTo"] == b["consumer"] and a["registered"]
    assert a["host"] is None  # no longer reported anywhere
    assert (b["role"], b["host"], b["failedOver"]) == (0, "hyp-b", False)
    assert (c["role"], c["host"], c["registered"]) == (1, "hyp-c", False)
    assert group["primary"] == b["consumer"]
    lease = group["lease"]
    assert lease["holderFingerprint"] == fingerprint("vm-a") and lease["generation"] == 1 and lease["valid"]
    # Right after the failover the guest has not taken B's identity, and its lease is still A's.
    assert (group["protection"], group["reasons"]) == ("unprotected", ["guestNotRegistered", "staleLeaseHolder"])

    leases = fleet_json(server, "lease", "list", "--org", org)
    assert [(x["holderFingerprint"], x["generation"], x["valid"]) for x in leases] == [(fingerprint("vm-a"), 1, True)]
    assert leases[0]["expiresIn"] > 200

    consumers = {c["uuid"]: c for c in fleet_json(server, "consumer", "list", "--org", org)}
    assert consumers[reg.uuid]["registered"] and not consumers[c["consumer"]]["registered"]
    assert {x["type"] for x in consumers.values()} == {"system", "hypervisor"}

    orgs = {o["key"]: o for o in fleet_json(server, "org", "list")}
    assert (orgs[org]["ftGroups"], orgs[org]["hypervisors"], orgs[org]["systems"]) == (1, 3, 3)

    # The table says the same for people.
    table = ftmock_cli(server, "ftgroup", "list", "--org", org)
    assert table.returncode == 0
    assert (f"FT group {VM1}: unprotected (guestNotRegistered, staleLeaseHolder); lease held by holder "
            f"{fingerprint('vm-a')} (generation 1") in table.stdout
    assert "vm-a" not in table.stdout + ftmock_cli(server, "lease", "list", "--org", org).stdout
    assert "hyp-c" in table.stdout and f"yes, to {b['consumer']}" in table.stdout

    # The same over HTTPS for an administrator.
    admin = admin_client(server)
    assert admin.get(f"/fleet/orgs/{org}/ftgroups").json()[0]["primary"] == b["consumer"]
    assert admin.get(f"/fleet/orgs/{org}/leases").json()[0]["holderFingerprint"] == fingerprint("vm-a")
    assert {c["uuid"] for c in admin.get(f"/fleet/orgs/{org}/consumers").json()} == set(consumers)
    assert org in {o["key"] for o in admin.get("/fleet/orgs").json()}
    # A consumer does not see the fleet.
    plain = register(server, tmp_path, org, name="plain")
    assert plain.client.get(f"/fleet/orgs/{org}/ftgroups").status_code == 403


def test_unknown_org_is_an_error(server: FtmockServer) -> None:
    out = ftmock_cli(server, "ftgroup", "list", "--org", "no-such-org")
    assert out.returncode != 0 and "no-such-org" in out.stderr


def test_reporter_checks_in_hypervisors_and_nothing_else(server: FtmockServer, org: str, tmp_path: Path) -> None:
    out = ftmock_cli(server, "user", "create", "rep-" + org, "--org", org, "--role", "reporter",
                     env={"FTMOCK_USER_PASSWORD": "rep-secret"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"username": "rep-" + org, "owner": org, "role": "reporter"}
    reporter = Client(server, auth=("rep-" + org, "rep-secret"))

    report = {"hypervisors": [hypervisor("hyp-r", ["guest-r"])]}
    r = reporter.post(f"/hypervisors/{org}?reporter_id=r1", json=report)
    assert r.status_code == 200, r.text
    assert reporter.get(f"/jobs/{r.json()['id']}").status_code == 200
    assert reporter.put(f"/hypervisors/{org}/heartbeat?reporter_id=r1").status_code == 200
    assert reporter.get("/status").status_code == 200

    # Everything else is refused, with a message saying why.
    for method, path, body in (("POST", f"/consumers?owner={org}", {"name": "x", "facts": {}}),
                               ("GET", f"/owners/{org}/consumers", None),
                               ("GET", f"/owners/{org}/pools", None),
                               ("GET", f"/fleet/orgs/{org}/ftgroups", None),
                               ("POST", f"/owners/{org}/products", {"id": "p", "name": "p"})):
        r = reporter.call(method, path, json=body)
        assert r.status_code == 403, (path, r.text)
        assert "reporter" in r.json()["displayMessage"]
    # Another organization's hypervisors are not its to report.
    other = new_org(server)
    assert reporter.post(f"/hypervisors/{other}?reporter_id=r1", json=report).status_code == 403


def test_org_admin_sees_only_its_org(server: FtmockServer, org: str, tmp_path: Path) -> None:
    out = ftmock_cli(server, "user", "create", "adm-" + org, "--org", org, "--role", "admin",
                     "--password", "adm-secret")
    assert out.returncode == 0, out.stderr
    admin = Client(server, auth=("adm-" + org, "adm-secret"))
    r = admin.post(f"/consumers?owner={org}", json={"name": "sys1", "facts": {}})
    assert r.status_code == 200, r.text
    assert [o["key"] for o in admin.get("/owners").json()] == [org]
    assert [o["key"] for o in admin.get("/fleet/orgs").json()] == [org]
    assert admin.get(f"/fleet/orgs/{org}/consumers").json()[0]["name"] == "sys1"
    other = new_org(server)
    assert admin.get(f"/fleet/orgs/{other}/consumers").status_code == 403
    assert admin.post(f"/consumers?owner={other}", json={"name": "sys2", "facts": {}}).status_code == 403
    assert admin.post("/owners", json={"key": "new-" + org}).status_code == 403


def test_user_create_refuses_bad_input(server: FtmockServer, org: str) -> None:
    out = ftmock_cli(server, "user", "create", "u1", "--org", org, "--role", "root", "--password", "x")
    assert out.returncode == 64 and "root" in out.stderr
    out = ftmock_cli(server, "user", "create", "u1", "--org", "no-such-org", "--role", "admin", "--password", "x")
    assert out.returncode == 64 and "no-such-org" in out.stderr
    out = ftmock_cli(server, "user", "create", "admin", "--org", org, "--role", "reporter", "--password", "x")
    assert out.returncode == 64 and "administrator" in out.stderr
