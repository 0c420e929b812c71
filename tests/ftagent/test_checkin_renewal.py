"""What the periodic check-in adds to subscription-manager's job: the package profile when it
changed, and a renewed identity certificate installed as a failover successor's is (the same checks,
the same atomic install), with no moment where the files on disk do not pair."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ftagent.agent import Agent
from ftagent.config import load_config
from ftagent.errors import IdentityError
from ftagent.failover import IdentitySwapper
from ftagent.identity import IdentityStore
from tests.conftest import FtmockServer
from tests.dnfkit import PACKAGE, RpmRepo
from tests.kit.ca import CertAuthority
from tests.kit.ftmock import start_ftmock
from tests.kit.guest import FTAGENT, SRC, Guest, cli_guest
from tests.kit.orgs import new_org

# Debian's python3, which has the rpm bindings (the venvs do not): the profile is read with it.
SYSTEM_PYTHON = "/usr/bin/python3"


# -- the package profile --------------------------------------------------------------------------

def _rpm(root: Path, *args: str) -> None:
    subprocess.run(["rpm", "--root", str(root), *args], check=True, capture_output=True, text=True, timeout=60)


@pytest.fixture
def rpmdb(tmp_path: Path, rpm_repo: RpmRepo) -> Path:
    """A system root whose RPM database holds the test package (recorded only: --justdb)."""
    root = tmp_path / "sysroot"
    root.mkdir()
    _rpm(root, "--initdb")
    _rpm(root, "-i", "--justdb", "--nodeps", "--noscripts", "--notriggers", str(rpm_repo.rpm))
    return root


def read_profile(root: Path) -> list[dict[str, Any]] | None:
    """ftagent's reader run where the rpm bindings are (Debian's python3), on ``root``'s database."""
    code = ("import json, sys; from pathlib import Path; from ftagent.packages import rpm_profile; "
            "print(json.dumps(rpm_profile(Path(sys.argv[1]))))")
    out = subprocess.run([SYSTEM_PYTHON, "-c", code, str(root)], check=True, capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, PYTHONPATH=str(SRC)))
    value = json.loads(out.stdout)
    assert value is None or isinstance(value, list)
    return value


def test_the_profile_is_read_from_the_rpm_database(rpmdb: Path) -> None:
    profile = read_profile(rpmdb)
    assert profile == [{"name": PACKAGE, "version": "1.0", "release": "1", "arch": "noarch", "epoch": None,
                        "vendor": None}]


def test_checkin_sends_the_profile_when_it_changed(guest: Guest, rpmdb: Path) -> None:
    guest.register()
    agent = Agent(load_config(guest.conf), package_profile=lambda: read_profile(rpmdb))

    def stored() -> Any:
        r = guest.admin_api("GET", f"consumers/{guest.uuid()}/packages")
        assert r.status_code == 200, r.text
        return r.json()

    with agent:
        first = agent.checkin()
        assert first.profile_sent is True and first.requests == 3
        assert [p["name"] for p in stored()] == [PACKAGE]
        again = agent.checkin()
        assert again.profile_sent is False and again.requests == 2  # unchanged: not sent
        _rpm(rpmdb, "-e", "--justdb", "--nodeps", PACKAGE)
        changed = agent.checkin()
        assert changed.profile_sent is True and stored() == []


def test_without_the_rpm_bindings_no_profile_is_sent(guest: Guest, caplog: pytest.LogCaptureFixture) -> None:
    """The venvs have no rpm module: the check-in says so in a debug line and sends nothing."""
    guest.register()
    with caplog.at_level(logging.DEBUG, logger="ftagent.packages"):
        result = guest.ok("checkin")
    assert result["profile_sent"] is None and result["requests"] == 2
    assert any("no rpm Python bindings" in r.getMessage() for r in caplog.records)
    assert guest.admin_api("GET", f"consumers/{guest.uuid()}/packages").json() == []


# -- identity renewal -----------------------------------------------------------------------------

@pytest.fixture
def short_lived(tmp_path: Path) -> Iterator[FtmockServer]:
    """A server whose identity certificates last 30 days and are renewed in their last 10."""
    server = start_ftmock(tmp_path / "server", extra_args=["--identity-cert-days", "30", "--identity-renew-days", "10"])
    yield server
    server.stop()


def _renewing(server: FtmockServer, *extra: str) -> None:
    """Restart ``server`` so that every certificate it made is inside its renewal window."""
    server.stop()
    server.extra_args = [*extra, "--identity-cert-days", "60", "--identity-renew-days", "40"]
    server.start()


