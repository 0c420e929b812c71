"""``[agent] layout = rhsm``: ftagent beside subscription-manager, in its files, under its lock.

A RHEL system under a test root (``FTAGENT_ROOT``): ``etc/rhsm/rhsm.conf`` pointing at ftmock, and an
ftagent.conf that says ``layout = rhsm`` and nothing about the server. python-rhsm 1.19.2's own
readers check what ftagent leaves there at every step: ``rhsm.config.initConfig()`` on the same
rhsm.conf, ``rhsm.certificate`` on the consumer and entitlement certificates, the identity read from
the consumer directory the way subscription-manager's ``ConsumerIdentity`` reads it, and a
``UEPConnection`` authenticated with those files. The same at the real paths, in a private mount
namespace: ``test_rhsm_real_paths.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rhsm.certificate as rcert
import rhsm.config as rconfig
import rhsm.connection as rc

from tests.conftest import FtmockServer
from tests.ftagent.test_repos import BASEOS, add_content
from tests.ftmock.conftest import checkin
from tests.ftmock.test_failover import REPORT1, REPORT2, VM1
from tests.kit.orgs import new_org
from tests.kit.rhsmhost import python_rhsm, write_rhsm_conf
from tests.kit.wait import hold_for, wait_until

FTAGENT = str(Path(sys.executable).parent / "ftagent")
# The directories subscription-manager writes; ftagent may leave nothing else in them.
SHARED = ("etc/pki/consumer", "etc/pki/entitlement", "etc/yum.repos.d", "run/rhsm")


@dataclass
class Host:
    root: Path
    server: FtmockServer
    org: str

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "FTAGENT_CONFIG"}
        return dict(env, FTAGENT_ROOT=str(self.root))

    def ftagent(self, *args: str, check: bool = True) -> Any:
        """Run the ftagent command on this host with --json; its answer."""
        proc = subprocess.run([FTAGENT, *args, "--json"], env=self.env, capture_output=True, text=True, timeout=120)
        if check:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def files(self) -> dict[str, str]:
        """Every file in subscription-manager's directories: relative path -> mode."""
        out = {}
        for top in SHARED:
            for path in sorted((self.root / top).rglob("*")):
                if path.is_file() or path.is_symlink():
                    out[str(path.relative_to(self.root))] = oct(path.lstat().st_mode & 0o7777)
        return out

    def expected(self, uuid_serials: list[int], repo: bool = True) -> dict[str, str]:
        """The files subscription-manager leaves for a registration holding these certificates."""
        out = {"etc/pki/consumer/cert.pem": "0o640", "etc/pki/consumer/key.pem": "0o640"}
        for serial in uuid_serials:
            out[f"etc/pki/entitlement/{serial}.pem"] = "0o644"
            out[f"etc/pki/entitlement/{serial}-key.pem"] = "0o600"
        if repo:
            out["etc/yum.repos.d/redhat.repo"] = "0o644"
        return out


@pytest.fixture
def host(tmp_path: Path, ftmock: FtmockServer) -> Iterator[Host]:
    """A guest with VM1's virt.uuid under a test root, rhsm.conf for ftmock, ftagent in the rhsm layout."""
    root = tmp_path / "root"
    write_rhsm_conf(root, ftmock)
    etc = root / "etc" / "ftagent"
    (etc / "facts.d").mkdir(parents=True)
    (etc / "facts.d" / "guest.facts").write_text(json.dumps(
        {"virt.uuid": VM1, "virt.is_guest": "true", "network.hostname": "vm1.example.com"}))
    (etc / "ftagent.conf").write_text("[agent]\nlayout = rhsm\nfacts_dir = facts.d\nproduct_dir = products.d\n")
    (root / "etc" / "yum.repos.d").mkdir(parents=True)
    org = new_org(ftmock)
    add_content(ftmock, org, "69", {"el9-baseos": BASEOS})
    yield Host(root, ftmock, org)


