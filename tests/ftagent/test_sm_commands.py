"""subscription-manager's commands an admin reaches for, as ftagent has them, against ftmock:
release (listed from the CDN's listings, pinning ``$releasever`` in the repository file),
service-level, syspurpose, autoheal, environments, register --environments, owners/orgs."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from tests.conftest import FtmockServer
from tests.dnfkit import CONTENT_LABEL, CONTENT_PATH, RELEASES, add_test_product, cdn_url, dnf_lists
from tests.kit.guest import Guest, cli_guest
from tests.kit.orgs import new_org, org_user


def _consumer(guest: Guest) -> dict[str, object]:
    r = guest.admin_api("GET", f"consumers/{guest.uuid()}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def _baseurl(guest: Guest) -> str:
    parser = configparser.RawConfigParser()
    parser.read_string(guest.repo_file.read_text())
    return parser.get(CONTENT_LABEL, "baseurl")


@pytest.fixture
def cdn_guest(tmp_path: Path, cdn_server: FtmockServer) -> Guest:
    """A registered guest whose content (the test repository, with its release listing) is on ftmock's CDN."""
    org = new_org(cdn_server)
    add_test_product(cdn_server, org)
    guest = cli_guest(tmp_path / "guest", cdn_server, org)
    guest.configure("content", baseurl=cdn_url(cdn_server))
    guest.register()
    return guest


def test_release_lists_the_cdns_releases_and_pins_the_repositories(cdn_guest: Guest, tmp_path: Path) -> None:
    g = cdn_guest
    assert g.run("release").stdout.strip() == "Release not set"
    assert g.ok("release", "--show") == {"release": None}
    assert g.ok("release", "--list") == list(RELEASES)  # read from the CDN's listing beside $releasever
    assert g.server is not None and _baseurl(g) == cdn_url(g.server) + CONTENT_PATH

    assert g.run("release", "--set", RELEASES[1]).stdout.strip() == f"Release set to: {RELEASES[1]}"
    assert _consumer(g)["releaseVer"] == {"releaseVer": RELEASES[1]}
    pinned = _baseurl(g)
    assert "$releasever" not in pinned and f"/{RELEASES[1]}/" in pinned
    # dnf reads the pinned release's repository (no --releasever can move it any more)
    listed = dnf_lists(tmp_path / "dnf", g.repo_file.parent)
    assert listed.returncode == 0, listed.stderr
    assert g.ok("release") == {"release": RELEASES[1]}
    # A refresh (overrides and release fetched anew) keeps the pin.
    g.ok("refresh")
    assert _baseurl(g) == pinned

    refused = g.run("release", "--set", "7.9")
    assert refused.exit_code == 64 and "'7.9'" in refused.stderr and "9.4" in refused.stderr
    assert _consumer(g)["releaseVer"] == {"releaseVer": RELEASES[1]}  # nothing changed

    assert g.run("release", "--unset").stdout.strip() == "Release preference has been unset"
    assert _consumer(g)["releaseVer"] == {"releaseVer": None}
    assert "$releasever" in _baseurl(g)
    assert g.run("release", "--set", "9", "--unset").exit_code == 64


def test_release_list_without_content_says_so(guest: Guest) -> None:
    guest.register()
    assert guest.ok("release", "--list") == []
    assert "No release versions available" in guest.run("release", "--list").stdout
    assert guest.run("release", "--set", "9").exit_code == 64


def _offer(guest: Guest, pid: str, **attributes: str) -> None:
    assert guest.server is not None
    guest.server.admin("product", "create", "--org", guest.org, "--id", pid, "--name", pid,
                       *[a for k, v in attributes.items() for a in ("--attribute", f"{k}={v}")])
    guest.server.admin("pool", "create", "--org", guest.org, "--product", pid)


def test_service_level_lists_sets_and_refuses_what_the_org_does_not_offer(guest: Guest) -> None:
    _offer(guest, "PREM", support_level="Premium")
    _offer(guest, "STD", support_level="Standard")
    guest.register()
    assert guest.ok("service-level", "--list") == ["Premium", "Standard"]
    assert guest.run("service-level").stdout.strip() == "Service level not set"
    assert guest.run("service-level", "--set", "premium").exit_code == 0
    assert guest.ok("service-level", "--show") == {"service-level": "premium"}
    assert _consumer(guest)["serviceLevel"] == "premium"
    refused = guest.run("service-level", "--set", "Gold")
    assert refused.exit_code == 64 and "'Gold'" in refused.stderr and "Premium, Standard" in refused.stderr
    assert _consumer(guest)["serviceLevel"] == "premium"
    assert guest.run("service-level", "--unset").exit_code == 0
    assert _consumer(guest)["serviceLevel"] == ""
    assert guest.run("service-level", "--list", "--unset").exit_code == 64


