"""A failover in vCenter, and dnf goes on working in the guest: the successor's certificate, the VM's overrides.

The simulator fails the FT VM over; ftreport's daemon reports it; the guest's check-in gets the 308
and swaps its identity. Its repository file then names the successor's content access certificate
(Simple Content Access org), Debian's dnf still lists and downloads the package from ftmock's
content server, the repository the guest disabled stays disabled (the successor inherited the
override), and the predecessor's certificate is refused by the content server (403).
"""

from __future__ import annotations

import shutil
from pathlib import Path

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
from tests.e2e.conftest import Admin, esx_reporter, vm_guest
from tests.ftreport.conftest import Vcsim
from tests.kit.orgs import SCA, new_org
from tests.kit.wait import wait_until

DEBUG_LABEL = "ftagent-test-debug-rpms"


def test_dnf_keeps_working_across_a_vcsim_failover(vcsim: Vcsim, cdn_server: FtmockServer,
                                                   rpm_repo: RpmRepo, tmp_path: Path,
                                                   isolated_reporter_env: None) -> None:
    server = cdn_server
    admin = Admin(server)
    org = new_org(server)
    assert admin.call("GET", f"/owners/{org}")["contentAccessMode"] == SCA
    add_test_product(server, org, "ftagent-test", f"{DEBUG_LABEL}=/content/dist/ftagent-test-debug")
    group = vcsim.state()["ft"][0]
    primary, backup = group["instances"]
    with esx_reporter(tmp_path, server, org, vcsim):
        wait_until(lambda: len(admin.ft_consumers(org)) == 2, 30, "the first report")
        guest = vm_guest(tmp_path / "guest", server, primary["uuid"])
        guest.configure("content", baseurl=cdn_url(server))
        reposdir = guest.repo_file.parent
        reg = guest.json("register", "--org", org, "--username", "admin", "--password", server.admin_password,
                         "--auto-attach")
        assert reg["uuid"] == admin.ft_consumers(org)[primary["instanceUuid"].lower()]["uuid"]
        assert reg["content_access_mode"] == SCA
        [old_serial] = reg["entitlement_serials"]
        guest.ftagent("repos", "--disable", DEBUG_LABEL, check=True)
        before = dnf_lists(tmp_path / "dnf-before", reposdir)
        assert before.returncode == 0 and PACKAGE in before.stdout, before.stderr
        # What the predecessor instance had on its disk, kept aside to ask the CDN with it later.
        kept = tmp_path / "predecessor"
        kept.mkdir()
        for name in (f"{old_serial}.pem", f"{old_serial}-key.pem"):
            shutil.copy(guest.ent_dir / name, kept / name)

        after = vcsim.failover()["ft"][0]["instances"]
        assert after[0]["instanceUuid"] == backup["instanceUuid"]

        def swapped() -> bool:
            guest.ftagent("checkin", check=True)
            return bool(guest.json("identity")["uuid"] != reg["uuid"])

        wait_until(swapped, 30, "the guest's identity swap")
        successor = admin.ft_consumers(org)[backup["instanceUuid"].lower()]["uuid"]
        assert guest.json("identity")["uuid"] == successor
        text = (reposdir / "redhat.repo").read_text()
        [new_serial] = guest.entitlement_serials()
        assert new_serial != old_serial
        assert f"entitlements/{new_serial}.pem" in text and f"entitlements/{old_serial}.pem" not in text
        assert not (guest.ent_dir / f"{old_serial}.pem").exists()
        repos = {r["label"]: r["enabled"] for r in guest.json("repos", "--list")["repositories"]}
        assert repos == {CONTENT_LABEL: True, DEBUG_LABEL: False}  # the VM's choice survived the failover

        listed = dnf_lists(tmp_path / "dnf-after", reposdir)
        assert listed.returncode == 0 and PACKAGE in listed.stdout, listed.stderr
        done, rpm = dnf_download(tmp_path / "dnf-download", reposdir)
        assert done.returncode == 0, done.stderr
        assert rpm.read_bytes() == rpm_repo.rpm.read_bytes()
        # The predecessor's certificate: revoked at the failover, refused by the content server.
        old = borrow(reposdir / "redhat.repo", kept / f"{old_serial}.pem", kept / f"{old_serial}-key.pem",
                     tmp_path / "old.repos.d")
        refused = dnf_lists(tmp_path / "dnf-old", old)
        assert refused.returncode != 0 and "403" in refused.stderr