def python_rhsm_sees(host: Host, uuid: str) -> list[Any]:
    """What python-rhsm reads on the host: the consumer ``uuid``, a usable pair; the entitlement
    certificates (returned)."""
    cfg = rconfig.initConfig(str(host.root / "etc/rhsm/rhsm.conf"))
    assert (cfg.get("server", "hostname"), cfg.get("server", "port")) == ("127.0.0.1", str(host.server.port))
    consumer_dir = host.root / cfg.get("rhsm", "consumerCertDir").lstrip("/")
    # subscription-manager's ConsumerIdentity: key.pem and cert.pem of consumerCertDir, the UUID the CN.
    key_pem = (consumer_dir / "key.pem").read_text()
    cert = rcert.create_from_pem((consumer_dir / "cert.pem").read_text())
    assert cert.subject["CN"] == uuid
    assert rcert.create_from_file(str(consumer_dir / "cert.pem")).serial == cert.serial
    assert not rcert.Key(key_pem).bogus()
    with python_rhsm(host.server, host.root / cfg.get("rhsm", "ca_cert_dir").lstrip("/")) as common:
        conn = rc.UEPConnection(cert_file=str(consumer_dir / "cert.pem"), key_file=str(consumer_dir / "key.pem"),
                                **common)
        assert conn.getConsumer(uuid)["uuid"] == uuid
    ent_dir = host.root / cfg.get("rhsm", "entitlementCertDir").lstrip("/")
    return [rcert.create_from_file(str(p)) for p in sorted(ent_dir.glob("*.pem")) if not p.name.endswith("-key.pem")]


def test_register_refresh_failover_unregister_leave_subscription_managers_files(host: Host) -> None:
    checkin(host.server, host.org, REPORT1)
    reg = host.ftagent("register", "--org", host.org, "--username", host.server.admin_auth[0], "--password",
                       host.server.admin_auth[1])
    first = reg["uuid"]
    [serial] = reg["entitlement_serials"]
    assert host.files() == host.expected([serial])
    [ent] = python_rhsm_sees(host, first)
    assert [c.label for c in ent.content] == ["el9-baseos"]
    repo = (host.root / "etc/yum.repos.d/redhat.repo").read_text()
    assert f"sslclientcert = {host.root}/etc/pki/entitlement/{serial}.pem" in repo
    assert f"sslcacert = {host.root}/etc/rhsm/ca/ftmock-ca.pem" in repo  # rhsm.conf's %(ca_cert_dir)s...
    assert "baseurl = https://cdn.example.com/content/dist/el9" in repo  # rhsm.conf's baseurl
    # ftagent's own record is in its state directory, not beside the identity; so are its caches.
    assert (host.root / "var/lib/ftagent/identity.json").is_file()
    assert (host.root / "var/lib/ftagent/content-sets.json").is_file()
    key_before = (host.root / "etc/pki/consumer/key.pem").read_bytes()

    host.ftagent("refresh")
    assert host.files() == host.expected([serial])

    # The failover: the successor's certificate for the same key replaces cert.pem alone.
    checkin(host.server, host.org, REPORT2)
    result = host.ftagent("checkin")
    assert result["failed_over_from"] == first
    second = result["uuid"]
    assert second != first
    [serial2] = sorted(int(p.name[:-4]) for p in (host.root / "etc/pki/entitlement").glob("*.pem")
                       if p.name[:-4].isdigit())
    assert serial2 != serial
    assert host.files() == host.expected([serial2])
    assert (host.root / "etc/pki/consumer/key.pem").read_bytes() == key_before
    [ent2] = python_rhsm_sees(host, second)
    assert [c.label for c in ent2.content] == ["el9-baseos"]
    assert f"{serial2}.pem" in (host.root / "etc/yum.repos.d/redhat.repo").read_text()
    ident = host.ftagent("identity")
    assert ident["uuid"] == second and ident["failed_over_from"] == first

    # Unregistering leaves what subscription-manager's unregister leaves: the directories, empty.
    host.ftagent("unregister")
    assert host.files() == {}
    assert (host.root / "etc/pki/consumer").is_dir() and (host.root / "etc/pki/entitlement").is_dir()
    assert not (host.root / "var/lib/ftagent/identity.json").exists()
    assert not (host.root / "var/lib/ftagent/content-sets.json").exists()