def test_checkin_installs_a_renewed_certificate_for_the_same_key(short_lived: FtmockServer, tmp_path: Path) -> None:
    guest = cli_guest(tmp_path / "guest", short_lived, new_org(short_lived))
    guest.register()
    key = (guest.id_dir / "key.pem").read_bytes()
    before = guest.ok("identity")
    # Inside 90 days of its end the check-in reads the consumer; outside the server's window nothing changes.
    quiet = guest.ok("checkin")
    assert quiet["identity_renewed"] is None and quiet["requests"] == 3
    assert guest.ok("identity")["serial"] == before["serial"]
    _renewing(short_lived)
    result = guest.ok("checkin")
    after = guest.ok("identity")
    assert result["identity_renewed"] == after["serial"] != before["serial"]
    assert after["uuid"] == before["uuid"] and after["not_after"] > before["not_after"]
    assert (guest.id_dir / "key.pem").read_bytes() == key and after["key_origin"] == before["key_origin"]
    IdentityStore(guest.id_dir).load(full=True)  # the pair on disk matches and is valid
    # The renewed certificate works (and from now on only it does); nothing more to renew.
    again = guest.ok("checkin")
    assert again["identity_renewed"] is None
    assert guest.ok("status")["consumerUuid"] == before["uuid"]


def test_stock_candlepin_renews_with_a_new_key_and_it_is_installed(tmp_path: Path) -> None:
    server = start_ftmock(tmp_path / "stock", extra_args=["--no-csr", "--identity-cert-days", "30",
                                                          "--identity-renew-days", "10"])
    try:
        guest = cli_guest(tmp_path / "guest", server, new_org(server))
        guest.register()
        key = (guest.id_dir / "key.pem").read_bytes()
        _renewing(server, "--no-csr")
        assert guest.ok("checkin")["identity_renewed"]
        assert (guest.id_dir / "key.pem").read_bytes() != key
        assert guest.ok("identity")["key_origin"] == "server"
        IdentityStore(guest.id_dir).load(full=True)
        assert guest.ok("checkin")["identity_renewed"] is None
    finally:
        server.stop()


def test_a_renewed_certificate_that_fails_the_checks_changes_nothing(tmp_path: Path) -> None:
    """The checks of a failover successor's certificate, with CN this consumer: another key, another
    consumer, another CA, an expired certificate are each refused, and the local pair stays."""
    ca, other_ca = CertAuthority(), CertAuthority()
    store = IdentityStore(tmp_path / "id")
    cert, key = ca.pair("consumer-1")
    store.save(cert, key)
    ca.write(tmp_path / "ca.pem")
    swapper = IdentitySwapper(store, None, ca_cert=tmp_path / "ca.pem", local_virt_uuid=lambda: None,
                              connection=lambda: pytest.fail("nothing may be installed"))  # type: ignore[arg-type, return-value]
    other_cert, _ = ca.pair("consumer-1")
    local_key = store.key_pem()
    cases = {
        "another key": (other_cert, "not for this system's key"),
        "another consumer": (ca.issue("consumer-2", _public(local_key)), "not this consumer consumer-1"),
        "another CA": (other_ca.issue("consumer-1", _public(local_key)), "not issued by the configured CA"),
        "expired": (ca.issue("consumer-1", _public(local_key), days=1,
                             start=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10)), "expired"),
    }
    for what, (pem, message) in cases.items():
        with pytest.raises(IdentityError) as refused:
            swapper.renew({"idCert": {"cert": pem.decode(), "serial": {"serial": 999}}})
        assert message in str(refused.value), what
        assert store.cert_pem() == cert and store.key_pem() == key
    # The certificate already in use is no renewal at all.
    assert swapper.renew({"idCert": {"cert": cert.decode(), "serial": {"serial": store.load().serial}}}) is None


def _public(key_pem: bytes) -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(key_pem, None).public_key()


def test_a_kill_during_the_renewal_leaves_a_pair_and_the_next_checkin_completes(short_lived: FtmockServer,
                                                                                 tmp_path: Path) -> None:
    """``ftagent checkin`` killed at random points of a renewal (as the failover swap's crash test
    does), one guest per run: each time the identity on disk is a whole valid pair, the old one or the
    renewed one, and the next check-in ends with the renewed certificate in use (the server takes the
    old one until then)."""
    runs = int(os.environ.get("FTAGENT_RENEW_CRASH_RUNS", "6"))
    org = new_org(short_lived)
    guests = [cli_guest(tmp_path / f"guest{i}", short_lived, org) for i in range(runs)]
    firsts = []
    for guest in guests:
        guest.register()
        firsts.append(guest.ok("identity"))
    _renewing(short_lived)
    rng = random.Random(int(os.environ.get("FTAGENT_CRASH_SEED", "26")))
    seen = set()
    for guest, first in zip(guests, firsts):
        env = dict(os.environ, FTAGENT_CONFIG=str(guest.conf))
        proc = subprocess.Popen([FTAGENT, "checkin"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.1, 0.7))  # a real duration: where in the check-in the kill lands
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ident = IdentityStore(guest.id_dir).load(full=True)  # the old pair or the new one, never a mix
        assert ident.uuid == first["uuid"]
        seen.add("old" if ident.serial == first["serial"] else "new")
        done = subprocess.run([FTAGENT, "checkin", "--json"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        current = IdentityStore(guest.id_dir).load(full=True)
        server_side = guest.admin_api("GET", f"consumers/{first['uuid']}").json()["idCert"]["serial"]["serial"]
        assert current.serial == server_side != first["serial"]
        assert json.loads(done.stdout)["uuid"] == first["uuid"]
    assert seen
    print(f"renewal crash runs={runs} states seen={sorted(seen)}", file=sys.stderr)
