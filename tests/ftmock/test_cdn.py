"""ftmock as the content delivery network: files for certificates that grant them, over mutual TLS."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import FtmockServer
from tests.ftmock.conftest import Registered, admin_client, make_key_and_csr, register
from tests.kit.ftmock import start_ftmock
from tests.kit.orgs import ENTITLEMENT, new_org

BASEOS = "/content/dist/el9/$releasever/$basearch/baseos/os"
REPOMD = "content/dist/el9/9.4/x86_64/baseos/os/repodata/repomd.xml"
PACKAGE = "content/dist/el9/9.4/x86_64/baseos/os/Packages/hello-1.0-1.noarch.rpm"


@pytest.fixture(scope="module")
def cdn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtmockServer]:
    """A server with a content directory: a repodata file, a 'package' and an ungranted tree."""
    root = tmp_path_factory.mktemp("cdn")
    content = root / "content-dir"
    for rel, data in ((REPOMD, b"<repomd/>\n"), (PACKAGE, bytes(range(256)) * 1024),
                      ("content/dist/el9/9.4/x86_64/appstream/os/repodata/repomd.xml", b"<appstream/>")):
        (content / rel).parent.mkdir(parents=True, exist_ok=True)
        (content / rel).write_bytes(data)
    server = start_ftmock(root, extra_args=["--content-dir", str(content)])
    yield server
    server.stop()


def _product(server: FtmockServer, org: str, path: str = BASEOS) -> str:
    admin = admin_client(server)
    assert admin.post(f"/owners/{org}/products", json={"id": "69", "name": "OS", "productContent": [
        {"content": {"label": "el9-baseos", "contentUrl": path}, "enabled": True}]}).status_code == 200
    r = admin.post(f"/owners/{org}/pools", json={"productId": "69", "quantity": 5})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _cert_files(reg: Registered, tmp: Path, name: str) -> tuple[str, str]:
    """The consumer's (only) content certificate and key, written as a guest keeps them."""
    [item] = reg.client.get(f"/consumers/{reg.uuid}/certificates").json()
    cert, key = tmp / f"{name}.pem", tmp / f"{name}-key.pem"
    cert.write_text(item["cert"])
    key.write_text(item["key"])
    return str(cert), str(key)


def _get(server: FtmockServer, rel: str, cert: tuple[str, str] | None, **kw: object) -> requests.Response:
    url = (server.data_dir / "cdn-url").read_text().strip() + "/" + rel
    return requests.get(url, cert=cert, verify=str(server.ca_path), timeout=30, **kw)  # type: ignore[arg-type]


def test_content_for_a_granting_certificate_only(cdn: FtmockServer, tmp_path: Path) -> None:
    assert (cdn.data_dir / "cdn-url").read_text().strip() == cdn.url.rsplit("/candlepin", 1)[0]
    org = new_org(cdn)
    _product(cdn, org)
    reg = register(cdn, tmp_path, org)
    cert = _cert_files(reg, tmp_path, "access")
    r = _get(cdn, REPOMD, cert)
    assert r.status_code == 200 and r.content == b"<repomd/>\n"
    assert r.headers["Content-Type"] == "application/xml" and "Last-Modified" in r.headers
    assert _get(cdn, "content/dist/el9/9.4/x86_64/appstream/os/repodata/repomd.xml", cert).status_code == 403
    assert _get(cdn, "content/dist/el9/9.4/x86_64/baseos/os/repodata/missing.xml", cert).status_code == 404
    assert _get(cdn, "content/dist/el9/9.4/x86_64/baseos/os/repodata", cert).status_code == 404  # a directory
    assert _get(cdn, "content/dist/el9/9.4/x86_64/baseos/os/../../appstream/os/repodata/repomd.xml",
                cert).status_code == 403
    assert _get(cdn, REPOMD, None).status_code == 403  # no certificate
    assert _get(cdn, REPOMD, (reg.cert_path, reg.key_path)).status_code == 403  # an identity grants nothing
    # The API is where it was.
    assert requests.get(cdn.url + "/status", verify=str(cdn.ca_path), timeout=30).status_code == 200
    # An org without the product: its certificate grants nothing here.
    other = register(cdn, tmp_path, new_org(cdn))
    assert _get(cdn, REPOMD, _cert_files(other, tmp_path, "other")).status_code == 403