def test_config_list_names_rhsm_conf_for_what_ftagent_conf_leaves_unset(host: Host) -> None:
    conf = host.root / "etc/ftagent/ftagent.conf"
    conf.write_text(conf.read_text() + "[content]\nmanage_repos = yes\n")
    rhsm_conf = host.root / "etc/rhsm/rhsm.conf"
    values = {(v["section"], v["key"]): v for v in host.ftagent("config", "--list")["values"]}
    assert values[("server", "url")]["value"] == f"https://127.0.0.1:{host.server.port}/candlepin"
    assert values[("server", "url")]["source"] == f"{rhsm_conf} [server] hostname, port, prefix"
    assert values[("server", "ca_cert")]["value"] == str(host.root / "etc/rhsm/ca")
    assert values[("agent", "identity_dir")] == {
        "section": "agent", "key": "identity_dir", "value": str(host.root / "etc/pki/consumer"),
        "source": f"{rhsm_conf} [rhsm] consumercertdir"}
    assert values[("content", "repo_ca_cert")]["value"] == str(host.root / "etc/rhsm/ca/ftmock-ca.pem")
    assert values[("content", "manage_repos")]["source"] == str(conf)  # ftagent.conf's own value wins
    assert values[("content", "full_refresh_on_yum")]["source"] == "rhsm.conf default [rhsm] full_refresh_on_yum"
    assert values[("agent", "layout")] == {"section": "agent", "key": "layout", "value": "rhsm", "source": str(conf)}
    assert values[("agent", "state_dir")]["value"] == str(host.root / "var/lib/ftagent")
    assert values[("agent", "state_dir")]["source"] == "default"


