"""The FT group lease on the server: grants, renewals, takeover, handover, stale tokens, the log."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.conftest import FtmockServer
from tests.ftmock.conftest import Client, admin_client, register
from tests.kit.lease import fingerprint


def claim(client: Client, uuid: str, holder: str, generation: int | None, ttl: float = 2.0) -> Any:
    return client.post(f"/consumers/{uuid}/lease", json={"holder": holder, "generation": generation, "ttl": ttl})


def no_overlap(log: list[dict[str, Any]]) -> bool:
    """Valid periods of different holders never overlap (a release ends its holder's period)."""
    periods: list[tuple[float, float, str]] = []
    for entry in log:
        if entry["event"] == "release":
            periods = [(s, min(e, entry["start"]) if h == entry["holderFingerprint"] else e, h)
                       for s, e, h in periods]
        else:
            periods.append((entry["start"], entry["expires"], entry["holderFingerprint"]))
    merged: dict[str, list[tuple[float, float]]] = {}
    for s, e, h in periods:
        merged.setdefault(h, []).append((s, e))
    holders = list(merged)
    for i, a in enumerate(holders):
        for b in holders[i + 1:]:
            for s1, e1 in merged[a]:
                for s2, e2 in merged[b]:
                    if s1 < e2 and s2 < e1:
                        return False
    return True


def test_grant_renew_conflict_expiry_and_log(server: FtmockServer, org: str, tmp_path: Path) -> None:
    reg = register(server, tmp_path, org, name="leased", facts={"virt.uuid": "lease-vm-1"})
    r = claim(reg.client, reg.uuid, "agent-1", None)
    assert r.status_code == 200
    gen = r.json()["generation"]
    assert r.json()["holderFingerprint"] == fingerprint("agent-1") and r.json()["valid"]
    assert "agent-1" not in r.text  # the holder id is a secret: only its fingerprint is shown
    r = claim(reg.client, reg.uuid, "agent-1", gen)
    assert r.status_code == 200 and r.json()["generation"] == gen  # renewal keeps the token
    r = claim(reg.client, reg.uuid, "agent-2", None)
    assert r.status_code == 409
    assert r.json()["holderFingerprint"] == fingerprint("agent-1") and "agent-1" not in r.text
    assert claim(reg.client, reg.uuid, "agent-1", gen + 5).status_code == 409  # wrong token
    time.sleep(2.2)  # a real duration: the lease's ttl (2 s) runs out on the server's clock
    # Expired on the server's clock: the old holder's token is stale, a new holder gets gen + 1.
    assert claim(reg.client, reg.uuid, "agent-1", gen).status_code == 409
    r = claim(reg.client, reg.uuid, "agent-2", None)
    assert r.status_code == 200 and r.json()["generation"] == gen + 1
    log = admin_client(server).get(f"/consumers/{reg.uuid}/lease/log").json()
    assert [e["event"] for e in log] == ["grant", "renew", "grant"]
    assert no_overlap(log) and "agent-" not in str(log)
    assert reg.client.get(f"/consumers/{reg.uuid}/lease/log").status_code == 403  # admins only


def test_release_keeps_generation_and_frees_at_once(server: FtmockServer, org: str, tmp_path: Path) -> None:
    reg = register(server, tmp_path, org, name="rel", facts={"virt.uuid": "lease-vm-2"})
    gen = claim(reg.client, reg.uuid, "rel-a", None, ttl=60).json()["generation"]
    assert reg.client.delete(f"/consumers/{reg.uuid}/lease?holder=rel-b&generation={gen}").status_code == 409
    assert reg.client.delete(f"/consumers/{reg.uuid}/lease?holder=rel-a&generation={gen - 1}").status_code == 409
    for query in ("", "?holder=rel-a", f"?generation={gen}", "?holder=rel-a&generation=x"):
        assert reg.client.delete(f"/consumers/{reg.uuid}/lease{query}").status_code == 400, query
    assert reg.client.delete(f"/consumers/{reg.uuid}/lease?holder=rel-a&generation={gen}").status_code == 204
    r = claim(reg.client, reg.uuid, "rel-b", None, ttl=60)
    assert r.status_code == 200 and r.json()["generation"] == gen + 1
    assert no_overlap(admin_client(server).get(f"/consumers/{reg.uuid}/lease/log").json())


def test_stale_generation_refused_on_state_changes(server: FtmockServer, org: str, tmp_path: Path) -> None:
    reg = register(server, tmp_path, org, name="tok", facts={"virt.uuid": "lease-vm-3"})
    gen = claim(reg.client, reg.uuid, "tok-a", None, ttl=60).json()["generation"]
    ok = reg.client.put(f"/consumers/{reg.uuid}", json={"facts": {"x": "1"}},
                        headers={"X-Lease-Generation": str(gen)})
    assert ok.status_code == 204
    stale = reg.client.put(f"/consumers/{reg.uuid}", json={"facts": {"x": "2"}},
                           headers={"X-Lease-Generation": str(gen - 1)})
    assert stale.status_code == 409
    assert reg.client.get(f"/consumers/{reg.uuid}").json()["facts"]["x"] == "1"


def test_bad_lease_requests(server: FtmockServer, org: str, tmp_path: Path) -> None:
    reg = register(server, tmp_path, org, name="bad", facts={"virt.uuid": "lease-vm-4"})
    for body in ({"holder": ""}, {"holder": "a", "ttl": 0}, {"holder": "a", "ttl": "x"},
                 {"holder": "a", "ttl": 3600}, {"holder": "a", "ttl": 301},
                 {"holder": "a", "generation": "1"}, [1]):
        r = reg.client.post(f"/consumers/{reg.uuid}/lease", json=body)
        assert r.status_code == 400, body
    other = register(server, tmp_path, org, name="other")
    assert claim(other.client, reg.uuid, "x", None).status_code == 403


def test_failover_handover_and_zombie(server: FtmockServer, org: str, tmp_path: Path) -> None:
    from tests.ftmock.conftest import checkin
    from tests.ftmock.test_failover import REPORT1, REPORT2, VM1

    checkin(server, org, REPORT1)
    reg = register(server, tmp_path, org, name="ft", facts={"virt.uuid": VM1})
    gen = claim(reg.client, reg.uuid, "ft-live", None, ttl=60).json()["generation"]
    checkin(server, org, REPORT2)
    answer = claim(reg.client, reg.uuid, "ft-live", gen)
    assert answer.status_code == 308  # the old identity is failed over: even the lease says so
    successor = answer.json()["failover"]
    cert = tmp_path / "succ.pem"
    cert.write_text(successor["consumer"]["idCert"]["cert"])
    live = Client(server, cert=(str(cert), reg.key_path))
    r = claim(live, successor["to"], "ft-live", gen)
    assert r.status_code == 200 and r.json()["generation"] == gen + 1  # immediate handover
    # A zombie (another holder) with the same successor identity is refused while the lease is live.
    zombie = claim(Client(server, cert=(str(cert), reg.key_path)), successor["to"], "zombie", None)
    assert zombie.status_code == 409 and zombie.json()["holderFingerprint"] == fingerprint("ft-live")
    log = admin_client(server).get(f"/consumers/{successor['to']}/lease/log").json()
    assert [e["event"] for e in log] == ["grant", "handover"]
    assert no_overlap(log)


def test_a_consumer_cannot_join_another_vms_lease_group(server: FtmockServer, org: str, tmp_path: Path) -> None:
    """Issue 10, item 1: the attack that fenced a victim (facts PUT, holder-less DELETE, one-hour claim)."""
    victim = register(server, tmp_path, org, name="victim", facts={"virt.uuid": "victim-vm"})
    gen = claim(victim.client, victim.uuid, "victim-holder", None, ttl=60).json()["generation"]
    attacker = register(server, tmp_path, org, name="attacker", facts={"virt.uuid": "attacker-vm"})
    # Claiming the victim's virt.uuid after registration changes the fact, not the lease group.
    r = attacker.client.put(f"/consumers/{attacker.uuid}", json={"facts": {"virt.uuid": "victim-vm"}})
    assert r.status_code == 204
    assert attacker.client.delete(f"/consumers/{attacker.uuid}/lease").status_code == 400  # holder required
    r = attacker.client.delete(f"/consumers/{attacker.uuid}/lease?holder=victim-holder&generation={gen}")
    assert r.status_code == 204  # its own (empty) group: nothing released
    assert claim(attacker.client, attacker.uuid, "attacker-x", None, ttl=3600).status_code == 400  # over the maximum
    assert claim(attacker.client, attacker.uuid, "attacker-x", None, ttl=300).status_code == 200  # its own group
    lease = victim.client.get(f"/consumers/{victim.uuid}/lease").json()
    assert lease["holderFingerprint"] == fingerprint("victim-holder") and lease["generation"] == gen and lease["valid"]
    assert claim(victim.client, victim.uuid, "victim-holder", gen).status_code == 200


def test_plain_consumers_sharing_a_virt_uuid_share_no_lease(server: FtmockServer, org: str, tmp_path: Path) -> None:
    """Issue 30: two plain consumers with one virt.uuid (before any report) each have their own lease.

    The second can neither see the first's lease, nor take it over by naming its holder id, nor free it;
    only an administrator of the org can release it, naming its generation."""
    first = register(server, tmp_path, org, name="first", facts={"virt.uuid": "shared-vm"})
    second = register(server, tmp_path, org, name="second", facts={"virt.uuid": "shared-vm"})
    gen = claim(first.client, first.uuid, "h1-shared", None, ttl=60).json()["generation"]
    assert second.client.get(f"/consumers/{second.uuid}/lease").status_code == 404  # its own group: no lease
    # Naming the first's holder id (had it leaked) is refused: no "handover" to another consumer.
    r = claim(second.client, second.uuid, "h1-shared", None, ttl=60)
    assert r.status_code == 409 and "another consumer" in r.json()["displayMessage"]
    assert claim(second.client, second.uuid, "h2-shared", None, ttl=60).status_code == 200  # its own lease
    r = second.client.delete(f"/consumers/{second.uuid}/lease?holder=h1-shared&generation={gen}")
    assert r.status_code == 409  # its own lease has another holder; the first's is out of its reach
    lease = first.client.get(f"/consumers/{first.uuid}/lease").json()
    assert lease["valid"] and lease["generation"] == gen and lease["consumer"] == first.uuid
    assert claim(first.client, first.uuid, "h1-shared", gen).status_code == 200  # the holder renews on
    # An administrator of the org may release it, naming the generation (a stale one changes nothing).
    admin = admin_client(server)
    assert admin.delete(f"/consumers/{first.uuid}/lease?generation={gen + 1}").status_code == 409
    assert admin.delete(f"/consumers/{first.uuid}/lease?generation={gen}").status_code == 204
    assert not first.client.get(f"/consumers/{first.uuid}/lease").json()["valid"]