def test_ranges_and_conditional_requests(cdn: FtmockServer, tmp_path: Path) -> None:
    org = new_org(cdn)
    _product(cdn, org)
    cert = _cert_files(register(cdn, tmp_path, org), tmp_path, "access")
    whole = (cdn.data_dir.parent / "content-dir" / PACKAGE).read_bytes()
    r = _get(cdn, PACKAGE, cert, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == whole[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(whole)}"
    assert _get(cdn, PACKAGE, cert, headers={"Range": "bytes=-5"}).content == whole[-5:]
    assert _get(cdn, PACKAGE, cert, headers={"Range": f"bytes={len(whole) - 3}-"}).content == whole[-3:]
    r = _get(cdn, PACKAGE, cert, headers={"Range": f"bytes={len(whole)}-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(whole)}"
    r = _get(cdn, PACKAGE, cert)
    assert r.status_code == 200 and r.content == whole
    modified = r.headers["Last-Modified"]
    assert _get(cdn, PACKAGE, cert, headers={"If-Modified-Since": modified}).status_code == 304
    assert _get(cdn, PACKAGE, cert, headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200
    url = (cdn.data_dir / "cdn-url").read_text().strip() + "/" + PACKAGE
    head = requests.head(url, cert=cert, verify=str(cdn.ca_path), timeout=30)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(whole) and not head.content
    assert requests.post(url, cert=cert, verify=str(cdn.ca_path), timeout=30).status_code == 405


def test_revoked_certificates_are_refused(cdn: FtmockServer, tmp_path: Path) -> None:
    org = new_org(cdn)
    _product(cdn, org)
    reg = register(cdn, tmp_path, org)
    old = _cert_files(reg, tmp_path, "before")
    assert _get(cdn, REPOMD, old).status_code == 200
    # A new identity: the content access certificate is replaced, the old one refused at once.
    key_pem, csr = make_key_and_csr("again")
    r = reg.client.post(f"/consumers/{reg.uuid}", json={"csr": csr})
    assert r.status_code == 200
    cert, key = tmp_path / "again.pem", tmp_path / "again-key.pem"
    cert.write_text(r.json()["idCert"]["cert"])
    key.write_text(key_pem)
    again = Registered(r.json(), str(cert), str(key), type(reg.client)(cdn, cert=(str(cert), str(key))))
    new = _cert_files(again, tmp_path, "after")
    assert _get(cdn, REPOMD, old).status_code == 403
    assert _get(cdn, REPOMD, new).status_code == 200
    # The consumer deleted: refused too.
    assert admin_client(cdn).delete(f"/consumers/{reg.uuid}").status_code == 204
    assert _get(cdn, REPOMD, new).status_code == 403


def test_entitlement_certificates_grant_their_content(cdn: FtmockServer, tmp_path: Path) -> None:
    org = new_org(cdn, mode=ENTITLEMENT)
    pool = _product(cdn, org)
    reg = register(cdn, tmp_path, org)
    r = reg.client.post(f"/consumers/{reg.uuid}/entitlements", params={"pool": pool})
    assert r.status_code == 200
    ent = _cert_files(reg, tmp_path, "ent")
    assert _get(cdn, REPOMD, ent).status_code == 200
    assert reg.client.delete(f"/consumers/{reg.uuid}/entitlements").status_code == 200
    assert _get(cdn, REPOMD, ent).status_code == 403  # unbound: its certificate is gone


def test_no_content_dir_no_cdn_url(ftmock: FtmockServer) -> None:
    assert not (ftmock.data_dir / "cdn-url").exists()
    r = requests.get(ftmock.url.rsplit("/candlepin", 1)[0] + "/content/x", verify=str(ftmock.ca_path), timeout=30)
    assert r.status_code == 404
    assert os.access(ftmock.data_dir / "url", os.R_OK)
