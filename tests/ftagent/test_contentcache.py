"""The certificates' content sets kept between check-ins (``content-sets.json``), against ftmock.

A check-in with nothing new builds the repository file from the cache without parsing a certificate
(the installed command, profiled with ``PYTHONPROFILEIMPORTTIME``, never loads ``cryptography``), and
whatever makes the cache wrong (another certificate under the same name, another CA, a torn or edited
cache file) makes the certificate be parsed again: the repository file is always the certificates'.
"""

from __future__ import annotations

import configparser
import json
import shutil
from pathlib import Path

import pytest

from ftagent.config import load_config
from ftagent.contentcache import CACHE_NAME
from ftagent.repos import RepoManager
from tests.ftagent.test_repos import APPSTREAM, BASEOS, add_content
from tests.kit.ca import CertAuthority
from tests.kit.guest import Guest, cli_guest
from tests.kit.orgs import new_org


def cache_file(guest: Guest) -> Path:
    return guest.id_dir / CACHE_NAME


def labels(guest: Guest) -> set[str]:
    parser = configparser.RawConfigParser()
    parser.read_string(guest.repo_file.read_text())
    return set(parser.sections())


def quiet_checkin(guest: Guest) -> bool:
    """``ftagent checkin`` as installed; whether it parsed a certificate (loaded cryptography)."""
    proc = guest.ftagent("checkin", env={"PYTHONPROFILEIMPORTTIME": "1"}, check=True)
    return "cryptography" in proc.stderr


def test_a_quiet_checkin_parses_no_certificate_and_restores_a_deleted_file(guest: Guest) -> None:
    add_content(guest.server, guest.org, "69", {"el9-baseos": BASEOS, "el9-appstream": APPSTREAM})
    guest.register()
    text = guest.repo_file.read_text()
    assert cache_file(guest).is_file() and oct(cache_file(guest).stat().st_mode & 0o777) == "0o644"
    cached = cache_file(guest).read_bytes()
    assert not quiet_checkin(guest)
    assert guest.repo_file.read_text() == text
    assert cache_file(guest).read_bytes() == cached  # a hit writes nothing
    guest.repo_file.unlink()
    assert not quiet_checkin(guest)
    assert guest.repo_file.read_text() == text
    # Without the cache the certificate is parsed (what the profile above would show), and kept again.
    cache_file(guest).unlink()
    assert quiet_checkin(guest)
    assert guest.repo_file.read_text() == text and cache_file(guest).read_bytes() == cached


@pytest.mark.parametrize("damage", ["garbage", "truncated", "edited", "other format"])
def test_a_damaged_cache_is_parsed_again(guest: Guest, damage: str) -> None:
    add_content(guest.server, guest.org, "69", {"el9-baseos": BASEOS})
    guest.register()
    text = guest.repo_file.read_text()
    cached = cache_file(guest).read_bytes()
    head, _, body = cached.partition(b"\n")
    if damage == "garbage":
        cache_file(guest).write_bytes(b"\x00\xff not json")
    elif damage == "truncated":
        cache_file(guest).write_bytes(cached[: len(cached) // 2])
    elif damage == "edited":  # still JSON, the content set moved elsewhere: the digest says so
        edited = body.replace(b"/baseos/", b"/evil/")
        assert edited != body
        cache_file(guest).write_bytes(head + b"\n" + edited)
    else:
        header = json.loads(head)
        cache_file(guest).write_bytes(json.dumps(dict(header, format=header["format"] + 1)).encode() + b"\n" + body)
    assert quiet_checkin(guest)
    assert guest.repo_file.read_text() == text
    assert cache_file(guest).read_bytes() == cached
    assert not quiet_checkin(guest)


def test_another_certificate_under_the_same_name_is_parsed_again(guest: Guest, tmp_path: Path) -> None:
    add_content(guest.server, guest.org, "69", {"el9-baseos": BASEOS})
    [serial] = guest.register()["entitlement_serials"]
    other = cli_guest(tmp_path / "other", guest.server, new_org(guest.server))
    add_content(guest.server, other.org, "70", {"el9-appstream": APPSTREAM})
    [other_serial] = other.register()["entitlement_serials"]
    assert labels(guest) == {"el9-baseos"}
    # The server still lists the same serial, so the check-in fetches nothing: only the file changed.
    for suffix in (".pem", "-key.pem"):
        shutil.copyfile(other.ent_dir / f"{other_serial}{suffix}", guest.ent_dir / f"{serial}{suffix}")
    assert quiet_checkin(guest)
    assert labels(guest) == {"el9-appstream"}


def test_another_ca_checks_the_signatures_again(guest: Guest, tmp_path: Path) -> None:
    add_content(guest.server, guest.org, "69", {"el9-baseos": BASEOS})
    guest.register()
    assert [r.label for r in RepoManager(load_config(guest.conf)).repos()] == ["el9-baseos"]
    stranger = tmp_path / "stranger-ca.pem"
    CertAuthority().tls.cert_pem.write_to_path(str(stranger))
    guest.configure("server", ca_cert=stranger)
    assert RepoManager(load_config(guest.conf)).repos() == []  # not signed by that CA: left out
    guest.configure("server", ca_cert=guest.server.ca_path)
    assert [r.label for r in RepoManager(load_config(guest.conf)).repos()] == ["el9-baseos"]


def test_unregister_removes_the_cache(guest: Guest) -> None:
    add_content(guest.server, guest.org, "69", {"el9-baseos": BASEOS})
    guest.register()
    assert cache_file(guest).is_file()
    guest.ok("unregister")
    assert not cache_file(guest).exists()
