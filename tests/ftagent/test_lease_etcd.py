"""``[lease] backend = etcd``: ``ftagent heartbeat`` processes on a real 3-member etcd cluster, in
what only etcd has (members and quorum lost, a stalling member, its configuration and TLS); the
scenarios every backend faces are in test_lease_faults.py.

The guests register with ftmock (their identity gives the org), but the lease lives in etcd only.
Short timings (ttl 3 s, renew 0.5 s, margin 1 s).  After every scenario, etcd's own history of the
key (a watch from revision 1, stamped with arrival times by a live watch) must show one holder at a
time, each period starting with the key's creation and ending with its deletion, and every holder
that fenced must have fenced before etcd deleted its key (before anybody else could get in).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import FtmockServer
from tests.ftagent.tcpgate import TcpGate
from tests.kit.ca import CertAuthority
from tests.kit.etcd import PREFIX, EtcdCluster, KeyWatch, b64, check_history, free_ports, key_of, unb64
from tests.kit.guest import Guest, clone_guest
from tests.kit.lease import fingerprint, lease_guest, unique_vm
from tests.kit.orgs import new_org
from tests.kit.wait import hold_for, wait_until


def vm() -> str:
    return unique_vm("etcd")


def etcd_guest(server: FtmockServer, root: Path, endpoints: str, **lease: str) -> Guest:
    return lease_guest(server, root, new_org(server), vm(), backend="etcd", etcd_endpoints=endpoints,
                       etcd_prefix=PREFIX, **lease)


def test_one_member_killed_the_holder_keeps_its_lease(ftmock_session: FtmockServer, etcd: EtcdCluster,
                                                      tmp_path: Path, guests: list[Guest],
                                                      closing: Callable[[Any], Any]) -> None:
    # A leader change takes up to a few election timeouts (1 s each) on a loaded machine: the
    # holder's budget (ttl - margin) must cover it, as docs/heartbeat.md advises for real sites.
    a = etcd_guest(ftmock_session, tmp_path / "a", etcd.endpoints, ttl="6", margin="1", renew_interval="0.5")
    b = clone_guest(a, tmp_path / "b")
    guests += [a, b]
    leader = etcd.leader()
    assert leader is not None
    watch = closing(KeyWatch(etcd.any_alive(exclude=(leader,)).url, key_of(a)))
    pa = a.start()
    wait_until(lambda: a.state() == "HELD", 15, "A HELD")
    pb = b.start()
    wait_until(lambda: b.status().get("held_by") is not None, 10, "B waiting")
    gen = a.status()["generation"]
    etcd.kill(leader)  # a leader change too: keep-alives move to the new leader
    renewals = a.status()["renewals"]
    for _ in hold_for(7, step=0.1):  # longer than the ttl
        st = a.status()
        assert st["state"] in ("HELD", "DEGRADED") and st["generation"] == gen, st
    wait_until(lambda: a.state() == "HELD", 3, "A HELD again")
    assert a.status()["renewals"] >= renewals + 4
    assert not a.fences() and b.state() == "ACQUIRING"
    [held] = check_history(watch)
    assert held.fingerprint == a.status()["holder_fingerprint"] and held.generation == gen and held.end is None
    assert a.stop(pa) == 0 and b.stop(pb) == 0


def test_quorum_lost_the_holder_fences_before_expiry_and_one_holder_after(
        ftmock_session: FtmockServer, etcd: EtcdCluster, tmp_path: Path, guests: list[Guest],
        closing: Callable[[Any], Any]) -> None:
    a = etcd_guest(ftmock_session, tmp_path / "a", etcd.endpoints)
    b = clone_guest(a, tmp_path / "b")
    guests += [a, b]
    leader = etcd.leader()
    assert leader is not None
    survivor = etcd.any_alive(exclude=(leader,))
    watch = closing(KeyWatch(survivor.url, key_of(a)))
    pa = a.start()
    wait_until(lambda: a.state() == "HELD", 15, "A HELD")
    pb = b.start()
    wait_until(lambda: b.status().get("held_by") is not None, 10, "B waiting")
    for m in etcd.members:
        if m is not survivor:
            etcd.kill(m)
    wait_until(lambda: a.state() == "FENCED", 6, "A fences without quorum")
    assert "deadline" in a.status()["reason"]
    for _ in hold_for(1):
        assert b.state() == "ACQUIRING"  # nobody can get the lease without quorum
    etcd.heal()
    wait_until(lambda: b.state() == "HELD", 15, "B takes over once quorum is back and A's lease expired")
    for _ in hold_for(1):
        assert a.state() == "FENCED" and b.state() == "HELD" and len(a.fences()) == 1 and not b.fences()
    found = check_history(watch, a)
    assert [p.fingerprint for p in found] == [a.status()["holder_fingerprint"], b.status()["holder_fingerprint"]]
    assert a.stop(pa) == 3 and b.stop(pb) == 0


def test_holder_cut_off_by_a_stalling_proxy_fences_in_time(ftmock_session: FtmockServer, etcd: EtcdCluster,
                                                           tmp_path: Path, guests: list[Guest],
                                                           closing: Callable[[Any], Any]) -> None:
    member = etcd.members[0]
    gate = closing(TcpGate(("127.0.0.1", member.client_port)))  # a member that stalls: nothing passes
    a = etcd_guest(ftmock_session, tmp_path / "a", f"http://127.0.0.1:{gate.port}")
    b = clone_guest(a, tmp_path / "b", etcd_endpoints=etcd.endpoints)
    guests += [a, b]
    watch = closing(KeyWatch(etcd.members[1].url, key_of(a)))
    pa = a.start()
    wait_until(lambda: a.state() == "HELD", 15, "A HELD")
    pb = b.start()
    wait_until(lambda: b.status().get("held_by") is not None, 10, "B waiting")
    gate.cut("drop")
    stalled = time.time()
    wait_until(lambda: a.state() == "DEGRADED", 3, "A DEGRADED")
    wait_until(lambda: a.state() == "FENCED", 5, "A FENCED")
    wait_until(lambda: b.state() == "HELD", 10, "B takes over after etcd expired A's lease")
    fence_time, reason = a.fences()[0]
    assert "deadline" in reason and fence_time - stalled < 3.0  # within ttl of the last keep-alive
    found = check_history(watch, a)
    assert [p.fingerprint for p in found] == [a.status()["holder_fingerprint"], b.status()["holder_fingerprint"]]
    assert a.stop(pa) == 3 and b.stop(pb) == 0


def test_restart_after_fenced_waits_for_expiry_and_gets_a_new_generation(
        ftmock_session: FtmockServer, etcd: EtcdCluster, tmp_path: Path, guests: list[Guest],
        closing: Callable[[Any], Any]) -> None:
    gate = closing(TcpGate(("127.0.0.1", etcd.members[2].client_port)))
    a = etcd_guest(ftmock_session, tmp_path / "a", f"http://127.0.0.1:{gate.port}", ttl="5", margin="1",
                   renew_interval="0.5")
    guests.append(a)
    watch = closing(KeyWatch(etcd.members[0].url, key_of(a)))
    pa = a.start()
    wait_until(lambda: a.state() == "HELD", 15, "A HELD")
    gen = a.status()["generation"]
    gate.cut("drop")
    wait_until(lambda: a.state() == "FENCED", 7, "A FENCED")
    assert a.stop(pa) == 3
    # The operator restarts it with the cluster reachable again, before etcd expired the old lease:
    # the same holder id, but an etcd lease this process does not know, so it waits.
    gate.restore()
    a.write_config(etcd_endpoints=etcd.endpoints)
    pa = a.start()
    wait_until(lambda: a.status().get("pid") == pa.pid, 10, "the new process reports")
    wait_until(lambda: a.state() == "HELD", 10, "A holds again once the old lease expired")
    st = a.status()
    assert st["generation"] > gen and len(a.fences()) == 1
    found = check_history(watch, a)
    assert [(p.fingerprint, p.generation) for p in found] == [(st["holder_fingerprint"], gen),
                                                          (st["holder_fingerprint"], st["generation"])]
    assert found[0].end is not None and found[0].end <= found[1].start
    assert a.stop(pa) == 0


def test_etcd_backend_configuration_errors(ftmock_session: FtmockServer, tmp_path: Path) -> None:
    a = lease_guest(ftmock_session, tmp_path / "a", new_org(ftmock_session), vm(), backend="etcd")
    r = a.ftagent("heartbeat", "--once")
    assert r.returncode == 78 and "[lease] etcd_endpoints" in r.stderr and str(a.conf) in r.stderr
    a.write_config(etcd_endpoints="ftp://x:1")
    r = a.ftagent("heartbeat", "--once")
    assert r.returncode == 78 and "invalid endpoint" in r.stderr
    a.write_config(etcd_endpoints="http://127.0.0.1:1", etcd_username="root")
    r = a.ftagent("heartbeat", "--once")
    assert r.returncode == 78 and "etcd_password" in r.stderr
    r = a.ftagent("status", "--json")  # a read-only command shows the error beside the status
    assert "etcd_password" in json.loads(r.stdout)["lease"]["error"]
    a.write_config(etcd_endpoints="http://127.0.0.1:1", etcd_username="", etcd_ca_cert="/etc/ssl/ca.pem")
    r = a.ftagent("heartbeat", "--once")
    assert r.returncode == 78 and "https://" in r.stderr


def test_unreachable_cluster_is_unavailable_for_once(ftmock_session: FtmockServer, tmp_path: Path) -> None:
    port = free_ports(1)[0]
    a = lease_guest(ftmock_session, tmp_path / "a", new_org(ftmock_session), vm(), backend="etcd",
                   etcd_endpoints=f"http://127.0.0.1:{port}")
    r = a.ftagent("heartbeat", "--once")
    assert r.returncode == 69, r.stderr
    assert a.status()["state"] == "ACQUIRING"


def test_backend_keys_are_declared_once_by_the_backend() -> None:
    from ftagent.lease.backends import backend_spec
    from ftagent.lease.backends.etcd import KEYS
    from ftagent.lease.settings import lease_keys

    assert backend_spec("etcd").keys == KEYS and set(KEYS) <= lease_keys()


def test_password_is_not_in_settings_repr(tmp_path: Path) -> None:
    from ftagent.lease.settings import parse_lease_settings

    s = parse_lease_settings(raw={"backend": "etcd", "etcd_endpoints": "https://e1:2379, https://e2:2379",
                                  "etcd_username": "agent", "etcd_password": "s3cret"}, base=tmp_path)
    assert "s3cret" not in repr(s)
    assert s.backend_options is not None and "https://e2:2379" in repr(s.backend_options)


def test_failover_keeps_the_key_and_only_the_holding_instance_takes_the_successor(
        ftmock_session: FtmockServer, etcd: EtcdCluster, tmp_path: Path, guests: list[Guest],
        closing: Callable[[Any], Any]) -> None:
    from tests.ftmock.conftest import checkin
    from tests.ftmock.test_failover import REPORT1, REPORT2, VM1

    server = ftmock_session
    org = new_org(server)
    checkin(server, org, REPORT1)
    a = lease_guest(server, tmp_path / "a", org, VM1, backend="etcd", etcd_endpoints=etcd.endpoints,
                   etcd_prefix=PREFIX)
    b = clone_guest(a, tmp_path / "b")  # another instance with the same identity, its own holder id
    guests += [a, b]
    watch = closing(KeyWatch(etcd.members[0].url, key_of(a)))
    consumer1 = a.uuid()
    pa = a.start()
    wait_until(lambda: a.state() == "HELD", 15, "A HELD")
    pb = b.start()
    wait_until(lambda: b.status().get("held_by") is not None, 10, "B waiting")
    gen = a.status()["generation"]
    consumer2 = checkin(server, org, REPORT2)["resultData"]["failovers"][0]["to"]
    # Both instances meet the failover answer on their next command; only the holder may follow it.
    r = b.ftagent("checkin")
    assert r.returncode != 0 and "does not hold" in r.stderr, r.stderr
    assert b.uuid() == consumer1
    r = a.ftagent("checkin")
    assert r.returncode == 0, r.stderr
    assert a.uuid() == consumer2
    for _ in hold_for(1):
        st = a.status()  # the key is the FT group's: nothing changed in etcd
        assert st["state"] == "HELD" and st["generation"] == gen and not a.fences()
    [held] = check_history(watch)
    assert held.fingerprint == st["holder_fingerprint"] and held.generation == gen and held.end is None
    assert a.stop(pa) == 0 and b.stop(pb) == 0


def test_tls_client_certificate_and_etcd_password(ftmock_session: FtmockServer, tmp_path: Path) -> None:
    ca = CertAuthority()
    member = ca.server_files(tmp_path / "pki")
    client_cert, client_key = ca.client_files(tmp_path / "pki", "ftagent-guest")
    cluster = EtcdCluster(tmp_path / "etcd", size=1, tls=(member.ca_path, member.cert_path, member.key_path))
    cluster.start()
    try:
        cluster.enable_auth("guest", "guest-pw", PREFIX + "/")
        a = etcd_guest(ftmock_session, tmp_path / "a", cluster.endpoints, etcd_ca_cert=str(member.ca_path),
                       etcd_cert=str(client_cert), etcd_key=str(client_key),
                       etcd_username="guest", etcd_password="guest-pw",
                       # Five one-shot runs must fit in the holder's lease: a loaded CI machine
                       # starts each in about a second, more than the kit's 3 s ttl allows.
                       ttl="30", margin="5", renew_interval="5")
        r = a.ftagent("heartbeat", "--once", "--json")
        assert r.returncode == 0, r.stderr
        gen = json.loads(r.stdout)["generation"]
        kvs = cluster.post(cluster.members[0], "kv/range", {"key": b64(key_of(a))})["kvs"]
        assert fingerprint(unb64(kvs[0]["value"])) == a.status()["holder_fingerprint"]
        assert int(kvs[0]["create_revision"]) == gen
        # Each piece is needed (another instance, which must reach etcd to learn anything): the
        # password, the client certificate, the CA.
        right = {k: v for k, v in a.lease.items() if k.startswith("etcd_")}
        for n, wrong in enumerate(({"etcd_password": "wrong-pw"}, {"etcd_cert": "", "etcd_key": ""},
                                   {"etcd_ca_cert": ""})):
            b = clone_guest(a, tmp_path / f"b{n}", **{**right, **wrong})
            r = b.ftagent("heartbeat", "--once")
            assert r.returncode == 69, (wrong, r.stderr)
            assert "wrong-pw" not in r.stderr
            if "etcd_password" in wrong:
                assert "authentication" in r.stderr
            if "etcd_ca_cert" in wrong:
                assert "certificate" in r.stderr.lower(), r.stderr
        b = clone_guest(a, tmp_path / "b", **right)
        r = b.ftagent("heartbeat", "--once", "--json")
        assert r.returncode == 3 and json.loads(r.stdout)["held_by"] == a.status()["holder_fingerprint"], r.stderr
        # The holder renews its lease (carried over from its earlier run), same generation.
        r = a.ftagent("heartbeat", "--once", "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["generation"] == gen, r.stderr
    finally:
        cluster.stop()
