"""Identity certificates as Candlepin issues them: the system's name in the SAN, a validity and a
renewal window (``ftmock serve --identity-cert-days``/``--identity-renew-days``), and a renewal on
check-in that keeps the key, without locking out a guest that missed the answer."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from ftmock.ca import not_valid_after
from tests.conftest import FtmockServer
from tests.ftmock.conftest import Client, public_key_der, register
from tests.kit.ftmock import start_ftmock
from tests.kit.orgs import new_org


def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def _days_left(cert: x509.Certificate) -> float:
    end = not_valid_after(cert)
    return (end - dt.datetime.now(dt.timezone.utc)).total_seconds() / 86400


@pytest.fixture
def short_lived(tmp_path: Path) -> Iterator[FtmockServer]:
    """A server whose identity certificates last 30 days and are renewed in their last 10."""
    server = start_ftmock(tmp_path / "short", extra_args=["--identity-cert-days", "30", "--identity-renew-days", "10"])
    yield server
    server.stop()


def test_identity_certificate_names_the_system_in_its_san(server: FtmockServer, org: str, tmp_path: Path) -> None:
    reg = register(server, tmp_path, org, name="web-01.example.com")
    cert = _cert(reg.dto["idCert"]["cert"])
    [dirname] = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert isinstance(dirname, x509.DirectoryName)
    # subscription-manager shows this as the system's name: DirName:/CN=<name>, no org, no UUID
    assert dirname.value.rfc4514_string() == "CN=web-01.example.com"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == reg.uuid
    # Candlepin's default validity: 5 years
    assert 5 * 365 - 1 < _days_left(cert) <= 5 * 365


def test_a_certificate_outside_the_window_is_kept(short_lived: FtmockServer, tmp_path: Path) -> None:
    org = new_org(short_lived)
    reg = register(short_lived, tmp_path, org, name="fresh")
    assert 29 < _days_left(_cert(reg.dto["idCert"]["cert"])) <= 30
    for r in (reg.client.get(f"/consumers/{reg.uuid}"), reg.client.put(f"/consumers/{reg.uuid}/checkin")):
        assert r.status_code == 200, r.text
        assert r.json()["idCert"]["serial"]["serial"] == reg.dto["idCert"]["serial"]["serial"]


def _restart(server: FtmockServer, *args: str) -> None:
    server.stop()
    server.extra_args = list(args)
    server.start()


@pytest.mark.parametrize("call", ["GET /consumers/{uuid}", "PUT /consumers/{uuid}/checkin"])
def test_a_checkin_inside_the_window_renews_for_the_same_key(short_lived: FtmockServer, tmp_path: Path,
                                                             call: str) -> None:
    org = new_org(short_lived)
    reg = register(short_lived, tmp_path, org, name="ageing")
    old = _cert(reg.dto["idCert"]["cert"])
    # The same certificate is now inside the window: the server renews within 40 days of the end.
    _restart(short_lived, "--identity-cert-days", "60", "--identity-renew-days", "40")
    method, path = call.split(" ")
    r = reg.client.call(method, path.format(uuid=reg.uuid))
    assert r.status_code == 200, r.text
    renewed = r.json()["idCert"]
    new = _cert(renewed["cert"])
    assert new.serial_number != old.serial_number and renewed["serial"]["serial"] == new.serial_number
    assert public_key_der(new) == public_key_der(old) and renewed["key"] is None  # the key stays the guest's
    assert 59 < _days_left(new) <= 60
    assert new.subject == old.subject
    # The old certificate still opens the consumer until the new one is used (an answer lost on its
    # way must not lock the guest out), and it is answered the renewed certificate again.
    again = reg.client.get(f"/consumers/{reg.uuid}")
    assert again.status_code == 200 and again.json()["idCert"]["serial"]["serial"] == new.serial_number
    new_path = tmp_path / "renewed.pem"
    new_path.write_text(renewed["cert"])
    fresh = Client(short_lived, cert=(str(new_path), reg.key_path))
    assert fresh.get(f"/consumers/{reg.uuid}").json()["idCert"]["serial"]["serial"] == new.serial_number
    # Once the renewed certificate has been used, the old one opens nothing.
    assert reg.client.get(f"/consumers/{reg.uuid}").status_code == 401


def test_stock_candlepin_renews_with_a_new_server_key(tmp_path: Path) -> None:
    server = start_ftmock(tmp_path / "stock", extra_args=["--no-csr", "--identity-cert-days", "30",
                                                          "--identity-renew-days", "10"])
    try:
        org = new_org(server)
        reg = register(server, tmp_path, org, name="stock", csr=False)
        _restart(server, "--no-csr", "--identity-cert-days", "60", "--identity-renew-days", "40")
        renewed = reg.client.get(f"/consumers/{reg.uuid}").json()["idCert"]
        assert renewed["key"] and "PRIVATE KEY" in renewed["key"]  # the new key, to the consumer itself
        new = _cert(renewed["cert"])
        assert public_key_der(new) != public_key_der(_cert(reg.dto["idCert"]["cert"]))
        key_path, cert_path = tmp_path / "new-key.pem", tmp_path / "new-cert.pem"
        key_path.write_text(renewed["key"])
        cert_path.write_text(renewed["cert"])
        fresh = Client(server, cert=(str(cert_path), str(key_path)))
        # Used once, the new certificate's key is never sent again.
        assert fresh.get(f"/consumers/{reg.uuid}").json()["idCert"]["key"] is None
    finally:
        server.stop()


def test_a_renewal_window_as_long_as_the_validity_is_refused(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "ftmock", "serve", "--data-dir", str(tmp_path / "d"),
                          "--listen", "127.0.0.1:0", "--identity-cert-days", "30", "--identity-renew-days", "30"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 64
    assert "--identity-renew-days" in out.stderr and "--identity-cert-days (30)" in out.stderr
