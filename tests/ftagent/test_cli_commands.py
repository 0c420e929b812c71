"""The commands a subscription-manager user reaches for: clean, remove, attach --quantity,
list --installed, register --consumerid/--serverurl/--insecure, config --list, version."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_PASSWORD, FtmockServer
from tests.kit.guest import FTAGENT, Guest, cli_guest
from tests.kit.orgs import make_pool


def ftagent(guest: Guest, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "FTAGENT_CONFIG": str(guest.conf), "FTAGENT_PASSWORD": ADMIN_PASSWORD, **(env or {})}
    return subprocess.run([FTAGENT, *args], capture_output=True, text=True, env=environ, timeout=60)


def ok(guest: Guest, *args: str) -> Any:
    res = ftagent(guest, *args, "--json")
    assert res.returncode == 0, f"{args}: {res.returncode} {res.stderr}"
    return json.loads(res.stdout)


def cert_serials(guest: Guest) -> set[int]:
    return {int(p.name[:-4]) for p in guest.ent_dir.glob("*.pem") if not p.name.endswith("-key.pem")}


def test_clean_removes_local_state_without_the_server(guest: Guest) -> None:
    pool = make_pool(guest.server, guest.org)
    uuid = guest.register()["uuid"]
    guest.ok("attach", "--pool", pool)
    assert cert_serials(guest)
    # The server is unreachable for clean: it must not need it.
    text = guest.conf.read_text().replace(guest.server.url, "https://127.0.0.1:9/candlepin")
    guest.conf.write_text(text)
    res = ftagent(guest, "clean")
    assert res.returncode == 0, res.stderr
    assert "All local data removed" in res.stdout and uuid in res.stdout
    assert cert_serials(guest) == set()
    res = ftagent(guest, "identity")
    assert res.returncode == 1 and "not registered" in res.stderr
    # The consumer still exists on the server.
    assert guest.admin_api("GET", f"consumers/{uuid}").status_code == 200
    res = ftagent(guest, "clean")
    assert res.returncode == 0 and "Nothing to remove" in res.stdout


@pytest.mark.content_access("entitlement")  # entitlement certificates by serial and pool
def test_remove_by_serial_pool_and_all(guest: Guest) -> None:
    pools = [make_pool(guest.server, guest.org, "100"), make_pool(guest.server, guest.org, "100"),
             make_pool(guest.server, guest.org, "100")]
    guest.register()
    for pool in pools:
        guest.ok("attach", "--pool", pool)
    consumed = ok(guest, "list", "--consumed")
    serial_of = {e["pool"]["id"]: e["serial"] for e in consumed}  # read from the certificates
    assert cert_serials(guest) == set(serial_of.values())

    out = ok(guest, "remove", "--serial", str(serial_of[pools[0]]))
    assert len(out["removed"]) == 1 and serial_of[pools[0]] not in cert_serials(guest)
    out = ok(guest, "remove", "--pool", pools[1])
    assert len(out["removed"]) == 1 and cert_serials(guest) == {serial_of[pools[2]]}
    # Unknown serial or pool: a usage error naming it, nothing removed.
    res = ftagent(guest, "remove", "--serial", "999999")
    assert res.returncode == 64 and "999999" in res.stderr
    res = ftagent(guest, "remove", "--pool", pools[0])
    assert res.returncode == 64 and pools[0] in res.stderr
    assert cert_serials(guest) == {serial_of[pools[2]]}
    out = ok(guest, "remove", "--all")
    assert len(out["removed"]) == 1 and out["serials"] == [] and cert_serials(guest) == set()
    assert ftagent(guest, "remove").returncode == 64
    assert ftagent(guest, "remove", "--all", "--pool", pools[0]).returncode == 64


@pytest.mark.content_access("entitlement")  # attach by pool, then subscribed
def test_attach_quantity_and_list_installed(guest: Guest) -> None:
    pool = make_pool(guest.server, guest.org, "100", 10)
    guest.register()
    installed = ok(guest, "list", "--installed")
    assert installed == [{"productId": "100", "productName": "OS", "status": "not subscribed"}]
    out = ok(guest, "attach", "--pool", pool, "--quantity", "3")
    assert out[0]["quantity"] == 3
    assert guest.admin_api("GET", f"pools/{pool}").json()["consumed"] == 3
    res = ftagent(guest, "list", "--installed")
    assert res.returncode == 0 and "100  OS  subscribed" in res.stdout
    assert ftagent(guest, "attach", "--auto", "--quantity", "2").returncode == 64
    assert ftagent(guest, "attach", "--pool", pool, "--quantity", "0").returncode == 64


def test_list_installed_works_unregistered(guest: Guest) -> None:
    res = ftagent(guest, "list", "--installed")
    assert res.returncode == 0 and "100  OS  unknown" in res.stdout


def test_register_consumerid_reattaches_the_same_consumer(guest: Guest) -> None:
    pool = make_pool(guest.server, guest.org)
    uuid = guest.register()["uuid"]
    guest.ok("attach", "--pool", pool)
    old_key = (guest.id_dir / "key.pem").read_bytes() if (guest.id_dir / "key.pem").exists() else None
    assert ftagent(guest, "clean").returncode == 0
    res = ftagent(guest, "register", "--consumerid", uuid, "--username", "admin", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["uuid"] == uuid and len(data["entitlement_serials"]) == 1
    assert ok(guest, "identity")["uuid"] == uuid
    if old_key is not None:
        assert (guest.id_dir / "key.pem").read_bytes() != old_key  # a new local key
    assert ftagent(guest, "checkin").returncode == 0
    # Unknown consumer: not found, a usage error, not "server unavailable".
    assert ftagent(guest, "clean").returncode == 0
    res = ftagent(guest, "register", "--consumerid", "no-such-consumer", "--username", "admin")
    assert res.returncode == 64 and "no-such-consumer" in res.stderr
    assert ftagent(guest, "register", "--consumerid", uuid, "--activationkey", "k").returncode == 64


def test_register_serverurl_and_insecure_are_saved(tmp_path: Path, ftmock_session: FtmockServer, org: str) -> None:
    guest = cli_guest(tmp_path / "g", ftmock_session, org)
    text = guest.conf.read_text()
    guest.conf.write_text("# keep this comment\n" + text.replace(f"url = {ftmock_session.url}\n", "")
                          .replace(f"ca_cert = {ftmock_session.ca_path}\n", ""))
    assert ftagent(guest, "register", "--org", org, "--username", "admin").returncode == 78  # no URL yet
    res = ftagent(guest, "register", "--org", org, "--username", "admin", "--serverurl", "http://x/")
    assert res.returncode == 64 and "https://" in res.stderr
    res = ftagent(guest, "register", "--org", org, "--username", "admin", "--serverurl", ftmock_session.url,
                  "--insecure")
    assert res.returncode == 0, res.stderr
    saved = guest.conf.read_text()
    assert saved.startswith("# keep this comment\n")
    assert f"url = {ftmock_session.url}" in saved and "insecure = yes" in saved
    # Later commands use the saved server.
    assert ftagent(guest, "checkin").returncode == 0
    listing = ok(guest, "config", "--list")
    by_key = {(v["section"], v["key"]): v for v in listing["values"]}
    assert by_key[("server", "url")]["value"] == ftmock_session.url
    assert by_key[("server", "insecure")] == {"section": "server", "key": "insecure", "value": "True",
                                               "source": str(guest.conf)}


def test_config_list_shows_values_and_sources(guest: Guest) -> None:
    with guest.conf.open("a") as fh:
        fh.write("[lease]\nttl = 40\n")
    res = ftagent(guest, "config", "--list")
    assert res.returncode == 0, res.stderr
    assert f"configuration file: {guest.conf}" in res.stdout
    assert f"   url = {guest.server.url}  ({guest.conf})" in res.stdout
    assert "   retries = 3  (default)" in res.stdout
    data = ok(guest, "config", "--list")
    by_key = {(v["section"], v["key"]): v for v in data["values"]}
    assert by_key[("agent", "identity_dir")]["value"] == str(guest.id_dir)
    assert by_key[("lease", "ttl")] == {"section": "lease", "key": "ttl", "value": "40.0", "source": str(guest.conf)}
    assert by_key[("lease", "enabled")]["source"] == "default"


def test_version_shows_the_servers_too(guest: Guest) -> None:
    from ftagent import __version__

    res = ftagent(guest, "version")
    assert res.returncode == 0
    assert f"ftagent: {__version__}" in res.stdout
    assert f"at {guest.server.url}" in res.stdout
    data = ok(guest, "version")
    assert data["server"]["version"] and "ft_lease" in data["server"]["capabilities"]
    guest.conf.write_text(guest.conf.read_text().replace(guest.server.url, "https://127.0.0.1:9/candlepin")
                          .replace("timeout = 20", "timeout = 2\nretries = 0"))
    res = ftagent(guest, "version")
    assert res.returncode == 0 and "server: unavailable" in res.stdout
