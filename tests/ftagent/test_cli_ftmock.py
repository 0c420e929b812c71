"""The whole ftagent CLI against a real ftmock server over mutual TLS."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ftagent.cli import cli
from ftagent.connection import Connection
from ftagent.errors import Forbidden
from ftagent.lock import FileLock
from tests.clirunner import Runner
from tests.conftest import ADMIN_PASSWORD, FtmockServer
from tests.kit.ca import CertAuthority, key_pem, new_key
from tests.kit.guest import FTAGENT, Guest, cli_guest
from tests.kit.orgs import ENTITLEMENT, make_pool, new_org

# -- registration --------------------------------------------------------------------------------


@pytest.mark.content_access("entitlement")  # a consumer with no certificate at all
def test_register_then_identity_checkin_unregister(any_guest: Guest) -> None:
    guest = any_guest
    data = guest.register("--name", "vm-one")
    assert data["org"] == guest.org and data["name"] == "vm-one"
    assert data["key_origin"] == guest.expected_key_origin
    uuid = data["uuid"]
    assert stat.S_IMODE(os.stat(guest.id_dir / "key.pem").st_mode) == 0o600
    ident = guest.ok("identity")
    assert {k: ident[k] for k in ("uuid", "org", "name", "serial")} == {
        "uuid": uuid, "org": guest.org, "name": "vm-one", "serial": data["serial"]}
    assert ident["failed_over_from"] is None
    # The server holds the facts; a CSR-honouring server never saw our private key.
    consumer = guest.admin_api("GET", f"consumers/{uuid}").json()
    assert consumer["facts"]["virt.uuid"].lower() == guest.virt_uuid.lower()
    assert "key" not in consumer.get("idCert", {}) or not consumer["idCert"].get("key")

    # checkin with nothing changed: 2 requests over one connection
    result = guest.ok("checkin")
    assert result == {"uuid": uuid, "facts_sent": False, "failed_over_from": None, "requests": 2,
                      "connections": 1, "entitlements": {"added": [], "removed": [], "kept": []},
                      "profile_sent": None, "identity_renewed": None}
    guest.set_fact("custom.color", "blue")
    result = guest.ok("checkin")
    assert result["facts_sent"] is True and result["requests"] == 2
    assert guest.admin_api("GET", f"consumers/{uuid}").json()["facts"]["custom.color"] == "blue"

    assert guest.ok("unregister") == {"uuid": uuid, "unregistered": True}
    res = guest.run("identity")
    assert res.exit_code == 1 and "not registered" in res.stderr
    assert guest.admin_api("GET", f"consumers/{uuid}").status_code == 410


def test_register_with_server_generated_key(any_guest: Guest) -> None:
    guest = any_guest
    data = guest.register("--server-key")
    assert data["key_origin"] == "server"
    assert guest.ok("checkin")["uuid"] == data["uuid"]


def test_register_twice_is_usage_error_unless_forced(guest: Guest) -> None:
    first = guest.register()
    res = guest.run("register", "--org", guest.org, "--username", "admin", "--password", ADMIN_PASSWORD)
    assert res.exit_code == 64
    assert f"already registered as {first['uuid']}" in res.stderr
    second = guest.register("--force")
    assert second["uuid"] != first["uuid"]
    assert guest.admin_api("GET", f"consumers/{first['uuid']}").status_code == 410  # old one deleted
    assert guest.ok("identity")["uuid"] == second["uuid"]


def test_password_from_environment_and_prompt(tmp_path: Path, ftmock_session: FtmockServer, org: str) -> None:
    g1 = cli_guest(tmp_path / "g1", ftmock_session, org)
    res = g1.run("register", "--org", org, "--username", "admin", env={"FTAGENT_PASSWORD": ADMIN_PASSWORD})
    assert res.exit_code == 0, res.output
    g2 = cli_guest(tmp_path / "g2", ftmock_session, org)
    res = g2.run("register", "--org", org, "--username", "admin", input=f"{ADMIN_PASSWORD}\n")
    assert res.exit_code == 0, res.output
    assert ADMIN_PASSWORD not in res.output


def test_wrong_password_is_401_with_server_message(guest: Guest) -> None:
    res = guest.run("register", "--org", guest.org, "--username", "admin", "--password", "wrong-pw")
    assert res.exit_code == 64
    assert "Invalid Credentials (HTTP 401" in res.stderr
    assert "wrong-pw" not in res.output
    assert not guest.id_dir.exists() or not any(guest.id_dir.iterdir())


@pytest.mark.content_access("entitlement")  # the key's pool is attached for content
def test_activation_key_registration_attaches_its_pool(any_guest: Guest) -> None:
    guest = any_guest
    pool = make_pool(guest.server, guest.org)
    guest.server.admin("activation-key", "create", "--org", guest.org, "--name", "ak1", "--pool", pool)
    data = guest.ok("register", "--org", guest.org, "--activationkey", "ak1")
    assert data["key_origin"] == guest.expected_key_origin
    assert len(data["entitlement_serials"]) == 1
    serial = data["entitlement_serials"][0]
    assert (guest.ent_dir / f"{serial}.pem").read_text().startswith("-----BEGIN CERTIFICATE")
    assert stat.S_IMODE(os.stat(guest.ent_dir / f"{serial}-key.pem").st_mode) == 0o600


@pytest.mark.content_access("entitlement")  # attach and compliance
def test_attach_list_status_and_refresh_adds_and_removes(any_guest: Guest) -> None:
    guest = any_guest
    pool = make_pool(guest.server, guest.org)
    uuid = guest.register()["uuid"]
    assert guest.ok("status")["status"] in ("invalid", "partial")
    available = guest.ok("list", "--available")
    assert pool in [p["id"] for p in available]
    attached = guest.ok("attach", "--pool", pool)
    assert attached[0]["pool"]["id"] == pool
    serials = {int(p.name[:-4]) for p in guest.ent_dir.glob("*.pem") if not p.name.endswith("-key.pem")}
    assert len(serials) == 1
    assert guest.ok("status")["status"] == "valid"
    consumed = guest.ok("list", "--consumed")
    assert [e["pool"]["id"] for e in consumed] == [pool]

    # The server drops the entitlement: refresh removes the certificate.
    ent_id = consumed[0]["id"]
    assert guest.admin_api("DELETE", f"consumers/{uuid}/entitlements/{ent_id}").status_code in (200, 204)
    out = guest.ok("refresh")
    assert out["removed"] == sorted(serials) and out["serials"] == []
    assert list(guest.ent_dir.glob("*.pem")) == []

    # The server adds one (admin attaches): refresh fetches exactly the missing one.
    assert guest.admin_api("POST", f"consumers/{uuid}/entitlements", params={"pool": pool}).status_code == 200
    out = guest.ok("refresh")
    assert len(out["added"]) == 1 and out["removed"] == []
    assert guest.ok("refresh") == {"added": [], "removed": [], "kept": out["added"], "serials": out["added"]}

    # attach --auto covers the installed product from another pool; usage errors are 64
    assert guest.run("attach").exit_code == 64
    assert guest.run("attach", "--auto", "--pool", pool).exit_code == 64


def test_facts_show_and_update(guest: Guest) -> None:
    facts = guest.ok("facts")
    assert facts["virt.uuid"] == guest.virt_uuid
    uuid = guest.register()["uuid"]
    guest.set_fact("custom.size", "XL")
    assert guest.ok("facts", "--update")["custom.size"] == "XL"
    assert guest.admin_api("GET", f"consumers/{uuid}").json()["facts"]["custom.size"] == "XL"
    assert guest.ok("checkin")["facts_sent"] is False


def test_identity_regenerate(any_guest: Guest) -> None:
    guest = any_guest
    before = guest.register()
    key_before = (guest.id_dir / "key.pem").read_bytes()
    after = guest.ok("identity", "--regenerate")
    assert after["uuid"] == before["uuid"] and after["serial"] != before["serial"]
    # A new key either way: ours via CSR, or the one a CSR-ignoring server generated and returned.
    assert (guest.id_dir / "key.pem").read_bytes() != key_before
    assert after["key_origin"] == guest.expected_key_origin
    assert guest.ok("checkin")["uuid"] == before["uuid"]
    again = guest.ok("identity", "--regenerate", "--server-key")
    assert again["serial"] != after["serial"]
    assert guest.ok("checkin")["uuid"] == before["uuid"]


# -- failures ------------------------------------------------------------------------------------


def test_consumer_deleted_on_server_410_cleans_up(guest: Guest) -> None:
    pool = make_pool(guest.server, guest.org)
    uuid = guest.register()["uuid"]
    guest.ok("attach", "--pool", pool)
    assert guest.admin_api("DELETE", f"consumers/{uuid}").status_code == 204
    res = guest.run("checkin")
    assert res.exit_code == 69
    assert f"consumer {uuid} has been deleted on the server" in res.stderr
    assert not (guest.id_dir / "cert.pem").exists() and list(guest.ent_dir.glob("*.pem")) == []
    assert guest.run("identity").exit_code == 1


def test_403_on_another_consumers_resources(tmp_path: Path, ftmock_session: FtmockServer, org: str) -> None:
    a = cli_guest(tmp_path / "a", ftmock_session, org)
    b = cli_guest(tmp_path / "b", ftmock_session, org)
    a.register()
    b_uuid = b.register()["uuid"]
    with Connection(ftmock_session.url, ca_cert=ftmock_session.ca_path, cert_file=a.id_dir / "cert.pem",
                    key_file=a.id_dir / "key.pem") as conn, pytest.raises(Forbidden) as info:
        conn.get(f"consumers/{b_uuid}")
    assert info.value.status == 403
    assert b_uuid in (info.value.display_message or "")


def test_untrusted_server_certificate_refused(tmp_path: Path, ftmock_session: FtmockServer, org: str) -> None:
    other = tmp_path / "other-ca.pem"
    CertAuthority().write(other)
    g = cli_guest(tmp_path / "g", ftmock_session, org, ca=other)
    res = g.run("register", "--org", org, "--username", "admin", "--password", ADMIN_PASSWORD)
    assert res.exit_code == 69
    assert "server certificate not trusted" in res.stderr
    assert not (g.id_dir / "cert.pem").exists()


def test_corrupted_and_mismatched_identity_refused(guest: Guest) -> None:
    guest.register()
    cert = (guest.id_dir / "cert.pem").resolve()
    key = (guest.id_dir / "key.pem").resolve()
    good_cert, good_key = cert.read_bytes(), key.read_bytes()
    cert.write_bytes(good_cert.replace(b"M", b"Q", 5))
    for cmd in ("identity", "checkin"):
        res = guest.run(cmd)
        assert res.exit_code == 1, res.output
        assert "identity certificate" in res.stderr and "is corrupt" in res.stderr
    cert.write_bytes(good_cert)
    key.write_bytes(key_pem(new_key()))
    res = guest.run("checkin")
    assert res.exit_code == 1 and "does not match certificate" in res.stderr
    key.write_bytes(good_key)
    assert guest.run("checkin").exit_code == 0


def test_lock_held_by_another_process(guest: Guest) -> None:
    guest.register()
    with FileLock(guest.root / "ftagent.lock"):
        res = guest.run("checkin")
    assert res.exit_code == 69 and "another ftagent process" in res.stderr
    assert guest.run("identity").exit_code == 0  # read-only commands need no lock


def test_config_error_exit_78(guest: Guest) -> None:
    guest.conf.write_text(guest.conf.read_text() + "\n[server]\n")
    res = guest.run("identity")
    assert res.exit_code == 78
    bad = guest.root / "bad.conf"
    bad.write_text("[server]\ntimeout = never\n")
    res = Runner().invoke(cli, ["--config", str(bad), "checkin"])
    assert res.exit_code == 78 and "[server] timeout" in res.stderr


# -- the installed entry point and a plain script ------------------------------------------------


def test_installed_entry_point(guest: Guest) -> None:
    env = dict(os.environ, FTAGENT_CONFIG=str(guest.conf), FTAGENT_PASSWORD=ADMIN_PASSWORD)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FTAGENT, *args], capture_output=True, text=True, env=env, timeout=60)

    assert run("--help").returncode == 0
    res = run("identity")
    assert res.returncode == 1 and "not registered" in res.stderr
    res = run("register", "--org", guest.org, "--username", "admin", "--json")
    assert res.returncode == 0, res.stderr
    uuid = json.loads(res.stdout)["uuid"]
    res = run("identity", "--json")
    assert json.loads(res.stdout)["uuid"] == uuid
    res = run("checkin")
    assert res.returncode == 0 and f"Checked in as {uuid}" in res.stdout
    res = run("register", "--org", guest.org, "--username", "admin")
    assert res.returncode == 64
    res = run("bogus-command")
    assert res.returncode == 64
    res = subprocess.run([sys.executable, "-m", "ftagent", "status", "--json"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert res.returncode == 0 and "status" in json.loads(res.stdout)


def test_library_from_a_plain_script(guest: Guest, tmp_path: Path) -> None:
    script = tmp_path / "use_ftagent.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        from ftagent import Agent, load_config, NotRegistered

        agent = Agent(load_config({str(guest.conf)!r}))
        try:
            agent.current_identity()
        except NotRegistered:
            pass
        ident = agent.register({guest.org!r}, username="admin", password={ADMIN_PASSWORD!r}, name="scripted")
        result = agent.checkin()
        print(json.dumps({{"uuid": ident.uuid, "checkin": result.as_dict(),
                           "compliance": agent.compliance()["status"]}}))
        agent.close()
    """))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["checkin"]["uuid"] == out["uuid"] and out["checkin"]["requests"] == 2
    assert guest.ok("identity")["name"] == "scripted"


