"""The server process: persistence across restarts, clean stop, and bad input of every kind."""

from __future__ import annotations

import json
import signal
import socket
import ssl
from pathlib import Path
from typing import Any

from tests.conftest import FtmockServer
from tests.ftmock.conftest import Client, admin_client, checkin, hypervisor, make_key_and_csr, register
from tests.kit.ftmock import finished_job
from tests.kit.orgs import ENTITLEMENT, make_pool, new_org


def test_state_survives_restart(ftmock: FtmockServer, tmp_path: Path) -> None:
    org = new_org(ftmock, mode=ENTITLEMENT)  # the entitlement, and the compliance it makes, survive too
    pool = make_pool(ftmock, org, "PERSIST")
    reg = register(ftmock, tmp_path, org, name="persistent", installed=["PERSIST"])
    reg.client.post(f"/consumers/{reg.uuid}/entitlements?pool={pool}")
    ca_before = ftmock.ca_path.read_bytes()
    port = ftmock.port
    ftmock.restart()
    assert ftmock.port == port
    assert ftmock.ca_path.read_bytes() == ca_before
    client = Client(ftmock, cert=(reg.cert_path, reg.key_path))
    r = client.get(f"/consumers/{reg.uuid}")
    assert r.status_code == 200 and r.json()["name"] == "persistent"
    assert client.get(f"/consumers/{reg.uuid}/compliance").json()["status"] == "valid"


def test_sigterm_stops_cleanly_and_keeps_committed_writes(ftmock: FtmockServer, tmp_path: Path) -> None:
    reg = register(ftmock, tmp_path, "admin", name="before-stop")
    assert ftmock.stop(signal.SIGTERM) == 0
    ftmock.start()
    r = admin_client(ftmock).get(f"/consumers/{reg.uuid}")
    assert r.status_code == 200


def test_files_and_modes(ftmock: FtmockServer) -> None:
    d = ftmock.data_dir
    assert (d / "url").read_text().strip() == ftmock.url
    assert ftmock.url.startswith("https://127.0.0.1:") and ftmock.url.endswith("/candlepin")
    for name in ("ca-key.pem", "server-key.pem"):
        assert (d / name).stat().st_mode & 0o777 == 0o600
    assert (d / "ca.pem").stat().st_mode & 0o077 == 0o044  # the CA certificate is public