def test_syspurpose_sets_each_attribute_on_the_server(guest: Guest) -> None:
    guest.register()
    for name, value, field, stored in (
            ("role", "Red Hat Enterprise Linux Server", "role", "Red Hat Enterprise Linux Server"),
            ("usage", "Production", "usage", "Production"),
            ("service-type", "L1-L3", "serviceType", "L1-L3"),
            ("addons", "ADDON1,ADDON2", "addOns", ["ADDON1", "ADDON2"])):
        result = guest.run("syspurpose", name, "--set", value)
        assert result.exit_code == 0, result.stderr
        assert _consumer(guest)[field] == stored
        assert guest.ok("syspurpose", name) == {name: stored}
    assert guest.ok("syspurpose")["addons"] == ["ADDON1", "ADDON2"]
    assert "Role: Red Hat Enterprise Linux Server" in guest.run("syspurpose").stdout
    assert guest.run("syspurpose", "addons", "--set", "ADDON3", "--set", "ADDON4").exit_code == 0
    assert _consumer(guest)["addOns"] == ["ADDON3", "ADDON4"]
    for name, field in (("role", "role"), ("addons", "addOns")):
        assert guest.run("syspurpose", name, "--unset").exit_code == 0
        assert _consumer(guest)[field] in ("", [])
    assert guest.run("syspurpose", "role", "--set", "a", "--set", "b").exit_code == 64


def test_autoheal_is_enabled_and_disabled_on_the_server(guest: Guest) -> None:
    guest.register()
    assert guest.ok("autoheal") == {"autoheal": True}
    assert guest.run("autoheal", "--disable").stdout.strip() == "Auto-attach disabled."
    assert _consumer(guest)["autoheal"] is False
    assert guest.ok("autoheal", "--show") == {"autoheal": False}
    guest.ok("autoheal", "--enable")
    assert _consumer(guest)["autoheal"] is True
    assert guest.run("autoheal", "--enable", "--disable").exit_code == 64


def _environment(guest: Guest, name: str) -> str:
    r = guest.admin_api("POST", f"owners/{guest.org}/environments",
                        json={"id": f"{name}-{guest.org}", "name": name, "description": f"{name} systems"})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def test_environments_and_registering_into_them(guest: Guest) -> None:
    assert guest.server is not None
    dev, prod = _environment(guest, "Dev"), _environment(guest, "Prod")
    user, password = org_user(guest.server, guest.org)
    listed = guest.ok("environments", "--list", "--org", guest.org, "--username", user, "--password", password)
    assert [e["name"] for e in listed] == ["Dev", "Prod"]
    refused = guest.run("register", "--org", guest.org, "--username", user, "--password", password,
                        "--environments", "Dev,Staging")
    assert refused.exit_code == 64 and "'Staging'" in refused.stderr and "Dev, Prod" in refused.stderr
    assert not guest.id_dir.exists() or not any(guest.id_dir.iterdir())
    guest.register("--environments", f"Prod,{dev}")  # names or ids, in priority order
    consumer = _consumer(guest)
    assert [e["id"] for e in consumer["environments"]] == [prod, dev]  # type: ignore[index, union-attr]
    assert "Name:        Dev" in guest.run("environments").stdout  # a registered system lists its org's
    assert guest.run("environments", "--org", guest.org).exit_code == 64


def test_owners_and_orgs_list_what_a_user_may_register_to(guest: Guest) -> None:
    assert guest.server is not None
    user, password = org_user(guest.server, guest.org)
    for command in ("owners", "orgs"):
        orgs = guest.ok(command, "--username", user, "--password", password)
        assert [o["key"] for o in orgs] == [guest.org]
    assert f"Key:  {guest.org}" in guest.run("orgs", "--username", user, "--password", password).stdout
    wrong = guest.run("owners", "--username", user, "--password", "wrong")
    assert wrong.exit_code == 64 and "Invalid Credentials" in wrong.stderr
    admin_orgs = guest.ok("orgs", "--username", "admin", "--password", guest.server.admin_password)
    assert guest.org in [o["key"] for o in admin_orgs]
