"""The RPM: built from a source tarball of this tree with rpmbuild, then inspected as an operator's
rpm would see it (files, modes, %config flags, requirements, scriptlets) and run from its payload."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.packaging.conftest import PACKAGING, ROOT

SPEC = PACKAGING / "rpm" / "ftagent.spec"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
SITE = f"/usr/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
PACKAGES = ("python3-ftagent", "ftagent", "ftreport", "ftmock")


@dataclass(frozen=True)
class Built:
    rpms: dict[str, Path]  # package name -> file


def _source_files() -> list[str]:
    """The tree as a developer has it: tracked and new files, without ignored ones."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True, timeout=60).stdout.decode()
    return sorted(f for f in out.split("\0") if f and (ROOT / f).is_file())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    top = tmp_path_factory.mktemp("rpmbuild")
    (top / "SOURCES").mkdir()
    prefix = f"ftagent-{VERSION}"
    with tarfile.open(top / "SOURCES" / f"{prefix}.tar.gz", "w:gz") as tar:
        for name in _source_files():
            tar.add(ROOT / name, arcname=f"{prefix}/{name}", recursive=False)
    proc = subprocess.run(
        ["rpmbuild", "--define", f"_topdir {top}", "--define", f"__python3 {sys.executable}",
         "--define", "_tmppath %{_topdir}/tmp", "--nodeps", "-bb", str(SPEC)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rpms = {}
    for path in (top / "RPMS" / "noarch").glob("*.rpm"):
        name = _q(path, "%{NAME}")
        rpms[name] = path
    return Built(rpms)


def _q(rpm: Path, fmt: str) -> str:
    return subprocess.run(["rpm", "-qp", "--qf", fmt, str(rpm)], capture_output=True, text=True, check=True,
                          timeout=60).stdout


def _rpm(rpm: Path, *args: str) -> list[str]:
    out = subprocess.run(["rpm", "-qp", *args, str(rpm)], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def _files(rpm: Path) -> dict[str, tuple[str, str, str]]:
    """path -> (permissions, file flags, owner) from rpm's own headers."""
    out = _q(rpm, "[%{FILENAMES}\t%{FILEMODES:perms}\t%{FILEFLAGS:fflags}\t%{FILEUSERNAME}\n]")
    files = {}
    for line in out.splitlines():
        path, perms, flags, owner = line.split("\t")
        files[path] = (perms, flags, owner)
    return files


def test_four_packages_with_the_project_version(built: Built) -> None:
    assert sorted(built.rpms) == sorted(PACKAGES)
    for name, path in built.rpms.items():
        assert _q(path, "%{VERSION} %{ARCH}") == f"{VERSION} noarch", name


def test_spec_version_is_the_project_version() -> None:
    assert re.search(rf"^Version:\s+{re.escape(VERSION)}$", SPEC.read_text(), re.M)


def test_files_are_split_by_role_and_owned_once(built: Built) -> None:
    lists = {name: set(_rpm(path, "-l")) for name, path in built.rpms.items()}
    lib, agent, report, mock = (lists[n] for n in PACKAGES)
    assert f"{SITE}/ftagent/__init__.py" in lib and f"{SITE}/ftagent/lease/__init__.py" in lib
    assert f"{SITE}/ftagent-{VERSION}.dist-info/METADATA" in lib
    assert not any("/ftreport/" in f or "/ftmock/" in f for f in lib), "the library is ftagent only"
    assert {"/usr/bin/ftagent", "/usr/lib/systemd/system/ftagent-heartbeat.service",
            "/usr/lib/systemd/system/ftagent-checkin.service", "/usr/lib/systemd/system/ftagent-checkin.timer",
            "/etc/cron.d/ftagent", "/etc/ftagent/ftagent.conf", "/etc/logrotate.d/ftagent",
            "/usr/share/bash-completion/completions/ftagent", "/usr/share/zsh/site-functions/_ftagent",
            "/usr/share/fish/vendor_completions.d/ftagent.fish"} <= agent
    assert {"/usr/bin/ftreport", "/usr/bin/ftreport-password", f"{SITE}/ftreport/sources/esx.py", "/usr/lib/systemd/system/ftreport.service",
            "/etc/ftreport.conf"} <= report
    assert {"/usr/bin/ftmock", f"{SITE}/ftmock/server.py", "/usr/lib/systemd/system/ftmock.service",
            "/etc/sysconfig/ftmock"} <= mock
    for page, owner in [("man8/ftagent.8", agent), ("man5/ftagent.conf.5", agent), ("man8/ftreport.8", report),
                        ("man5/ftreport.conf.5", report), ("man8/ftmock.8", mock)]:
        assert any(f.startswith(f"/usr/share/man/{page}") for f in owner), page
    names = list(PACKAGES)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = {f for f in lists[a] & lists[b] if not f.endswith("/site-packages")}
            assert shared == set(), f"{a} and {b} both own {sorted(shared)[:5]}"
    assert f"{SITE}/ftagent/__pycache__/cli.{sys.implementation.cache_tag}.pyc" in lib
    assert not any(f.endswith("RECORD") or f.endswith("direct_url.json") for f in lib)


def _requires(path: Path) -> set[str]:
    return {re.sub(r"\s+", " ", r) for r in _rpm(path, "--requires")}


def test_requirements_only_where_needed(built: Built) -> None:
    lib, agent, report, mock = (_requires(built.rpms[n]) for n in PACKAGES)
    release = _q(built.rpms["ftagent"], "%{RELEASE}")
    assert {"python3-requests", "python3-cryptography", "python3-click"} <= lib
    assert f"python3-ftagent = {VERSION}-{release}" in agent
    assert {f"python3-ftagent = {VERSION}-{release}", "python3-pyvmomi"} <= report
    assert _rpm(built.rpms["ftreport"], "--recommends") == ["python3-libvirt"]
    for name, reqs in [("python3-ftagent", lib), ("ftagent", agent), ("ftmock", mock)]:
        assert not any("pyvmomi" in r or "libvirt" in r for r in reqs), name
    assert not any("libvirt" in r for r in report), "libvirt is only recommended"
    for name in PACKAGES:
        assert not any(".venv" in r or "/work/" in r for r in _requires(built.rpms[name])), \
            f"{name} requires a path of the build machine"


def test_config_files_are_noreplace_and_secrets_private(built: Built) -> None:
    for name in PACKAGES:
        for path, (_perms, flags, _owner) in _files(built.rpms[name]).items():
            if path.startswith("/etc/") and _perms[0] == "-" and not path.endswith("README"):
                assert "c" in flags and "n" in flags, f"{path} is not %config(noreplace)"
    report = _files(built.rpms["ftreport"])
    assert report["/etc/ftreport.conf"][0] == "-rw-------"
    assert report["/etc/ftreport.d"][0] == "drwx------"
    assert _files(built.rpms["ftmock"])["/etc/sysconfig/ftmock"][0] == "-rw-------"
    assert report["/etc/sysconfig/ftreport"][0] == "-rw-------"
    assert _files(built.rpms["ftagent"])["/etc/ftagent/ftagent.conf"][0] == "-rw-r--r--"


def test_key_and_state_directories_are_private(built: Built) -> None:
    agent = _files(built.rpms["ftagent"])
    for d in ("/var/lib/ftagent", "/var/lib/ftagent/identity", "/var/lib/ftagent/entitlement"):
        assert agent[d] == ("drwx------", "", "root"), d
    assert agent["/var/log/ftagent"][0] == "drwxr-x---"
    assert _files(built.rpms["ftreport"])["/var/lib/ftreport"][0] == "drwx------"
    assert _files(built.rpms["ftmock"])["/var/lib/ftmock"][0] == "drwx------"


def test_scriptlets_enable_and_start_nothing(built: Built) -> None:
    for name in PACKAGES:
        scripts = "\n".join(_rpm(built.rpms[name], "--scripts"))
        assert not re.search(r"\benable\b|\bpreset\b|\bstart\b|\breenable\b", scripts), name
        assert "systemctl restart" not in scripts
    agent = "\n".join(_rpm(built.rpms["ftagent"], "--scripts"))
    assert "daemon-reload" in agent
    assert "restart" not in agent, "an upgrade must not restart the heartbeat (it would release the lease)"
    assert "disable --now ftagent-checkin.timer ftagent-heartbeat.service" in agent  # only on erase
    assert re.search(r'\$1" -eq 0', agent)


def test_payload_runs_the_packaged_code(built: Built, tmp_path: Path) -> None:
    root = tmp_path / "root"
    for name in PACKAGES:
        data = subprocess.run(["rpm2archive", "-"], input=built.rpms[name].read_bytes(), capture_output=True,
                              check=True, timeout=60).stdout
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(root, filter="tar")
    for prog in ("ftagent", "ftreport", "ftmock"):
        script = root / "usr" / "bin" / prog
        assert script.read_text().startswith("#!/usr/bin/python3\n")
        assert os.access(script, os.X_OK)
    site = root / SITE.lstrip("/")
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")
    which = subprocess.run([sys.executable, "-c", "import ftagent, ftreport, ftmock; "
                            "print(ftagent.__file__, ftreport.__file__, ftmock.__file__)"],
                           capture_output=True, text=True, env=env, check=True, timeout=60).stdout
    assert which.count(str(site)) == 3, which
    for prog in ("ftagent", "ftreport"):
        out = subprocess.run([sys.executable, str(root / "usr" / "bin" / prog), "--version"], capture_output=True,
                             text=True, env=env, timeout=60)
        assert out.returncode == 0 and VERSION in out.stdout, out
    out = subprocess.run([sys.executable, str(root / "usr" / "bin" / "ftmock"), "--help"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0 and "serve" in out.stdout
    # byte-compiled for the installed location, not the build root
    pyc = next((site / "ftagent" / "__pycache__").glob("cli.*.pyc"))
    assert str(tmp_path) not in pyc.read_bytes().decode("latin-1")
    assert f"{SITE}/ftagent/cli.py" in pyc.read_bytes().decode("latin-1")