def test_tls_1_1_is_refused(ftmock: FtmockServer) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(ftmock.ca_path))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    try:
        with socket.create_connection(("127.0.0.1", ftmock.port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
            raise AssertionError("TLS 1.1 handshake succeeded")
    except ssl.SSLError:
        pass


def test_bad_input_gets_4xx_with_message(server: FtmockServer, org: str) -> None:
    admin = admin_client(server)
    cases = [
        ("POST", f"/consumers?owner={org}", b"{oops", 400),
        ("POST", f"/consumers?owner={org}", json.dumps([1, 2]).encode(), 400),
        ("POST", f"/consumers?owner={org}", json.dumps({"name": "x", "facts": [1]}).encode(), 400),
        ("POST", f"/consumers?owner={org}", json.dumps({"name": 5}).encode(), 400),
        ("POST", f"/consumers?owner={org}", json.dumps({"name": "x", "type": "toaster"}).encode(), 400),
        ("POST", f"/consumers?owner={org}", json.dumps({"name": "x", "csr": "not a csr"}).encode(), 400),
        ("POST", f"/consumers?owner={org}", json.dumps({"name": "x", "installedProducts": "p"}).encode(), 400),
        ("POST", "/consumers?owner=no-such-org", json.dumps({"name": "x"}).encode(), 404),
        ("POST", "/consumers", json.dumps({"name": "x"}).encode(), 400),
        ("POST", f"/owners/{org}/pools", json.dumps({"productId": "missing"}).encode(), 404),
        ("POST", f"/owners/{org}/products", json.dumps({"id": "p", "name": "p",
                                                        "attributes": {"virt_limit": "lots"}}).encode(), 400),
        ("POST", "/owners", json.dumps({"key": "bad key!"}).encode(), 400),
        ("GET", "/nowhere", b"", 404),
    ]
    for method, path, body, status in cases:
        r = admin.call(method, path, data=body, headers={"Content-Type": "application/json"})
        assert r.status_code == status, (method, path, body, r.status_code, r.text)
        assert r.json()["displayMessage"], (path, body)
    # Nothing was half-created by the failures above.
    assert admin.get(f"/owners/{org}/consumers").json() == []


def test_csr_with_bad_signature_is_refused(server: FtmockServer, org: str) -> None:
    _, csr = make_key_and_csr()
    lines = csr.splitlines()
    body = lines[1:-1]
    # Flip a character inside the signature part of the base64 body.
    last = body[-2]
    body[-2] = last[:-4] + ("A" if last[-4] != "A" else "B") + last[-3:]
    tampered = "\n".join([lines[0], *body, lines[-1]])
    r = admin_client(server).post(f"/consumers?owner={org}", json={"name": "x", "csr": tampered})
    assert r.status_code == 400
    assert "CSR" in r.json()["displayMessage"]


def test_oversized_body_is_refused(server: FtmockServer, org: str) -> None:
    # Announce a body over the limit; the server must answer 413 without reading it.
    import http.client

    ctx = ssl.create_default_context(cafile=str(server.ca_path))
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=10)
    import base64

    auth = base64.b64encode(b"admin:" + server.admin_password.encode()).decode()
    conn.putrequest("POST", f"/candlepin/hypervisors/{org}")
    conn.putheader("Authorization", f"Basic {auth}")
    conn.putheader("Content-Length", str(200 * 1024 * 1024))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413
    assert "over the limit" in json.loads(resp.read())["displayMessage"]
    conn.close()


def test_admin_cli_creates_fixtures(ftmock: FtmockServer, tmp_path: Path) -> None:
    out = json.loads(ftmock.admin("org", "create", "cli-org"))
    assert out["key"] == "cli-org"
    json.loads(ftmock.admin("product", "create", "--org", "cli-org", "--id", "P", "--name", "Prod",
                            "--attribute", "virt_limit=4"))
    pool = json.loads(ftmock.admin("pool", "create", "--org", "cli-org", "--product", "P", "--quantity", "3"))
    key = json.loads(ftmock.admin("activation-key", "create", "--org", "cli-org", "--name", "k",
                                  "--pool", pool["id"]))
    assert key["pools"] == [{"poolId": pool["id"], "quantity": 1}]
    pools = admin_client(ftmock).get("/owners/cli-org/pools").json()
    assert [(p["id"], p["quantity"]) for p in pools] == [(pool["id"], 3)]
    reg = register(ftmock, tmp_path, "cli-org", name="via-key", activation_keys="k")
    assert len(reg.client.get(f"/consumers/{reg.uuid}/entitlements").json()) == 1


def test_job_left_by_a_stop_is_resumed_at_start(ftmock: FtmockServer) -> None:
    """A check-in queued when the server died is applied at the next start, not lost."""
    import sqlite3

    ftmock.stop(signal.SIGKILL)
    report = {"hypervisors": [{"hypervisorId": {"hypervisorId": "resumed-host"}, "name": "resumed-host",
                               "guestIds": [{"guestId": "g-1", "state": 1}]}]}
    db = sqlite3.connect(ftmock.data_dir / "ftmock.db")
    with db:
        db.execute("INSERT INTO jobs(id, owner, reporter_id, state, payload, created, updated) "
                   "VALUES('hypervisor_update_left', 'admin', 'r', 'RUNNING', ?, '2026-01-01', '2026-01-01')",
                   (json.dumps(report),))
    db.close()
    ftmock.start()
    job = _wait_job(ftmock, "hypervisor_update_left")
    assert job["state"] == "FINISHED", job
    assert [h["name"] for h in job["resultData"]["created"]] == ["resumed-host"]


def _wait_job(server: FtmockServer, job_id: str) -> dict[str, Any]:
    admin = admin_client(server)
    return finished_job(lambda job_id: admin.get(f"/jobs/{job_id}").json(), job_id, timeout=10)


def _stored_guests(server: FtmockServer) -> dict[str, dict[str, Any]]:
    hyps = admin_client(server).get("/owners/admin/consumers?type=hypervisor").json()
    return {h["name"]: {g["guestId"]: g["attributes"] for g in h["guestIds"]} for h in hyps}


def test_job_resumed_after_a_kill_sees_a_change_of_state(ftmock: FtmockServer) -> None:
    """A resumed job is parsed from its stored payload and compared with what the last report stored:
    a guest whose state alone changed makes its hypervisor updated."""
    import sqlite3

    def report(state: int) -> dict[str, Any]:
        return {"hypervisors": [hypervisor("kept-host", ["k-1", "k-2"]),
                                hypervisor("moved-host", [{"guestId": "m-1", "state": state, "attributes": {}}])]}

    first = checkin(ftmock, "admin", report(1))
    assert sorted(h["name"] for h in first["resultData"]["created"]) == ["kept-host", "moved-host"]
    ftmock.stop(signal.SIGKILL)
    db = sqlite3.connect(ftmock.data_dir / "ftmock.db")
    with db:
        db.execute("INSERT INTO jobs(id, owner, reporter_id, state, payload, created, updated) "
                   "VALUES('hypervisor_update_pending', 'admin', 'rep1', 'CREATED', ?, '2026-01-01', '2026-01-01')",
                   (json.dumps(report(5)),))
    db.close()
    ftmock.start()
    job = _wait_job(ftmock, "hypervisor_update_pending")
    assert job["state"] == "FINISHED"
    assert [h["name"] for h in job["resultData"]["updated"]] == ["moved-host"]
    assert [h["name"] for h in job["resultData"]["unchanged"]] == ["kept-host"]
    again = checkin(ftmock, "admin", report(5))
    assert sorted(h["name"] for h in again["resultData"]["unchanged"]) == ["kept-host", "moved-host"]
    assert _stored_guests(ftmock) == {"kept-host": {"k-1": {}, "k-2": {}}, "moved-host": {"m-1": {}}}


def test_data_dir_from_before_guest_list_digests_is_migrated(ftmock: FtmockServer) -> None:
    """A database whose consumers have no guests_digest column gains it; the first report after that
    is compared row by row (nothing changed: unchanged), and later changes are seen."""
    import sqlite3

    report = {"hypervisors": [hypervisor("old-host", ["o-1", "o-2"])]}
    checkin(ftmock, "admin", report)
    ftmock.stop()
    db = sqlite3.connect(ftmock.data_dir / "ftmock.db", isolation_level=None)
    # The consumers table as it was before the column existed (DROP COLUMN needs SQLite 3.35).
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'consumers'").fetchone()[0]
    columns = [r[1] for r in db.execute("PRAGMA table_info(consumers)") if r[1] != "guests_digest"]
    old_sql = sql.replace(",\n    guests_digest TEXT", "")
    assert old_sql != sql
    db.executescript(f"""
        PRAGMA foreign_keys=OFF;
        BEGIN;
        {old_sql.replace("consumers(", "consumers_old(", 1)};
        INSERT INTO consumers_old SELECT {", ".join(columns)} FROM consumers;
        DROP TABLE consumers;
        ALTER TABLE consumers_old RENAME TO consumers;
        COMMIT;
    """)
    assert "guests_digest" not in [r[1] for r in db.execute("PRAGMA table_info(consumers)")]
    db.close()
    ftmock.start()
    assert [h["name"] for h in checkin(ftmock, "admin", report)["resultData"]["unchanged"]] == ["old-host"]
    assert _stored_guests(ftmock) == {"old-host": {"o-1": {}, "o-2": {}}}
    changed = {"hypervisors": [hypervisor("old-host", ["o-1"])]}
    assert [h["name"] for h in checkin(ftmock, "admin", changed)["resultData"]["updated"]] == ["old-host"]
    assert [h["name"] for h in checkin(ftmock, "admin", changed)["resultData"]["unchanged"]] == ["old-host"]
    assert _stored_guests(ftmock) == {"old-host": {"o-1": {}}}


def test_listens_on_ipv6_loopback(tmp_path: Path) -> None:
    data = tmp_path / "v6"
    data.mkdir()
    server = FtmockServer(data_dir=data, listen="[::1]:0")
    server.start()
    try:
        assert server.url.startswith("https://[::1]:")
        assert Client(server).get("/status").json()["result"] is True
    finally:
        server.stop()
