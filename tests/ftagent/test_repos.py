"""The repository file and `ftagent repos`, against ftmock in an SCA org and an entitlement-mode org."""

from __future__ import annotations

import configparser
import json
import os
from pathlib import Path
from typing import Any

import pytest

from ftagent.agent import Agent
from ftagent.config import load_config
from ftagent.repos import RepoManager
from tests.conftest import FtmockServer
from tests.kit.guest import Guest

BASEOS = "/content/dist/el9/$releasever/$basearch/baseos/os"
APPSTREAM = "/content/dist/el9/$releasever/$basearch/appstream/os"


def add_content(server: FtmockServer, org: str, pid: str, sets: dict[str, str], pool: bool = True) -> str | None:
    """A product with content sets (label -> path), and a pool of it unless ``pool`` is false; the pool's id."""
    server.admin("product", "create", "--org", org, "--id", pid, "--name", f"Product {pid}",
                 *[a for label, path in sets.items() for a in ("--content", f"{label}={path}")])
    if not pool:
        return None
    return str(json.loads(server.admin("pool", "create", "--org", org, "--product", pid))["id"])


def repo_file(guest: Guest) -> Path:
    return guest.repo_file


def sections(guest: Guest) -> dict[str, dict[str, str]]:
    parser = configparser.RawConfigParser()
    parser.read_string(repo_file(guest).read_text())
    return {s: dict(parser.items(s)) for s in parser.sections()}


def test_registration_writes_the_repository_file(guest: Guest) -> None:
    add_content(guest.server, guest.org, "69", {"el9-baseos": BASEOS, "el9-appstream": APPSTREAM})
    data = guest.register()
    assert data["content_access_mode"] == "org_environment"
    [serial] = data["entitlement_serials"]
    repos = sections(guest)
    assert set(repos) == {"el9-baseos", "el9-appstream"}
    base = repos["el9-baseos"]
    assert base["baseurl"] == "https://cdn.redhat.com" + BASEOS
    assert base["enabled"] == "1" and base["sslverify"] == "1" and base["gpgcheck"] == "0"
    assert base["sslclientcert"] == str(guest.ent_dir / f"{serial}.pem")
    assert base["sslclientkey"] == str(guest.ent_dir / f"{serial}-key.pem")
    assert base["sslcacert"] == str(guest.server.ca_path)
    assert base["metadata_expire"] == "86400"
    for repo in repos.values():  # every file a section names exists
        assert Path(repo["sslclientcert"]).is_file() and Path(repo["sslclientkey"]).is_file()
    assert oct(repo_file(guest).stat().st_mode & 0o777) == "0o644"


def test_checkin_rewrites_nothing_unless_needed(guest: Guest) -> None:
    add_content(guest.server, guest.org, "69", {"el9-baseos": BASEOS})
    guest.register()
    path = repo_file(guest)
    before = path.stat()
    text = path.read_text()
    result = guest.ok("checkin")
    assert result["requests"] == 2  # no extra request for overrides when nothing changed
    # Not rewritten: a rewrite renames a new file into place (another inode), whatever the clock says.
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # Deleted by hand: back at the next check-in. Edited by hand: back at the next refresh.
    path.unlink()
    guest.ok("checkin")
    assert path.read_text() == text
    path.write_text(text.replace("enabled = 1", "enabled = 0"))
    guest.ok("refresh")
    assert path.read_text() == text


def test_new_content_replaces_the_certificate_and_the_file_follows(guest: Guest) -> None:
    add_content(guest.server, guest.org, "69", {"el9-baseos": BASEOS})
    [old] = guest.register()["entitlement_serials"]
    add_content(guest.server, guest.org, "70", {"el9-appstream": APPSTREAM})
    result = guest.ok("checkin")
    [new] = result["entitlements"]["added"]
    assert result["entitlements"]["removed"] == [old]
    repos = sections(guest)
    assert set(repos) == {"el9-baseos", "el9-appstream"}
    assert {r["sslclientcert"] for r in repos.values()} == {str(guest.ent_dir / f"{new}.pem")}
    assert not (guest.ent_dir / f"{old}.pem").exists()


