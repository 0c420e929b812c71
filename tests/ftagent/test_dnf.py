"""Debian's dnf reads and downloads through the repository file ftagent wrote, from ftmock's content server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import FtmockServer
from tests.dnfkit import (
    CONTENT_LABEL,
    PACKAGE,
    RpmRepo,
    add_test_product,
    borrow,
    cdn_url,
    dnf_download,
    dnf_lists,
)
from tests.kit.guest import Guest, cli_guest
from tests.kit.orgs import new_org, org_mode


def cdn_guest(root: Path, server: FtmockServer, org: str) -> Guest:
    guest = cli_guest(root, server, org)
    guest.configure("content", baseurl=cdn_url(server))
    return guest


def reposdir(guest: Guest) -> Path:
    return guest.repo_file.parent


def test_dnf_lists_and_downloads_with_the_content_access_certificate(
        tmp_path: Path, cdn_server: FtmockServer, rpm_repo: RpmRepo) -> None:
    org = new_org(cdn_server)
    add_test_product(cdn_server, org)
    guest = cdn_guest(tmp_path / "guest", cdn_server, org)
    guest.register()
    listed = dnf_lists(tmp_path / "dnf1", reposdir(guest))
    assert listed.returncode == 0, listed.stderr
    assert PACKAGE in listed.stdout and CONTENT_LABEL in listed.stdout
    done, rpm = dnf_download(tmp_path / "dnf2", reposdir(guest))
    assert done.returncode == 0, done.stderr
    assert rpm.read_bytes() == rpm_repo.rpm.read_bytes()

    # After --disable dnf no longer sees the repository; --enable brings it back.
    guest.ok("repos", "--disable", CONTENT_LABEL)
    gone = dnf_lists(tmp_path / "dnf3", reposdir(guest))
    assert gone.returncode != 0 and "No matching Packages" in gone.stderr
    guest.ok("repos", "--enable", "ftagent-test-*")
    assert dnf_lists(tmp_path / "dnf4", reposdir(guest)).returncode == 0


def test_a_guest_of_an_org_without_the_product_gets_403(tmp_path: Path, cdn_server: FtmockServer) -> None:
    org = new_org(cdn_server)
    add_test_product(cdn_server, org)
    entitled = cdn_guest(tmp_path / "entitled", cdn_server, org)
    entitled.register()
    outsider = cdn_guest(tmp_path / "outsider", cdn_server, new_org(cdn_server))
    [serial] = outsider.register()["entitlement_serials"]
    assert "[" + CONTENT_LABEL + "]" not in (reposdir(outsider) / "redhat.repo").read_text()
    # The same repository, asked for with the outsider's content access certificate: the CDN refuses.
    borrowed = borrow(reposdir(entitled) / "redhat.repo", outsider.ent_dir / f"{serial}.pem",
                      outsider.ent_dir / f"{serial}-key.pem", tmp_path / "borrowed.repos.d")
    refused = dnf_lists(tmp_path / "dnf", borrowed)
    assert refused.returncode != 0 and "403" in refused.stderr


@pytest.mark.content_access("entitlement")
def test_dnf_with_an_entitlement_certificate(tmp_path: Path, cdn_server: FtmockServer,
                                             request: pytest.FixtureRequest) -> None:
    import json

    org = new_org(cdn_server, mode=org_mode(request))
    add_test_product(cdn_server, org)
    guest = cdn_guest(tmp_path / "guest", cdn_server, org)
    guest.register()
    assert dnf_lists(tmp_path / "dnf1", reposdir(guest)).returncode != 0  # nothing attached yet
    pools = json.loads(cdn_server.admin("pool", "create", "--org", org, "--product", "ftagent-test"))
    guest.ok("attach", "--pool", pools["id"])
    listed = dnf_lists(tmp_path / "dnf2", reposdir(guest))
    assert listed.returncode == 0, listed.stderr
