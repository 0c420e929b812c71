"""The threat model of registration and the lease (docs/design.md), one test per row, over mutual TLS.

Every test sets up a *victim*: the primary instance of an FT VM, registered with the org's activation
key, holding its group's lease under a secret holder id. Each row's caller then tries what its
credential allows and what it must not; afterwards the victim's certificate, identity and lease are
exactly what they were (`assert_intact`) unless the row is an org administrator's explicit takeover.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.conftest import FtmockServer
from tests.ftmock.conftest import (
    Client,
    Registered,
    admin_client,
    checkin,
    hypervisor,
    public_key_der,
    register,
)
from tests.ftmock.test_failover import ft_guest
from tests.kit.ftmock import finished_job
from tests.kit.lease import fingerprint
from tests.kit.orgs import new_org, org_user

_groups = itertools.count()


@dataclass
class Org:
    """An org with an activation key and one user of each role, plus an admin of another org."""

    key: str
    activation_key: str
    user: Client
    admin: Client
    reporter: Client
    other_org: str
    other_admin: Client


@pytest.fixture(scope="module")
def acme(ftmock_session: FtmockServer) -> Org:
    server = ftmock_session
    key = new_org(server)
    r = admin_client(server).post(f"/owners/{key}/activation_keys", json={"name": "ft-vms"})
    assert r.status_code == 200, r.text
    other = new_org(server)

    def user(org: str, role: str) -> Client:
        return Client(server, auth=org_user(server, org, role))

    return Org(key, "ft-vms", user(key, "user"), user(key, "admin"), user(key, "reporter"), other,
               user(other, "admin"))


@dataclass
class Victim:
    """A running FT guest: the primary's identity and the group's live lease under a secret holder id."""

    vm: str
    hosts: tuple[str, str, str]
    instances: tuple[str, str, str]
    reg: Registered
    holder: str
    generation: int
    serial: str

    @property
    def uuid(self) -> str:
        return self.reg.uuid

    def renew(self) -> Any:
        return self.reg.client.post(f"/consumers/{self.uuid}/lease",
                                    json={"holder": self.holder, "generation": self.generation, "ttl": 60})


def report(v: Victim, primary: int) -> dict[str, Any]:
    """A report with instance ``primary`` (0 or 1) as role 0 on its host and the next one as backup."""
    a, b = v.instances[primary], v.instances[primary + 1]
    return {"hypervisors": [hypervisor(v.hosts[primary], [ft_guest(a, 0, [a, b], guest=v.vm)]),
                            hypervisor(v.hosts[primary + 1], [ft_guest(b, 1, [a, b], guest=v.vm)])]
            + ([hypervisor(v.hosts[0], [])] if primary else [])}


def make_victim(server: FtmockServer, org: Org, tmp: Path, org_key: str | None = None) -> Victim:
    n = next(_groups)
    vm = str(uuid.uuid4())
    hosts = tuple(f"tm{n}-hyp-{x}" for x in "abc")
    instances = tuple(f"tm{n}-vm-{x}" for x in "abc")
    owner = org_key or org.key
    blank = Victim(vm, hosts, instances, None, "", 0, "")  # type: ignore[arg-type]
    assert checkin(server, owner, report(blank, 0))["state"] == "FINISHED"
    reg = register(server, tmp, owner, name=f"victim-{n}", facts={"virt.uuid": vm}, activation_keys=org.activation_key)
    assert reg.dto["facts"]["instanceUUID"] == instances[0]  # the FT group's primary
    holder = f"victim:{secrets.token_hex(8)}"
    r = reg.client.post(f"/consumers/{reg.uuid}/lease", json={"holder": holder, "generation": None, "ttl": 60})
    assert r.status_code == 200, r.text
    return Victim(vm, hosts, instances, reg, holder, r.json()["generation"], reg.dto["idCert"]["serial"]["serial"])


def assert_intact(v: Victim) -> None:
    """The running guest noticed nothing: its certificate works, its identity and lease are unchanged."""
    me = v.reg.client.get(f"/consumers/{v.uuid}")
    assert me.status_code == 200, me.text  # the certificate was not retired
    assert me.json()["idCert"]["serial"]["serial"] == v.serial
    r = v.renew()
    assert r.status_code == 200, r.text
    lease = r.json()
    assert (lease["consumer"], lease["generation"], lease["holderFingerprint"]) == (
        v.uuid, v.generation, fingerprint(v.holder))
    assert v.holder not in r.text


def assert_refused(client: Client, v: Victim, org: str, status: int, holder: str = "x",
                   register_status: int | None = None) -> None:
    """A registration naming the VM, forced or not (``register_status``, else ``status``), and every call
    on the victim (its consumer, identity, lease and log) and on the org's events: ``status``."""
    for query in ("", "&force=true"):
        r = client.post(f"/consumers?owner={org}{query}", json=registration(v.vm))
        assert r.status_code == (register_status or status), (query, r.status_code, r.text)
    calls = [("GET", f"/consumers/{v.uuid}", None), ("POST", f"/consumers/{v.uuid}", {}),
             ("GET", f"/consumers/{v.uuid}/lease", None),
             ("POST", f"/consumers/{v.uuid}/lease", {"holder": holder, "generation": None, "ttl": 60}),
             ("DELETE", f"/consumers/{v.uuid}/lease?holder={holder}&generation={v.generation}", None),
             ("GET", f"/consumers/{v.uuid}/lease/log", None), ("GET", f"/owners/{org}/events", None)]
    for method, path, body in calls:
        r = client.call(method, path, json=body)
        assert r.status_code == status, (method, path, r.status_code, r.text)


