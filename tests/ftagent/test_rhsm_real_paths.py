"""``[agent] layout = rhsm`` at the real paths: ``/etc/pki/consumer``, ``/etc/pki/entitlement``,
``/etc/yum.repos.d/redhat.repo``, ``/etc/rhsm/rhsm.conf`` and ``/run/rhsm/cert.pid``, each a tmpfs of
a private mount namespace (:mod:`tests.kit.mountns`), with no ``FTAGENT_ROOT`` and no path of those
in ftagent.conf: the only things pointed at the test are ftagent.conf itself (its facts, state, lock
and lease status in the test's directory) and rhsm.conf's server, CA and content URL (the test's
ftmock, outside the namespace on loopback, over mutual TLS).

What the other programs of the host see there is asked of them, at their default paths, inside the
namespace: python-rhsm 1.19.2 (``rhsm.config.initConfig()``, ``rhsm.certificate``, a
``UEPConnection`` built from rhsm.conf alone; :mod:`tests.kit.rhsmprobe`), and Debian's dnf reading
``/etc/yum.repos.d``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import FtmockServer
from tests.dnfkit import CONTENT_LABEL, PACKAGE, add_test_product, cdn_url, dnf_lists
from tests.ftmock.conftest import checkin
from tests.ftmock.test_failover import REPORT1, REPORT2, VM1
from tests.kit import rhsmprobe
from tests.kit.mountns import MountNamespace, rhel_namespace
from tests.kit.orgs import new_org
from tests.kit.rhsmhost import CA_NAME, write_rhsm_conf
from tests.kit.wait import wait_until

FTAGENT = str(Path(sys.executable).parent / "ftagent")
PROBE = rhsmprobe.__file__
# Where subscription-manager writes; ftagent may leave nothing else there.
WRITTEN = ("/etc/pki", "/etc/yum.repos.d", "/run/rhsm")
REPO = "/etc/yum.repos.d/redhat.repo"


@dataclass
class RealHost:
    """A guest with VM1's virt.uuid whose rhsm.conf points at ``server``, ftagent in the rhsm layout."""

    ns: MountNamespace
    server: FtmockServer
    org: str
    conf: Path

    @property
    def env(self) -> dict[str, str]:
        return dict(self.ns.environment(), FTAGENT_CONFIG=str(self.conf))

    def ftagent(self, *args: str) -> Any:
        """``ftagent ARGS --json`` in the namespace, which must succeed; its answer."""
        proc = self.ns.run([FTAGENT, *args, "--json"], env=self.env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def register(self) -> Any:
        user, password = self.server.admin_auth
        return self.ftagent("register", "--org", self.org, "--username", user, "--password", password)

    def rhsm_sees(self) -> dict[str, Any]:
        """What python-rhsm reads at its default paths in the namespace."""
        proc = self.ns.run([sys.executable, PROBE, "sees"], env=self.env)
        assert proc.returncode == 0, proc.stderr
        seen: dict[str, Any] = json.loads(proc.stdout)
        assert seen["config"] == "/etc/rhsm/rhsm.conf"
        assert seen["server"] == ["127.0.0.1", str(self.server.port), "/candlepin"]
        assert (seen["consumer_dir"], seen["entitlement_dir"]) == ("/etc/pki/consumer", "/etc/pki/entitlement")
        return seen

    def files(self) -> dict[str, str]:
        return self.ns.files(*WRITTEN)

    def serials(self) -> list[int]:
        return sorted(int(Path(p).name[:-4]) for p in self.files()
                      if p.startswith("/etc/pki/entitlement/") and Path(p).name[:-4].isdigit())

    def repo(self) -> str:
        return (self.ns.root / REPO.lstrip("/")).read_text()

    def consumers(self) -> set[str]:
        r = requests.get(f"{self.server.url}/owners/{self.org}/consumers", auth=self.server.admin_auth,
                         verify=str(self.server.ca_path), timeout=30)
        assert r.status_code == 200, r.text
        return {c["uuid"] for c in r.json()}


def expected(serials: list[int], repo: bool = True) -> dict[str, str]:
    """The files subscription-manager leaves for a registration holding these certificates."""
    out = {"/etc/pki/consumer/cert.pem": "0o640", "/etc/pki/consumer/key.pem": "0o640"}
    for serial in serials:
        out[f"/etc/pki/entitlement/{serial}.pem"] = "0o644"
        out[f"/etc/pki/entitlement/{serial}-key.pem"] = "0o600"
    if repo:
        out[REPO] = "0o644"
    return out


def assert_seen(host: RealHost, uuid: str, serials: list[int]) -> None:
    """python-rhsm sees the consumer ``uuid`` (and the server knows it by that pair) and the certificates."""
    seen = host.rhsm_sees()
    consumer = seen["consumer"]
    assert consumer is not None and (consumer["uuid"], consumer["server_uuid"]) == (uuid, uuid)
    assert consumer["key_ok"] and consumer["org"] == host.org
    ents = seen["entitlements"]
    assert [e["serial"] for e in ents] == serials
    assert all(e["key_ok"] and e["content"] == [CONTENT_LABEL] for e in ents), ents


@pytest.fixture
def real_host(tmp_path: Path, cdn_server: FtmockServer, closing: Callable[[Any], Any]) -> RealHost:
    seed = tmp_path / "seed"
    write_rhsm_conf(seed, cdn_server, baseurl=cdn_url(cdn_server))
    guest = tmp_path / "guest"
    (guest / "facts.d").mkdir(parents=True)
    (guest / "facts.d" / "guest.facts").write_text(json.dumps(
        {"virt.uuid": VM1, "virt.is_guest": "true", "network.hostname": "vm1.example.com"}))
    conf = guest / "ftagent.conf"
    # Only ftagent's own files are in the test's directory; subscription-manager's come from rhsm.conf.
    conf.write_text("[agent]\nlayout = rhsm\nfacts_dir = facts.d\nproduct_dir = products.d\nstate_dir = state\n"
                    "lock_file = ftagent.lock\n[lease]\nstatus_file = state/lease.json\n")
    org = new_org(cdn_server)
    add_test_product(cdn_server, org)
    ns = closing(rhel_namespace(seed, tmp_path))
    return RealHost(ns, cdn_server, org, conf)


def test_register_refresh_unregister_at_the_real_paths(real_host: RealHost) -> None:
    host = real_host
    checkin(host.server, host.org, REPORT1)
    reg = host.register()
    uuid = reg["uuid"]
    [serial] = reg["entitlement_serials"]
    assert host.files() == expected([serial])
    assert_seen(host, uuid, [serial])
    repo = host.repo()
    assert f"[{CONTENT_LABEL}]" in repo
    assert f"sslclientcert = /etc/pki/entitlement/{serial}.pem" in repo
    assert f"sslclientkey = /etc/pki/entitlement/{serial}-key.pem" in repo
    assert f"sslcacert = /etc/rhsm/ca/{CA_NAME}" in repo  # rhsm.conf's %(ca_cert_dir)s, unprefixed
    assert f"baseurl = {cdn_url(host.server)}/content/dist/ftagent-test/" in repo
    # ftagent's own record is in its state directory; subscription-manager's directories hold only its files.
    assert (host.conf.parent / "state" / "identity.json").is_file()
    assert host.ns.files("/etc/rhsm") == {"/etc/rhsm/rhsm.conf": "0o644", f"/etc/rhsm/ca/{CA_NAME}": "0o644"}
    key = (host.ns.root / "etc/pki/consumer/key.pem").read_bytes()
    assert host.ftagent("identity")["uuid"] == uuid
    # ftagent config --list names the real files each value came from.
    values = {(v["section"], v["key"]): v for v in host.ftagent("config", "--list")["values"]}
    assert values[("server", "url")]["value"] == f"https://127.0.0.1:{host.server.port}/candlepin"
    assert values[("server", "url")]["source"] == "/etc/rhsm/rhsm.conf [server] hostname, port, prefix"
    assert (values[("server", "ca_cert")]["value"], values[("agent", "identity_dir")]["value"],
            values[("agent", "entitlement_dir")]["value"], values[("content", "repo_file")]["value"],
            values[("agent", "rhsm_lock")]["value"]) == (
        "/etc/rhsm/ca", "/etc/pki/consumer", "/etc/pki/entitlement", REPO, "/run/rhsm/cert.pid")

    host.ftagent("refresh")
    assert host.files() == expected([serial])
    assert (host.ns.root / "etc/pki/consumer/key.pem").read_bytes() == key
    assert_seen(host, uuid, [serial])

    # Unregistering leaves what subscription-manager's unregister leaves: the directories, empty.
    host.ftagent("unregister")
    assert host.files() == {}
    for directory in ("etc/pki/consumer", "etc/pki/entitlement"):
        assert (host.ns.root / directory).is_dir()
    assert host.rhsm_sees()["consumer"] is None
    assert not (host.conf.parent / "state" / "identity.json").exists()
    assert uuid not in host.consumers()  # deleted on the server, as subscription-manager's unregister does


def test_dnf_reads_redhat_repo_before_and_after_a_failover_swap(real_host: RealHost, tmp_path: Path) -> None:
    host = real_host
    checkin(host.server, host.org, REPORT1)
    reg = host.register()
    first = reg["uuid"]
    [serial] = reg["entitlement_serials"]
    reposdir = Path("/etc/yum.repos.d")  # dnf's own default, in the namespace
    listed = dnf_lists(tmp_path / "dnf1", reposdir, inside=host.ns.command([]))
    assert listed.returncode == 0, listed.stderr
    assert PACKAGE in listed.stdout and CONTENT_LABEL in listed.stdout
    key = (host.ns.root / "etc/pki/consumer/key.pem").read_bytes()
    # The heartbeat (its own light transport) trusts rhsm.conf's CA directory as the commands do.
    beat = host.ftagent("heartbeat", "--once")
    assert (beat["state"], beat["consumer"]) == ("HELD", first), beat

    # The failover: the successor's certificate (same key) replaces cert.pem, the content access
    # certificate is the successor's, and redhat.repo names it.
    checkin(host.server, host.org, REPORT2)
    result = host.ftagent("checkin")
    assert result["failed_over_from"] == first
    second = result["uuid"]
    assert second != first
    [serial2] = host.serials()
    assert serial2 != serial
    assert host.files() == expected([serial2])
    assert (host.ns.root / "etc/pki/consumer/key.pem").read_bytes() == key
    assert_seen(host, second, [serial2])
    assert f"sslclientcert = /etc/pki/entitlement/{serial2}.pem" in host.repo()
    beat = host.ftagent("heartbeat", "--once")
    assert (beat["state"], beat["consumer"]) == ("HELD", second), beat
    listed = dnf_lists(tmp_path / "dnf2", reposdir, inside=host.ns.command([]))
    assert listed.returncode == 0, listed.stderr
    assert PACKAGE in listed.stdout


def test_ftagent_waits_for_subscription_managers_lock_in_run_rhsm(real_host: RealHost, tmp_path: Path) -> None:
    host = real_host
    reg = host.register()
    assert host.ns.run(["rm", REPO]).returncode == 0  # removed by hand: the next refresh writes it again
    lock = host.ns.root / "run/rhsm/cert.pid"
    assert not lock.exists(), "ftagent removes the lock file when it lets go, as subscription-manager does"
    holder = host.ns.popen(["sleep", "120"])  # a live process named in the file holds the lock
    log = tmp_path / "refresh.log"
    try:
        lock.write_text(str(holder.pid))
        with open(log, "w") as err:
            proc = host.ns.popen([FTAGENT, "-v", "refresh"], env=host.env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_until(lambda: "waiting for subscription-manager's lock /run/rhsm/cert.pid, held by process "
                       f"{holder.pid}" in log.read_text(), 30, "ftagent saying it waits for /run/rhsm/cert.pid")
            assert proc.poll() is None and not (host.ns.root / REPO.lstrip("/")).exists()
            assert host.ns.run(["rm", "/run/rhsm/cert.pid"]).returncode == 0  # subscription-manager's release
            assert proc.wait(timeout=60) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        holder.kill()
        holder.wait()
    assert not lock.exists()
    assert host.files() == expected(reg["entitlement_serials"])


def test_register_adopt_takes_a_python_rhsm_registration_at_the_real_paths(real_host: RealHost) -> None:
    """python-rhsm registers the host as subscription-manager does, from rhsm.conf alone, into
    /etc/pki/consumer; ftagent adopts that consumer, creates none, and follows its failover."""
    host = real_host
    checkin(host.server, host.org, REPORT1)
    user, password = host.server.admin_auth
    facts = json.dumps({"virt.uuid": VM1, "virt.is_guest": "true"})
    proc = host.ns.run([sys.executable, PROBE, "register", host.org, user, password, facts], env=host.env)
    assert proc.returncode == 0, proc.stderr
    uuid = json.loads(proc.stdout)["uuid"]
    assert host.files() == {"/etc/pki/consumer/cert.pem": "0o640", "/etc/pki/consumer/key.pem": "0o640"}
    before = host.consumers()

    adopted = host.ftagent("register", "--adopt")
    assert adopted["uuid"] == uuid and adopted["key_origin"] == "adopted"
    assert host.files() == expected(adopted["entitlement_serials"])
    assert_seen(host, uuid, adopted["entitlement_serials"])
    assert host.consumers() == before  # no new consumer

    checkin(host.server, host.org, REPORT2)
    result = host.ftagent("checkin")
    assert result["failed_over_from"] == uuid
    assert_seen(host, result["uuid"], host.serials())