def test_repos_list_enable_disable(guest: Guest) -> None:
    add_content(guest.server, guest.org, "69", {"el9-baseos": BASEOS, "el9-appstream": APPSTREAM,
                                                 "el9-baseos-debug": "/content/dist/el9/debug"})
    uuid = guest.register()["uuid"]
    listed = guest.ok("repos", "--list")["repositories"]
    assert [(r["label"], r["enabled"]) for r in listed] == [
        ("el9-appstream", True), ("el9-baseos", True), ("el9-baseos-debug", True)]
    res = guest.run("repos", "--list")
    assert res.exit_code == 0 and "Repo ID:   el9-baseos" in res.stdout and str(repo_file(guest)) in res.stdout

    out = guest.ok("repos", "--disable", "el9-baseos*")
    assert out == {"enabled": [], "disabled": ["el9-baseos", "el9-baseos-debug"]}
    repos = sections(guest)
    assert repos["el9-baseos"]["enabled"] == "0" and repos["el9-appstream"]["enabled"] == "1"
    overrides = guest.admin_api("GET", f"consumers/{uuid}/content_overrides").json()
    assert sorted((o["contentLabel"], o["value"]) for o in overrides) == [("el9-baseos", "0"), ("el9-baseos-debug", "0")]
    assert [r["label"] for r in guest.ok("repos", "--list-disabled")["repositories"]] == [
        "el9-baseos", "el9-baseos-debug"]
    assert [r["label"] for r in guest.ok("repos", "--list-enabled")["repositories"]] == ["el9-appstream"]
    # --disable applies first: everything off but one.
    out = guest.ok("repos", "--disable", "*", "--enable", "el9-baseos")
    assert out["enabled"] == ["el9-baseos"] and out["disabled"] == ["el9-appstream", "el9-baseos-debug"]
    assert {k: v["enabled"] for k, v in sections(guest).items()} == {
        "el9-appstream": "0", "el9-baseos": "1", "el9-baseos-debug": "0"}

    # An unknown label: exit 64 naming it, and nothing changed (server nor file).
    text = repo_file(guest).read_text()
    res = guest.run("repos", "--enable", "el9-appstream", "--disable", "no-such-repo")
    assert res.exit_code == 64 and "'no-such-repo'" in res.stderr
    assert repo_file(guest).read_text() == text
    after = guest.admin_api("GET", f"consumers/{uuid}/content_overrides").json()
    assert next(o for o in after if o["contentLabel"] == "el9-appstream")["value"] == "0"

    # The overrides survive a refresh and a reinstall of the file.
    repo_file(guest).unlink()
    guest.ok("refresh")
    assert sections(guest)["el9-appstream"]["enabled"] == "0"


def test_overrides_set_elsewhere_arrive_with_refresh(guest: Guest) -> None:
    add_content(guest.server, guest.org, "69", {"el9-baseos": BASEOS})
    uuid = guest.register()["uuid"]
    r = guest.admin_api("PUT", f"consumers/{uuid}/content_overrides",
                        json=[{"contentLabel": "el9-baseos", "name": "priority", "value": "10"},
                              {"contentLabel": "el9-baseos", "name": "gpgcheck", "value": "1"}])
    assert r.status_code == 200
    guest.ok("refresh")
    base = sections(guest)["el9-baseos"]
    assert base["priority"] == "10" and base["gpgcheck"] == "1"
    # One line per override; a known option is replaced where it stands.
    text = repo_file(guest).read_text()
    assert text.count("gpgcheck") == 1 and text.index("gpgcheck") < text.index("sslverify")