def registration(vm: str, name: str = "intruder") -> dict[str, Any]:
    return {"name": name, "type": {"label": "system"}, "facts": {"virt.uuid": vm}}


def test_anonymous(server: FtmockServer, acme: Org, tmp_path: Path) -> None:
    """Anonymous (TLS, no credential): the server's status only."""
    v = make_victim(server, acme, tmp_path)
    anon = Client(server)
    assert anon.get("/status").status_code == 200
    assert_refused(anon, v, acme.key, 401)
    assert_intact(v)


def test_activation_key(server: FtmockServer, acme: Org, tmp_path: Path) -> None:
    """An activation key registers systems, never over a live FT identity, and can never force."""
    v = make_victim(server, acme, tmp_path)
    anon = Client(server)
    r = anon.post(f"/consumers?owner={acme.key}&activation_keys={acme.activation_key}", json=registration(v.vm))
    assert r.status_code == 409, r.text
    message = r.json()["displayMessage"]
    assert v.uuid in message and v.reg.dto["name"] in message and "live" in message
    assert (r.json()["consumerUuid"], r.json()["consumerName"]) == (v.uuid, v.reg.dto["name"])
    r = anon.post(f"/consumers?owner={acme.key}&activation_keys={acme.activation_key}&force=true",
                  json=registration(v.vm))
    assert r.status_code == 403 and "activation key" in r.json()["displayMessage"]
    # What it may do: register a new system.
    r = anon.post(f"/consumers?owner={acme.key}&activation_keys={acme.activation_key}",
                  json=registration(str(uuid.uuid4()), "new-system"))
    assert r.status_code == 200 and r.json()["uuid"] != v.uuid
    assert_intact(v)
    assert acme.admin.get(f"/owners/{acme.key}/events").json() == []  # a refusal replaces nothing


def test_activation_key_reclaims_a_silent_identity_with_an_event(server: FtmockServer, acme: Org,
                                                                 tmp_path: Path) -> None:
    """A VM silent for longer than its org's identity window (reinstalled, restored) registers again."""
    org = new_org(server)
    assert admin_client(server).post(f"/owners/{org}/activation_keys", json={"name": "ft-vms"}).status_code == 200
    settings = server.admin("org", "update", org, "--identity-window", "1")
    assert '"identityWindow": 1.0' in settings
    blank = Org(org, "ft-vms", acme.user, acme.admin, acme.reporter, acme.other_org, acme.other_admin)
    v = make_victim(server, blank, tmp_path, org)
    # Within the window (its lease counts until it expires) the identity is live.
    r = Client(server).post(f"/consumers?owner={org}&activation_keys=ft-vms", json=registration(v.vm))
    assert r.status_code == 409
    assert v.reg.client.delete(f"/consumers/{v.uuid}/lease?holder={v.holder}&generation={v.generation}"
                               ).status_code == 204
    time.sleep(1.3)  # the guest stops: no check-in, no lease, for longer than the window
    r = Client(server).post(f"/consumers?owner={org}&activation_keys=ft-vms", json=registration(v.vm, "reinstalled"))
    assert r.status_code == 200, r.text
    assert r.json()["uuid"] == v.uuid  # the FT group's primary, with a new identity
    assert v.reg.client.get(f"/consumers/{v.uuid}").status_code == 401  # the old certificate is retired
    events = admin_client(server).get(f"/owners/{org}/events").json()
    assert [(e["type"], e["consumerUuid"], e["principal"]) for e in events] == [
        ("IDENTITY_REPLACED", v.uuid, {"type": "activation key", "name": "ft-vms"})]
    assert "identity window 1 s passed" in events[0]["messageText"]
    assert "IDENTITY_REPLACED" in server.admin("event", "list", "--org", org)
    assert server.admin("org", "update", org, "--identity-window", "default").count('"identityWindow": null') == 1