def test_identity_and_help_do_not_import_the_network_stack(guest: Guest) -> None:
    guest.register()
    code = textwrap.dedent(f"""
        import sys
        from ftagent.cli import cli
        rc = cli.main(["--config", {str(guest.conf)!r}, "identity"], standalone_mode=False)
        heavy = [m for m in ("requests", "cryptography", "urllib3") if m in sys.modules]
        print(rc, heavy)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip().splitlines()[-1] == "0 []", res.stdout + res.stderr
    res = subprocess.run([sys.executable, "-c", "import sys, ftagent; from ftagent import errors; "
                          "print(sorted(m for m in ('requests','cryptography','click') if m in sys.modules))"],
                         capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "[]"


@pytest.mark.content_access("entitlement")  # auto-attach binds pools
def test_register_auto_attach_and_attach_auto(tmp_path: Path, any_ftmock: FtmockServer) -> None:
    ftmock_session = any_ftmock
    org = new_org(ftmock_session, mode=ENTITLEMENT)
    make_pool(ftmock_session, org, "100", 10)
    g = cli_guest(tmp_path / "g", ftmock_session, org)
    data = g.register("--auto-attach")
    assert len(data["entitlement_serials"]) == 1
    assert g.ok("status")["status"] == "valid"
    g2 = cli_guest(tmp_path / "g2", ftmock_session, org)
    g2.register()
    attached = g2.ok("attach", "--auto")
    assert [e["pool"]["productId"] for e in attached] == ["100"]
    assert len(list(g2.ent_dir.glob("*-key.pem"))) == 1


@pytest.mark.content_access("entitlement")  # entitlement certificates of attached pools
def test_list_consumed_reads_the_certificates_offline(any_guest: Guest) -> None:
    guest = any_guest
    server = guest.server
    server.admin("product", "create", "--org", guest.org, "--id", "100", "--name", "Guest OS",
                 "--content", "guest-os-base=/content/guestos/base", "--content", "guest-os-extra=/content/guestos/extra")
    server.admin("product", "create", "--org", guest.org, "--id", "SKU-9", "--name", "Guest OS Premium",
                 "--provides", "100")
    pool = json.loads(server.admin("pool", "create", "--org", guest.org, "--product", "SKU-9",
                                   "--end-date", "2031-06-30T00:00:00+00:00"))["id"]
    guest.register()
    guest.ok("attach", "--pool", pool)
    # Offline: the configured server is now an address where nothing listens.
    guest.conf.write_text(guest.conf.read_text().replace(server.url, "https://127.0.0.1:9/candlepin"))
    [ent] = guest.ok("list", "--consumed")
    assert ent["name"] == "Guest OS Premium" and ent["sku"] == "SKU-9" and ent["pool"] == {"id": pool}
    assert ent["end"].startswith("2031-06-30") and ent["signature"] == "verified"
    assert [(p["id"], p["name"]) for p in ent["products"]] == [("100", "Guest OS")]
    assert [(c["label"], c["path"]) for c in ent["content"]] == [
        ("guest-os-base", "/content/guestos/base"), ("guest-os-extra", "/content/guestos/extra")]
    text = guest.run("list").output
    assert "Guest OS Premium" in text and "to 2031-06-30" in text and "product:  100  Guest OS" in text
    assert "content:  guest-os-base  /content/guestos/base" in text

    # A payload altered on disk no longer verifies against the CA.
    [cert_file] = [p for p in guest.ent_dir.glob("*.pem") if not p.name.endswith("-key.pem")]
    pem = cert_file.read_text()
    import base64
    import zlib
    head, rest = pem.split("-----BEGIN ENTITLEMENT DATA-----\n")
    body, tail = rest.split("-----END ENTITLEMENT DATA-----\n")
    forged = zlib.compress(zlib.decompress(base64.b64decode(body)).replace(b"/content/guestos/base", b"/content/evil/base"))
    cert_file.write_text(head + "-----BEGIN ENTITLEMENT DATA-----\n" + base64.encodebytes(forged).decode()
                         + "-----END ENTITLEMENT DATA-----\n" + tail)
    [ent] = guest.ok("list", "--consumed")
    assert ent["signature"] == "invalid"
