"""Issue 10, items 3, 4 and 6: hostile framing and bodies, bad reports, org-less principals.

Everything here goes over real TLS to an `ftmock serve` process: raw sockets where the framing
itself is the attack, requests where the body is.
"""

from __future__ import annotations

import base64
import json
import select
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FtmockServer
from tests.ftmock.conftest import Client, admin_client, checkin, hypervisor, register
from tests.ftmock.test_failover import REPORT1, ft_guest
from tests.kit.lease import fingerprint
from tests.kit.orgs import make_pool, new_org


def tls_socket(server: FtmockServer, timeout: float = 10.0) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(server.ca_path))
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def read_answer(sock: ssl.SSLSocket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP answer (status, headers, body) read off a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before an answer: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body[:length]


def closed_after(sock: ssl.SSLSocket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionError, ssl.SSLError, OSError):
        return True


def basic(server: FtmockServer) -> str:
    return "Basic " + base64.b64encode(f"admin:{server.admin_password}".encode()).decode()


def raw_exchange(server: FtmockServer, request: bytes, timeout: float = 10.0) -> tuple[int, dict[str, Any], bool]:
    """Send raw bytes; return the status, the JSON error body, and whether the server closed."""
    with tls_socket(server, timeout) as sock:
        sock.sendall(request)
        status, _, body = read_answer(sock)
        return status, json.loads(body), closed_after(sock)


def test_bad_framing_is_a_json_400_and_the_connection_ends(server: FtmockServer, org: str) -> None:
    auth = basic(server)
    body = b'{"key": "smuggled-org"}'
    smuggled = b"GET /candlepin/status HTTP/1.1\r\nHost: x\r\n\r\n"
    cases = {
        "negative Content-Length": (
            f"POST /candlepin/owners HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
            "Content-Length: -1\r\n\r\n").encode() + body,
        "two Content-Length headers": (
            f"POST /candlepin/owners HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
            f"Content-Length: {len(body)}\r\nContent-Length: {len(body) + len(smuggled)}\r\n\r\n").encode()
            + body + smuggled,
        "Content-Length and Transfer-Encoding": (
            f"POST /candlepin/owners HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
            f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n").encode() + body,
        "two Authorization headers": (
            "GET /candlepin/owners HTTP/1.1\r\nHost: x\r\nAuthorization: Basic bm9ib2R5Og==\r\n"
            f"Authorization: {auth}\r\n\r\n").encode(),
        "bad request line": b"HELLO THERE\r\n\r\n",
        "bad HTTP version": b"GET /candlepin/status HTTP/9.9\r\nHost: x\r\n\r\n",
    }
    for name, request in cases.items():
        status, answer, closed = raw_exchange(server, request)
        assert 400 <= status < 500, (name, status)
        assert answer["displayMessage"], name
        assert closed, f"{name}: the connection stayed open after a framing error"
    status, answer, _ = raw_exchange(server, b"BREW /candlepin/status HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 405 and answer["displayMessage"]
    # The smuggled org does not exist: neither the body nor the smuggled request ran.
    assert admin_client(server).get("/owners/smuggled-org").status_code == 404


def test_short_body_with_client_gone_ends_at_once(server: FtmockServer) -> None:
    """The client half-closes after a short body: the request is refused at once, never run."""
    request = (f"POST /candlepin/owners HTTP/1.1\r\nHost: x\r\nAuthorization: {basic(server)}\r\n"
               "Content-Length: 100\r\n\r\n{\"key\": \"short-body-org\"}").encode()
    with tls_socket(server) as sock:
        sock.sendall(request)
        started = time.monotonic()
        socket.socket.shutdown(sock, socket.SHUT_WR)  # TCP half-close: no more bytes, ever
        # OpenSSL may turn the 400 into a TLS alert after a half-close; either way the server ends it now.
        assert closed_after(sock) or read_answer(sock)[0] == 400
    assert time.monotonic() - started < 5
    assert admin_client(server).get("/owners/short-body-org").status_code == 404


@pytest.fixture
def quick_server(tmp_path: Path) -> Iterator[FtmockServer]:
    """A server with a 1 s request deadline."""
    data = tmp_path / "quick"
    data.mkdir()
    server = FtmockServer(data_dir=data, extra_args=["--request-timeout", "1"])
    server.start()
    yield server
    server.stop()


def test_request_deadlines_end_trickling_clients(quick_server: FtmockServer) -> None:
    # Headers trickled one byte at a time, each well inside a per-read timeout: the whole-header
    # deadline (1 s here) ends the request with a 408 all the same.
    request = b"GET /candlepin/status HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    with tls_socket(quick_server) as sock:
        started = time.monotonic()
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable or time.monotonic() - started > 8:
                break
        answer = read_answer(sock)[0]
        elapsed = time.monotonic() - started
    assert answer == 408
    assert elapsed < 3, elapsed
    # A body shorter than its Content-Length from a client that stays: 408 within the body deadline.
    request = (f"PUT /candlepin/owners/x HTTP/1.1\r\nHost: x\r\nAuthorization: {basic(quick_server)}\r\n"
               "Content-Length: 50\r\n\r\n{").encode()
    with tls_socket(quick_server) as sock:
        sock.sendall(request)
        started = time.monotonic()
        status, _, body = read_answer(sock)
    assert status == 408 and json.loads(body)["displayMessage"]
    assert time.monotonic() - started < 4
    # A client idle between requests is not cut by the request deadline.
    with tls_socket(quick_server) as sock:
        time.sleep(1.5)  # a real duration: idle longer than the request deadline
        sock.sendall(b"GET /candlepin/status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(sock)[0] == 200


HOSTILE_BODIES = {
    "deep nesting": b"[" * 100000,
    "deep object": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "lone surrogate": json.dumps({"name": "\ud800"}).encode(),
    "huge integer": b'{"name": "x", "quantity": ' + b"9" * 5000 + b"}",
    "NaN": b'{"name": NaN}',
    "UTF-16": json.dumps({"name": "x"}).encode("utf-16"),
    "UTF-32": json.dumps({"name": "x"}).encode("utf-32"),
    "invalid UTF-8": b'{"name": "\xff\xfe"}',
}


def test_hostile_json_bodies_are_400_on_every_json_route(server: FtmockServer, org: str, tmp_path: Path) -> None:
    reg = register(server, tmp_path, org, name="target")
    make_pool(server, org, "HOSTILE")
    admin = admin_client(server)
    routes = [("POST", f"/consumers?owner={org}"), ("PUT", f"/consumers/{reg.uuid}"),
              ("POST", f"/consumers/{reg.uuid}"), ("POST", f"/consumers/{reg.uuid}/lease"),
              ("POST", "/owners"), ("POST", f"/owners/{org}/products"), ("POST", f"/owners/{org}/pools"),
              ("POST", f"/owners/{org}/activation_keys"), ("POST", f"/hypervisors/{org}")]
    for name, body in HOSTILE_BODIES.items():
        for method, path in routes:
            client = reg.client if path.endswith("/lease") else admin  # a lease is claimed by its consumer
            r = client.call(method, path, data=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 400, (name, method, path, r.status_code, r.text[:200])
            assert r.json()["displayMessage"], (name, path)
    big = admin.post(f"/owners/{org}/pools", json={"productId": "HOSTILE", "quantity": 10**20})
    assert big.status_code == 400
    assert admin.post(f"/consumers/{reg.uuid}/entitlements?pool=x&quantity={10**20}").status_code == 400
    assert admin.get(f"/consumers/{reg.uuid}/certificates?serials={10**30}").status_code == 400
    assert reg.client.put(f"/consumers/{reg.uuid}", json={},
                          headers={"X-Lease-Generation": str(10**30)}).status_code == 400
    assert admin.delete(f"/consumers/{reg.uuid}/certificates/{2**64}").status_code == 400
    # Counts in product attributes that are not plain numbers stay text in the certificate.
    for sockets in ("²", "9" * 5000):
        r = admin.post(f"/owners/{org}/products", json={"id": "HOSTILE", "name": "h", "attributes": {"sockets": sockets}})
        assert r.status_code == 200, r.text
        pool = admin.post(f"/owners/{org}/pools", json={"productId": "HOSTILE", "quantity": 5}).json()["id"]
        assert admin.post(f"/consumers/{reg.uuid}/entitlements?pool={pool}").status_code == 200


def test_certificate_from_the_ca_naming_no_consumer_is_401(server: FtmockServer, tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from ftmock.ca import CertificateAuthority as C; "
            "i = C.load_or_create(Path(sys.argv[1])).identity('no-such-consumer', 'admin', 999999); "
            "Path(sys.argv[2]).write_text(i.cert_pem); Path(sys.argv[3]).write_text(i.key_pem)")
    cert, key = tmp_path / "ghost.pem", tmp_path / "ghost-key.pem"
    subprocess.run([sys.executable, "-c", code, str(server.data_dir), str(cert), str(key)], check=True)
    ghost = Client(server, cert=(str(cert), str(key)))
    for path in ("/consumers/no-such-consumer", "/owners", "/consumers/no-such-consumer/lease"):
        r = ghost.get(path)
        assert r.status_code == 401, (path, r.status_code)
        assert r.json()["displayMessage"]


# -- item 4: a hypervisor report is judged while the client waits ----------------------------------

BAD_GUESTS = {
    "ftinfo.instanceUUIDs": {"instanceUUID": "I1", "ftinfo.role": "0", "ftinfo.instanceUUIDs": 5},
    "ftinfo.role": {"instanceUUID": "I1", "ftinfo.role": 1e30, "ftinfo.instanceUUIDs": ["I1"]},
    "ftinfo.role ": {"instanceUUID": "I1", "ftinfo.role": "-1", "ftinfo.instanceUUIDs": ["I1"]},
    # A number is taken as text, as Candlepin takes it; a list is no instance UUID.
    "instanceUUID": {"instanceUUID": ["I1"], "ftinfo.role": "0", "ftinfo.instanceUUIDs": ["I1"]},
}


def test_a_bad_guest_is_a_400_naming_it_and_nothing_is_stored(server: FtmockServer, org: str) -> None:
    admin = admin_client(server)
    for attribute, attrs in BAD_GUESTS.items():
        good = hypervisor("good-host", ["plain-guest"])
        bad = hypervisor("bad-host", [{"guestId": "bad-guest", "state": 1, "attributes": attrs}])
        r = admin.post(f"/hypervisors/{org}?reporter_id=r", json={"hypervisors": [good, bad]})
        assert r.status_code == 400, (attribute, r.text)
        message = r.json()["displayMessage"]
        for part in ("bad-host", "bad-guest", attribute.strip()):
            assert part in message, (part, message)
    for body in (b'{"hypervisors": [{"hypervisorId": {"hypervisorId": "h"}, "guestIds": [{"guestId": "g", '
                 b'"state": 99999999999999999999}]}]}',
                 b'{"hypervisors": [{"hypervisorId": {"hypervisorId": "h"}, "name": "\\ud800"}]}',
                 b'{"hypervisors": [{"hypervisorId": {"hypervisorId": "h"}, "guestIds": [{"guestId": "g", '
                 b'"attributes": {"ftinfo.role": Infinity}}]}]}'):
        r = admin.post(f"/hypervisors/{org}", data=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["displayMessage"], body
    assert admin.get(f"/owners/{org}/consumers").json() == []  # no half-applied report
    # A good report after all that is applied, and its job finishes.
    job = checkin(server, org, {"hypervisors": [hypervisor("good-host", [
        {"guestId": "vm", "state": 1, "attributes": {"instanceUUID": "I1", "ftinfo.role": 0,
                                                      "ftinfo.instanceUUIDs": "I1,I2"}}])]})
    assert job["state"] == "FINISHED" and len(job["resultData"]["created"]) == 1


# -- item 6: an org-less principal owns nothing ----------------------------------------------------

def orgless_user(server: FtmockServer, name: str, password: str) -> Client:
    code = ("import sys; from pathlib import Path; from ftmock.store import Database; "
            "from ftmock.auth import set_password; db = Database(Path(sys.argv[1]) / 'ftmock.db'); "
            "tx = db.transaction(); t = tx.__enter__(); set_password(t, sys.argv[2], sys.argv[3], superadmin=False); "
            "tx.__exit__(None, None, None); db.close()")
    subprocess.run([sys.executable, "-c", code, str(server.data_dir), name, password], check=True)
    return Client(server, auth=(name, password))


def test_principals_see_only_their_own(server: FtmockServer, tmp_path: Path) -> None:
    """The authorization matrix: org-less user, other org's consumer, anonymous; 0 leaks allowed."""
    org_a, org_b = new_org(server), new_org(server)
    admin = admin_client(server)
    checkin(server, org_a, REPORT1)  # FT consumers with no org yet
    ft = [c for c in admin.get(f"/owners/{org_a}/consumers?type=system").json() if c.get("owner") is None]
    assert ft, "the report made FT consumers without an org"
    job = checkin(server, org_a, {"hypervisors": [hypervisor("hyp-x", [
        {"guestId": "vm-x", "state": 1, "attributes": ft_guest("X1", 0, ["X1"])["attributes"]}])]})
    pool = make_pool(server, org_a, "MATRIX")
    victim = register(server, tmp_path, org_a, name="victim", facts={"virt.uuid": "matrix-vm"})
    victim.client.post(f"/consumers/{victim.uuid}/lease", json={"holder": "v", "ttl": 60})
    stranger = register(server, tmp_path, org_b, name="stranger")
    nobody = orgless_user(server, f"nobody-{org_a}", "pw-nobody")
    anonymous = Client(server)

    targets = [ft[0]["uuid"], victim.uuid]
    requests_: list[tuple[str, str, Any]] = []
    for uuid in targets:
        requests_ += [("GET", f"/consumers/{uuid}", None), ("PUT", f"/consumers/{uuid}", {"name": "pwned"}),
                      ("POST", f"/consumers/{uuid}", {}), ("DELETE", f"/consumers/{uuid}", None),
                      ("GET", f"/consumers/{uuid}/certificates", None),
                      ("GET", f"/consumers/{uuid}/entitlements", None),
                      ("POST", f"/consumers/{uuid}/entitlements?pool={pool}", None),
                      ("GET", f"/consumers/{uuid}/compliance", None), ("GET", f"/consumers/{uuid}/host", None),
                      ("GET", f"/consumers/{uuid}/lease", None),
                      ("POST", f"/consumers/{uuid}/lease", {"holder": "thief", "ttl": 300}),
                      ("DELETE", f"/consumers/{uuid}/lease?holder=v&generation=1", None),
                      ("GET", f"/consumers/{uuid}/lease/log", None)]
    requests_ += [("GET", f"/owners/{org_a}", None), ("GET", f"/owners/{org_a}/consumers", None),
                  ("GET", f"/owners/{org_a}/pools", None), ("GET", f"/pools/{pool}", None),
                  ("GET", f"/pools?owner={org_a}", None), ("GET", f"/jobs/{job['id']}", None),
                  ("POST", f"/hypervisors/{org_a}", {"hypervisors": []}),
                  ("POST", f"/consumers?owner={org_a}", {"name": "intruder"})]
    checked = 0
    for who, client in (("org-less user", nobody), ("other org's consumer", stranger.client),
                        ("anonymous", anonymous)):
        for method, path, body in requests_:
            r = client.call(method, path, json=body)
            assert r.status_code in (400, 401, 403, 404), (who, method, path, r.status_code, r.text[:200])
            checked += 1
        for path in ("/owners", f"/users/nobody-{org_a}/owners"):
            r = client.get(path)
            assert r.status_code in (401, 403, 404) or r.json() == [], (who, path, r.text[:200])
            checked += 1
    # Nothing changed hands: the victim still holds its lease, its name, and FT consumers no org.
    lease = victim.client.get(f"/consumers/{victim.uuid}/lease").json()
    assert lease["holderFingerprint"] == fingerprint("v") and lease["valid"]
    assert victim.client.get(f"/consumers/{victim.uuid}").json()["name"] == "victim"
    print(f"authorization cases checked: {checked}")
    assert checked == 3 * (len(requests_) + 2)