def test_org_user(server: FtmockServer, acme: Org, tmp_path: Path) -> None:
    """A user (role user) registers and manages systems; it takes over neither an identity nor a lease."""
    v = make_victim(server, acme, tmp_path)
    user = acme.user
    assert user.post(f"/consumers?owner={acme.key}", json=registration(v.vm)).status_code == 409
    r = user.post(f"/consumers?owner={acme.key}&force=true", json=registration(v.vm))
    assert r.status_code == 403 and "administrator" in r.json()["displayMessage"]
    assert user.post(f"/consumers/{v.uuid}", json={}).status_code == 403  # regenerating its identity
    # Unregistering the live FT identity would let the next registration rebuild the group around itself.
    r = user.delete(f"/consumers/{v.uuid}")
    assert r.status_code == 403 and "administrator" in r.json()["displayMessage"]
    lease = user.get(f"/consumers/{v.uuid}/lease")
    assert lease.status_code == 200 and lease.json()["holderFingerprint"] == fingerprint(v.holder)
    assert v.holder not in lease.text and v.holder not in user.get(f"/consumers/{v.uuid}").text
    assert user.post(f"/consumers/{v.uuid}/lease", json={"holder": "mine", "ttl": 60}).status_code == 403
    assert user.delete(f"/consumers/{v.uuid}/lease?generation={v.generation}").status_code == 403
    assert user.delete(f"/consumers/{v.uuid}/lease?holder={v.holder}&generation={v.generation}").status_code == 403
    assert user.get(f"/owners/{acme.key}/events").status_code == 403
    for path, body in ((f"/owners/{acme.key}/activation_keys", {"name": "mine"}),
                       (f"/owners/{acme.key}/shares", {"recipient": {"key": acme.other_org}}),
                       (f"/owners/{acme.key}/pools", {"productId": "x", "quantity": 1})):
        assert user.post(path, json=body).status_code == 403, path  # the org's settings are the admins'
    assert user.get(f"/fleet/orgs/{acme.key}/leases").status_code == 403
    assert user.put(f"/owners/{acme.key}", json={"displayName": "mine"}).status_code == 403
    assert user.get(f"/consumers/{v.uuid}").json()["idCert"].get("key") is None  # a certificate, not its key
    # What it may do: register and manage a system of its own.
    r = user.post(f"/consumers?owner={acme.key}", json=registration(str(uuid.uuid4()), "users-system"))
    assert r.status_code == 200
    assert user.put(f"/consumers/{r.json()['uuid']}", json={"name": "renamed"}).status_code == 204
    assert user.delete(f"/consumers/{r.json()['uuid']}").status_code == 204  # a plain system: unregistered
    assert_intact(v)