def test_manage_repos_no_leaves_no_file(guest: Guest) -> None:
    add_content(guest.server, guest.org, "69", {"el9-baseos": BASEOS})
    guest.register()
    assert repo_file(guest).exists()
    guest.configure("content", manage_repos="no")
    guest.ok("refresh")
    assert not repo_file(guest).exists()
    assert guest.ok("repos", "--list")["repositories"]  # still listed, from the certificates


def test_unregister_removes_the_file_then_the_certificates(guest: Guest) -> None:
    add_content(guest.server, guest.org, "69", {"el9-baseos": BASEOS})
    guest.register()
    guest.ok("unregister")
    assert not repo_file(guest).exists()
    assert not list(guest.ent_dir.glob("*.pem"))


@pytest.mark.content_access("entitlement")
def test_entitlement_mode_repositories_come_from_entitlement_certificates(guest: Guest) -> None:
    pool = add_content(guest.server, guest.org, "100", {"os-rpms": "/content/os"})
    assert pool is not None
    data = guest.register()
    assert data["entitlement_serials"] == [] and data["content_access_mode"] == "entitlement"
    assert sections(guest) == {}  # the file is there, with no repository
    guest.ok("attach", "--pool", pool)
    [serial] = guest.ok("refresh")["serials"]
    assert sections(guest)["os-rpms"]["sslclientcert"] == str(guest.ent_dir / f"{serial}.pem")


def test_sca_status_attach_and_list(guest: Guest) -> None:
    add_content(guest.server, guest.org, "100", {"os-rpms": "/content/os"})
    res = guest.run("register", "--org", guest.org, "--username", "admin", "--password",
                    guest.server.admin_password, "--auto-attach")
    assert res.exit_code == 0, res.output
    assert "Simple Content Access" in res.stdout and "Nothing attached" in res.stdout
    res = guest.run("attach", "--auto")
    assert res.exit_code == 0 and "Simple Content Access" in res.stdout
    res = guest.run("status")
    assert res.exit_code == 0 and "Simple Content Access" in res.stdout
    assert guest.ok("status")["content_access_mode"] == "org_environment"
    consumed = guest.ok("list", "--consumed")
    [cert] = consumed
    assert cert["type"] == "OrgLevel" and [c["label"] for c in cert["content"]] == ["os-rpms"]
    res = guest.run("list", "--consumed")
    assert "Content access (Simple Content Access" in res.stdout and "os-rpms  /content/os" in res.stdout


def test_writes_name_only_existing_files(guest: Guest, tmp_path: Path) -> None:
    """Certificates first, repository file last; on removal the reverse: watched at each write."""
    add_content(guest.server, guest.org, "69", {"el9-baseos": BASEOS})
    guest.register()
    seen: list[str] = []

    class Watching(RepoManager):
        def write(self, repos: Any) -> bool:
            for repo in repos:
                assert Path(repo.options["sslclientcert"]).is_file() and Path(repo.options["sslclientkey"]).is_file()
            seen.append("write")
            return super().write(repos)

        def remove(self) -> bool:
            assert list(self.certificates.directory.glob("*.pem"))  # the certificates are still there
            seen.append("remove")
            return super().remove()

    agent = Agent(load_config(guest.conf))
    agent.repos = Watching(agent.config)
    agent.entitlements.listener = agent.repos
    add_content(guest.server, guest.org, "70", {"el9-appstream": APPSTREAM})
    assert agent.checkin().refresh.removed  # a new certificate replaced the old one
    agent.unregister()
    agent.close()
    assert seen == ["write", "remove"]
    assert not repo_file(guest).exists()


def test_no_repository_directory_no_file(guest: Guest) -> None:
    """Like subscription-manager on a system without yum or dnf: nothing is created."""
    (guest.root / "yum.repos.d").rmdir()
    add_content(guest.server, guest.org, "69", {"el9-baseos": BASEOS})
    guest.register()
    assert not (guest.root / "yum.repos.d").exists()
    assert json.loads(guest.run("repos", "--json").stdout)["repositories"]
    assert os.listdir(guest.root)