def test_ftagent_waits_while_subscription_manager_holds_its_lock(host: Host, tmp_path: Path) -> None:
    reg = host.ftagent("register", "--org", host.org, "--username", host.server.admin_auth[0], "--password",
                       host.server.admin_auth[1])
    repo = host.root / "etc/yum.repos.d/redhat.repo"
    text = repo.read_text()
    repo.unlink()  # removed by hand: the next refresh writes it again, once it may
    lock = host.root / "run/rhsm/cert.pid"
    holder = subprocess.Popen(["sleep", "120"])  # a live process named in the file holds the lock
    log = tmp_path / "refresh.log"
    try:
        lock.write_text(str(holder.pid))
        with open(log, "w") as err:
            proc = subprocess.Popen([FTAGENT, "-v", "refresh"], env=host.env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_until(lambda: "waiting for subscription-manager's lock" in log.read_text(), 30,
                       "ftagent saying it waits for the lock")
            assert f"held by process {holder.pid}" in log.read_text()
            for _ in hold_for(2):  # a real duration is what is tested: it keeps waiting, writing nothing
                assert proc.poll() is None and not repo.exists()
            lock.unlink()  # subscription-manager's release removes the file
            assert proc.wait(timeout=60) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        holder.kill()
        holder.wait()
    assert repo.read_text() == text
    assert not lock.exists(), "ftagent removes the lock file when it lets go, as subscription-manager does"
    assert host.files() == host.expected(reg["entitlement_serials"])
    # A holder that is gone does not hold the lock: ftagent takes it over at once.
    lock.write_text(str(holder.pid))
    host.ftagent("refresh")
    assert not lock.exists()


def test_register_adopt_takes_over_a_python_rhsm_registration(host: Host) -> None:
    """subscription-manager (python-rhsm 1.19.2 here) registered the system; ftagent adopts that
    consumer, creates none, and follows its failover."""
    checkin(host.server, host.org, REPORT1)
    consumer_dir = host.root / "etc/pki/consumer"
    with python_rhsm(host.server, host.root / "etc/rhsm/ca") as common:
        admin = rc.UEPConnection(username=host.server.admin_auth[0], password=host.server.admin_auth[1], **common)
        consumer = admin.registerConsumer(name="vm1.example.com", type="system", owner=host.org,
                                          facts={"virt.uuid": VM1, "virt.is_guest": "true"})
        consumer_dir.mkdir(parents=True)
        for name, text in (("key.pem", consumer["idCert"]["key"]), ("cert.pem", consumer["idCert"]["cert"])):
            (consumer_dir / name).write_text(text)
            (consumer_dir / name).chmod(0o640)  # as subscription-manager writes them
        before = {c["uuid"] for c in admin.getConsumers(owner=host.org)}
    adopted = host.ftagent("register", "--adopt")
    assert adopted["uuid"] == consumer["uuid"] and adopted["key_origin"] == "adopted"
    assert host.files() == host.expected(adopted["entitlement_serials"])
    python_rhsm_sees(host, consumer["uuid"])
    with python_rhsm(host.server, host.root / "etc/rhsm/ca") as common:
        admin = rc.UEPConnection(username=host.server.admin_auth[0], password=host.server.admin_auth[1], **common)
        assert {c["uuid"] for c in admin.getConsumers(owner=host.org)} == before  # no new consumer
        assert admin.getConsumer(consumer["uuid"])["facts"]["virt.uuid"] == VM1
    # From now on ftagent follows the consumer's failover.
    checkin(host.server, host.org, REPORT2)
    result = host.ftagent("checkin")
    assert result["failed_over_from"] == consumer["uuid"]
    python_rhsm_sees(host, result["uuid"])
    # Adopting again is a usage error only without --force; with it, the same consumer is kept.
    assert host.ftagent("register", "--adopt")["uuid"] == result["uuid"]


def test_a_crash_between_the_two_files_is_finished_at_the_next_load(tmp_path: Path) -> None:
    """Two files cannot change in one rename: a crash after the new key and before the new
    certificate leaves a mismatched pair, and the pending copy in ftagent's state directory, from
    which the next load finishes the installation (under the lock) before reading."""
    from ftagent.rhsmidentity import PENDING, RhsmIdentityStore
    from ftagent.rhsmlock import rhsm_lock
    from tests.kit.ca import CertAuthority

    ca = CertAuthority()
    store = RhsmIdentityStore(tmp_path / "consumer", tmp_path / "state", rhsm_lock(tmp_path / "cert.pid"))
    old_cert, old_key = ca.pair("11111111-1111-4111-8111-111111111111")
    new_cert, new_key = ca.pair("22222222-2222-4222-8222-222222222222")
    store.save(old_cert, old_key)
    assert store.load().uuid.startswith("1111")
    pending = tmp_path / "state" / PENDING
    pending.mkdir()
    meta = json.loads((tmp_path / "state" / "identity.json").read_text())
    (pending / "meta.json").write_text(json.dumps(dict(meta, uuid="22222222-2222-4222-8222-222222222222")))
    (pending / "cert.pem").write_bytes(new_cert)
    (pending / "key.pem").write_bytes(new_key)
    (tmp_path / "consumer" / "key.pem").write_bytes(new_key)  # the crash: the key replaced, not the certificate
    assert store.load(full=True).uuid == "22222222-2222-4222-8222-222222222222"
    assert (tmp_path / "consumer" / "cert.pem").read_bytes() == new_cert
    assert sorted(p.name for p in (tmp_path / "consumer").iterdir()) == ["cert.pem", "key.pem"]
    assert not pending.exists() and not (tmp_path / "cert.pid").exists()