def test_org_admin(server: FtmockServer, acme: Org, tmp_path: Path) -> None:
    """An org admin takes over a live identity only by asking with force; who and when are recorded."""
    v = make_victim(server, acme, tmp_path)
    admin = acme.admin
    admin_name = f"admin-{acme.key}"
    assert admin.post(f"/consumers?owner={acme.key}", json=registration(v.vm)).status_code == 409  # not by default
    assert admin.post(f"/consumers?owner={acme.key}&force=yes", json=registration(v.vm)).status_code == 400
    log = admin.get(f"/consumers/{v.uuid}/lease/log")
    assert log.status_code == 200 and v.holder not in log.text
    assert {e["holderFingerprint"] for e in log.json()} == {fingerprint(v.holder)}
    assert admin.post(f"/consumers/{v.uuid}/lease", json={"holder": v.holder, "ttl": 60}).status_code == 403
    assert_intact(v)

    before = time.time()
    r = admin.post(f"/consumers?owner={acme.key}&force=true", json=registration(v.vm, "replacement"))
    assert r.status_code == 200, r.text
    assert r.json()["uuid"] == v.uuid and r.json()["idCert"]["serial"]["serial"] != v.serial
    assert v.reg.client.get(f"/consumers/{v.uuid}").status_code == 401  # the old guest's certificate is retired
    (event,) = [e for e in admin.get(f"/owners/{acme.key}/events").json() if e["consumerUuid"] == v.uuid]
    assert event["type"] == "IDENTITY_REPLACED" and event["principal"] == {"type": "user", "name": admin_name}
    assert "forced registration" in event["messageText"] and str(v.serial) in event["messageText"]
    from datetime import datetime

    assert before - 1 <= datetime.fromisoformat(event["timestamp"]).timestamp() <= time.time() + 1
    assert admin_name in server.admin("event", "list", "--org", acme.key)
    # The takeover gave it the identity, not the lease: the old holder's lease runs until it expires
    # (the old guest, whose renewals now fail, fences at its own deadline) or an admin releases it.
    key_pem = r.json()["idCert"].get("key")
    assert key_pem is not None  # no CSR sent: the server made the key
    cert, key = tmp_path / "new.pem", tmp_path / "new-key.pem"
    cert.write_text(r.json()["idCert"]["cert"])
    key.write_text(key_pem)
    newcomer = Client(server, cert=(str(cert), str(key)))
    claim = newcomer.post(f"/consumers/{v.uuid}/lease", json={"holder": "newcomer-holder", "generation": None,
                                                               "ttl": 60})
    assert claim.status_code == 409 and claim.json()["holderFingerprint"] == fingerprint(v.holder)
    assert admin.delete(f"/consumers/{v.uuid}/lease?generation={v.generation}").status_code == 204
    claim = newcomer.post(f"/consumers/{v.uuid}/lease", json={"holder": "newcomer-holder", "generation": None,
                                                               "ttl": 60})
    assert claim.status_code == 200 and claim.json()["generation"] == v.generation + 1
    # Regenerating a system's identity with a password is a takeover too: recorded alike.
    assert admin.post(f"/consumers/{v.uuid}", json={}).status_code == 200
    # So is unregistering the live identity of an FT VM.
    assert admin.delete(f"/consumers/{v.uuid}").status_code == 204
    kinds = [e["type"] for e in admin.get(f"/owners/{acme.key}/events").json() if e["consumerUuid"] == v.uuid]
    assert kinds == ["IDENTITY_REPLACED", "IDENTITY_REPLACED", "IDENTITY_DELETED"]


def test_another_orgs_user(server: FtmockServer, acme: Org, tmp_path: Path) -> None:
    """Another org's admin reaches nothing of this org; naming the VM in its own org makes a plain system."""
    v = make_victim(server, acme, tmp_path)
    other = acme.other_admin
    assert_refused(other, v, acme.key, 403)
    # In its own org, even forced, the VM's uuid gives a plain consumer (no share): no FT group, own lease.
    r = other.post(f"/consumers?owner={acme.other_org}&force=true", json=registration(v.vm, "lookalike"))
    assert r.status_code == 200, r.text
    plain = r.json()
    assert plain["uuid"] != v.uuid and "instanceUUID" not in plain["facts"]
    assert_intact(v)


def test_a_consumer(server: FtmockServer, acme: Org, tmp_path: Path) -> None:
    """Another system's certificate opens its own resources only; it cannot borrow the victim's holder id."""
    v = make_victim(server, acme, tmp_path)
    other = register(server, tmp_path, acme.key, name="neighbour", facts={"virt.uuid": str(uuid.uuid4())},
                     activation_keys=acme.activation_key)
    # A consumer certificate registers nothing (401); the victim is out of its reach (403).
    assert_refused(other.client, v, acme.key, 403, holder=v.holder, register_status=401)
    # Had the holder id leaked, naming it in the neighbour's own lease is refused too.
    r = other.client.post(f"/consumers/{other.uuid}/lease", json={"holder": v.holder, "generation": None, "ttl": 60})
    assert r.status_code == 409 and "another consumer" in r.json()["displayMessage"]
    r = other.client.post(f"/consumers/{other.uuid}/lease", json={"holder": "neighbour-own", "ttl": 60})
    assert r.status_code == 200 and r.json()["consumer"] == other.uuid  # its own lease, its own group
    assert_intact(v)
    # It may check in hypervisors for its org (as Candlepin lets a consumer): like the reporter's,
    # a failover it reports gives it nothing.
    forged_failover_gives_nothing(server, other.client, acme.key, v, tmp_path)


