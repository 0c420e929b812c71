"""Forged failover answers are refused and change nothing on disk.

A rogue endpoint that holds the server's real TLS certificate (a compromised or impersonated
server) answers every request with a 308 built from the genuine one, with one thing tampered:
the successor certificate from another CA, for another key, for another consumer, or a successor
with another `virt.uuid`. The agent must refuse each, keep its identity and entitlements byte for
byte, and still follow the genuine failover afterwards.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import FtmockServer
from tests.e2e.conftest import Admin, vm_guest
from tests.ftmock.conftest import checkin
from tests.ftmock.test_failover import REPORT1, REPORT2, VM1
from tests.kit.guest import Guest
from tests.kit.orgs import new_org


class RogueServer:
    """An HTTPS endpoint with the real server's certificate that answers everything with one body."""

    def __init__(self, server: FtmockServer) -> None:
        self.answer: dict[str, Any] = {}
        self.requests = 0
        rogue = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self) -> None:
                rogue.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                body = json.dumps(rogue.answer).encode()
                self.send_response(308)
                self.send_header("Location", f"/candlepin/consumers/{rogue.answer['failover']['to']}")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = _reply

            def log_message(self, *args: Any) -> None:
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(server.data_dir / "server.pem", server.data_dir / "server-key.pem")
        ctx.load_verify_locations(server.ca_path)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/candlepin"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _sign(subject_cn: str, org: str, public_key: Any, issuer_cert: x509.Certificate | None, issuer_key: Any) -> str:
    now = dt.datetime.now(dt.timezone.utc)
    issuer = issuer_cert.subject if issuer_cert is not None else x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "Rogue CA")])
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                                     x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
            .issuer_name(issuer).public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .sign(issuer_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture
def scenario(server: FtmockServer, admin: Admin, tmp_path: Path) -> Iterator[tuple[Guest, dict[str, Any], RogueServer]]:
    org = new_org(server)
    checkin(server, org, REPORT1)
    guest = vm_guest(tmp_path / "guest", server, VM1)
    guest.json("register", "--org", org, "--username", "admin", "--password", server.admin_password)
    checkin(server, org, REPORT2)
    cert, key = guest.identity_files()
    genuine = requests.get(f"{server.url}/status", cert=(str(cert), str(key)), verify=str(server.ca_path),
                           timeout=30, allow_redirects=False)
    assert genuine.status_code == 308
    rogue = RogueServer(server)
    yield guest, genuine.json(), rogue
    rogue.close()


def _forgeries(server: FtmockServer, guest: Guest, genuine: dict[str, Any]) -> dict[str, Callable[[], dict[str, Any]]]:
    ca_cert = x509.load_pem_x509_certificate(server.ca_path.read_bytes())
    ca_key = serialization.load_pem_private_key((server.data_dir / "ca-key.pem").read_bytes(), None)
    local_pub = serialization.load_pem_private_key(guest.identity_files()[1].read_bytes(), None).public_key()
    to = genuine["failover"]["to"]
    org = genuine["failover"]["consumer"]["owner"]["key"]

    def with_cert(pem: str) -> dict[str, Any]:
        body = copy.deepcopy(genuine)
        body["failover"]["consumer"]["idCert"]["cert"] = pem
        return body

    def other_virt_uuid() -> dict[str, Any]:
        body = copy.deepcopy(genuine)
        body["failover"]["consumer"]["facts"]["virt.uuid"] = str(uuid.uuid4())
        return body

    def no_consumer() -> dict[str, Any]:
        body = copy.deepcopy(genuine)
        del body["failover"]["consumer"]
        return body

    return {
        "another CA": lambda: with_cert(_sign(to, org, local_pub, None, ec.generate_private_key(ec.SECP256R1()))),
        "another key": lambda: with_cert(_sign(to, org, ec.generate_private_key(ec.SECP256R1()).public_key(),
                                               ca_cert, ca_key)),
        "another consumer": lambda: with_cert(_sign(str(uuid.uuid4()), org, local_pub, ca_cert, ca_key)),
        "another virt.uuid": other_virt_uuid,
        "malformed body": no_consumer,
    }


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.suffix != ".log"} | {
        str(p.relative_to(root)): str(p.readlink()).encode() for p in root.rglob("*") if p.is_symlink()}


def test_forged_failover_answers_change_nothing(server: FtmockServer, scenario: tuple[Guest, dict[str, Any],
                                                RogueServer]) -> None:
    guest, genuine, rogue = scenario
    conf = guest.root / "ftagent.conf"
    real_conf = conf.read_text()
    before = _snapshot(guest.root / "identity") | _snapshot(guest.root / "entitlements")
    old_uuid = guest.json("identity")["uuid"]
    conf.write_text(real_conf.replace(server.url, rogue.url))
    reasons = {"another CA": "not issued by the configured CA", "another key": "not for this system's key",
               "another consumer": "not the successor", "another virt.uuid": "virt.uuid",
               "malformed body": "malformed answer"}
    for name, forge in _forgeries(server, guest, genuine).items():
        rogue.answer = forge()
        res = guest.ftagent("checkin")
        assert res.returncode == 69, (name, res.returncode, res.stderr)
        assert "failover refused" in res.stderr and reasons[name] in res.stderr, (name, res.stderr)
        after = _snapshot(guest.root / "identity") | _snapshot(guest.root / "entitlements")
        assert after == before, name
        assert guest.json("identity")["uuid"] == old_uuid
    assert rogue.requests >= 5
    # Back on the real server, the genuine failover goes through.
    conf.write_text(real_conf)
    guest.ftagent("checkin", check=True)
    ident = guest.json("identity")
    assert ident["uuid"] == genuine["failover"]["to"] and ident["failed_over_from"] == old_uuid
