"""Helpers for talking to a real `ftmock` over HTTPS: Basic auth for admins, mutual TLS for consumers."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import FtmockServer
from tests.kit.ftmock import finished_job
from tests.kit.rhsmhost import python_rhsm

_counter = itertools.count()


def public_key_der(cert: x509.Certificate) -> bytes:
    """The certificate's SubjectPublicKeyInfo (public keys compare with == only from cryptography 38)."""
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def make_key_and_csr(cn: str = "ftagent") -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return key_pem, csr.public_bytes(serialization.Encoding.PEM).decode()


class Client:
    """requests against the server, verifying its certificate with the server's CA."""

    def __init__(self, server: FtmockServer, auth: tuple[str, str] | None = None,
                 cert: tuple[str, str] | None = None) -> None:
        self.server = server
        self.session = requests.Session()
        self.session.verify = str(server.ca_path)
        self.session.auth = auth
        self.session.cert = cert

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 30)
        # Per request: requests lets REQUESTS_CA_BUNDLE override Session.verify, not this.
        kw.setdefault("verify", str(self.server.ca_path))
        kw.setdefault("allow_redirects", False)
        return self.session.request(method, self.server.url + path, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.call("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.call("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> requests.Response:
        return self.call("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.call("DELETE", path, **kw)


@dataclass
class Registered:
    dto: dict[str, Any]
    cert_path: str
    key_path: str
    client: Client

    @property
    def uuid(self) -> str:
        return str(self.dto["uuid"])


def admin_client(server: FtmockServer) -> Client:
    return Client(server, auth=server.admin_auth)


def register(server: FtmockServer, tmp: Path, org: str, *, name: str = "guest", csr: bool = True,
             facts: dict[str, str] | None = None, installed: list[str] | None = None,
             activation_keys: str | None = None) -> Registered:
    body: dict[str, Any] = {"name": name, "type": {"label": "system"}, "facts": facts or {},
                            "installedProducts": [{"productId": p, "productName": p} for p in installed or []]}
    key_pem = None
    if csr:
        key_pem, body["csr"] = make_key_and_csr(name)
    if activation_keys:
        r = Client(server).post(f"/consumers?owner={org}&activation_keys={activation_keys}", json=body)
    else:
        r = admin_client(server).post(f"/consumers?owner={org}", json=body)
    assert r.status_code == 200, r.text
    dto = r.json()
    if not csr:
        key_pem = dto["idCert"]["key"]
    n = next(_counter)
    cert_path, key_path = tmp / f"cert{n}.pem", tmp / f"key{n}.pem"
    cert_path.write_text(dto["idCert"]["cert"])
    assert key_pem is not None
    key_path.write_text(key_pem)
    return Registered(dto, str(cert_path), str(key_path), Client(server, cert=(str(cert_path), str(key_path))))


def checkin(server: FtmockServer, org: str, report: dict[str, Any], reporter: str = "rep1",
            content_type: str = "application/json") -> dict[str, Any]:
    """Send a hypervisor report and wait for its job to finish; returns the finished job."""
    admin = admin_client(server)
    r = admin.post(f"/hypervisors/{org}?reporter_id={reporter}", data=json.dumps(report),
                   headers={"Content-Type": content_type})
    assert r.status_code == 200, r.text
    return finished_job(lambda job_id: admin.get(f"/jobs/{job_id}").json(), r.json()["id"])


def hypervisor(hid: str, guests: list[dict[str, Any]] | list[str], name: str | None = None) -> dict[str, Any]:
    guest_ids = [g if isinstance(g, dict) else {"guestId": g, "state": 1, "attributes": {}} for g in guests]
    return {"hypervisorId": {"hypervisorId": hid}, "name": name or hid, "guestIds": guest_ids,
            "facts": {"hypervisor.type": "VMware ESXi", "cpu.cpu_socket(s)": "2"}}


@pytest.fixture
def server(ftmock_session: FtmockServer) -> FtmockServer:
    return ftmock_session


@pytest.fixture
def rhsm_common(server: FtmockServer, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """python-rhsm's connection arguments for the server, with its CA as python-rhsm's only trusted CA
    (python-rhsm's settings are put back afterwards)."""
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    shutil.copy(server.ca_path, ca_dir / "ftmock-ca.pem")
    with python_rhsm(server, ca_dir) as common:
        yield common