def test_a_failed_over_consumer(server: FtmockServer, acme: Org, tmp_path: Path) -> None:
    """A failed-over identity gets only 308s carrying the successor's certificate for its own key."""
    v = make_victim(server, acme, tmp_path)
    assert checkin(server, acme.key, report(v, 1))["resultData"]["failovers"]
    answer = v.reg.client.get(f"/consumers/{v.uuid}/lease")
    assert answer.status_code == 308
    successor = answer.json()["failover"]["consumer"]
    assert successor["idCert"].get("key") is None  # no private key crosses the wire
    succ_cert = x509.load_pem_x509_certificate(successor["idCert"]["cert"].encode())
    own_cert = x509.load_pem_x509_certificate(Path(v.reg.cert_path).read_bytes())
    assert public_key_der(succ_cert) == public_key_der(own_cert)  # usable only with the guest's own key
    for method, path in (("GET", f"/consumers/{v.uuid}"), ("POST", f"/consumers/{v.uuid}/lease"),
                         ("POST", f"/consumers?owner={acme.key}")):
        assert v.reg.client.call(method, path, json={}).status_code == 308, (method, path)
    cert = tmp_path / "successor.pem"
    cert.write_text(successor["idCert"]["cert"])
    as_successor = Client(server, cert=(str(cert), v.reg.key_path))
    # Another instance (another holder) with the same identity cannot take the live lease...
    zombie = as_successor.post(f"/consumers/{successor['uuid']}/lease",
                               json={"holder": "zombie", "generation": None, "ttl": 60})
    assert zombie.status_code == 409
    # ...the holder hands it over to the successor the server named.
    r = as_successor.post(f"/consumers/{successor['uuid']}/lease",
                          json={"holder": v.holder, "generation": v.generation, "ttl": 60})
    assert r.status_code == 200 and r.json()["generation"] == v.generation + 1
    assert r.json()["consumer"] == successor["uuid"] and v.holder not in r.text
    # The successor is the live identity now: a registration naming the VM names it.
    r = Client(server).post(f"/consumers?owner={acme.key}&activation_keys={acme.activation_key}",
                            json=registration(v.vm))
    assert r.status_code == 409 and successor["uuid"] in r.json()["displayMessage"]


def test_the_reporter(server: FtmockServer, acme: Org, tmp_path: Path) -> None:
    """The reporter drives failovers by reports and gets nothing that would let it act as the VM."""
    v = make_victim(server, acme, tmp_path)
    rep = acme.reporter
    assert_refused(rep, v, acme.key, 403)
    assert_intact(v)
    forged_failover_gives_nothing(server, rep, acme.key, v, tmp_path)


def forged_failover_gives_nothing(server: FtmockServer, sender: Client, org: str, v: Victim, tmp: Path) -> None:
    """A report that fails the VM over (forged or not) gives its sender no certificate, key or lease;
    the guest follows with its own key and keeps its lease as the same holder."""
    r = sender.post(f"/hypervisors/{org}?reporter_id=tm", data=json.dumps(report(v, 1)),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    job = finished_job(lambda job_id: sender.get(f"/jobs/{job_id}").json(), r.json()["id"])
    assert job["state"] == "FINISHED" and job["resultData"]["failovers"]
    assert "BEGIN CERTIFICATE" not in str(job) and v.holder not in str(job)
    answer = v.reg.client.get(f"/consumers/{v.uuid}")
    assert answer.status_code == 308
    successor = answer.json()["failover"]["consumer"]
    cert = tmp / "succ.pem"
    cert.write_text(successor["idCert"]["cert"])
    r = Client(server, cert=(str(cert), v.reg.key_path)).post(
        f"/consumers/{successor['uuid']}/lease", json={"holder": v.holder, "generation": v.generation, "ttl": 60})
    assert r.status_code == 200 and r.json()["generation"] == v.generation + 1
