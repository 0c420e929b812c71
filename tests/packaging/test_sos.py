"""The sos report plugin (packaging/sos/ftagent.py), run by Debian's sos 4 (package sosreport) with only
that plugin, on a host tree under a test root (sos's --sysroot): what the archive holds, and that no
password, key or lease holder id is in it.

The plugin is installed as the RPM installs it, into sos's plugin package, here in a copy of Debian's
sos put first on the path, so that the system's sos is not touched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

import ftagent
from tests.conftest import FtmockServer
from tests.kit.guest import make_guest
from tests.kit.orgs import new_org
from tests.packaging.conftest import PACKAGING

SOS_PYTHON = "/usr/bin/python3"  # Debian's sos is a module of the system's python3
SECRETS = ("vcenter-secret", "rhsm-secret", "proxy-secret", "etcd-secret", "env-secret", "encrypted-secret",
           "KEY-MATERIAL", "holder-secret", "password-key")


def _sos_package() -> Path:
    out = subprocess.run([SOS_PYTHON, "-c", "import sos, os; print(os.path.dirname(sos.__file__))"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, "Debian's sosreport is missing: scripts/install-deps.sh all installs it"
    return Path(out.stdout.strip())


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


@pytest.fixture
def host(tmp_path: Path, ftmock_session: FtmockServer) -> tuple[Path, str]:
    """A host with ftagent (registered with ftmock) and ftreport installed and configured, secrets
    everywhere they may be; the tree and the consumer UUID."""
    root = tmp_path / "root"
    guest = make_guest(root / "etc/ftagent", ftmock_session, new_org(ftmock_session), register=True)
    guest.configure("server", proxy="http://proxyuser:proxy-secret@proxy.example.com:3128",
                    no_proxy="127.0.0.1,localhost")
    guest.configure("lease", etcd_password="etcd-secret")
    _write(root / "etc/ftreport.conf", "[global]\ninterval = 600\n[defaults]\nrhsm_password = rhsm-secret\n", 0o600)
    _write(root / "etc/ftreport.d/site.conf",
           "[site]\ntype = fake\nfile = builtin:report1\nowner = acme\npassword = vcenter-secret\n"
           "rhsm_encrypted_password = encrypted-secret\n", 0o600)
    _write(root / "etc/sysconfig/ftreport", "VIRTWHO_DEBUG=0\nVIRTWHO_ESX_PASSWORD=env-secret\n", 0o600)
    _write(root / "var/lib/ftagent/lease.json", json.dumps({"state": "HELD", "generation": 7}))
    _write(root / "var/lib/ftagent/lease.holder", "holder-secret\n", 0o600)
    _write(root / "var/lib/ftagent/identity/key.pem", "KEY-MATERIAL\n", 0o600)
    _write(root / "var/lib/ftreport/key", "password-key\n", 0o600)
    _write(root / "var/lib/ftreport/sent-0123456789abcdef.json", json.dumps({"hash": "h", "time": 1.0}))
    # The programs as the host has them: its ftagent and ftreport commands.
    source = Path(ftagent.__file__).resolve().parents[1]
    for program in ("ftagent", "ftreport"):
        _write(root / "usr/bin" / program,
               f"#!/bin/sh\nPYTHONPATH={source} exec {sys.executable} -m {program} \"$@\"\n", 0o755)
    return root, guest.uuid()


def _json_in(text: str) -> Any:
    """The JSON document in a command's output (stderr lines around it)."""
    return json.JSONDecoder().raw_decode(text[text.index("{"):])[0]


def test_sos_report_collects_configuration_status_journal_and_summaries_with_secrets_masked(
        host: tuple[Path, str], tmp_path: Path) -> None:
    root, consumer = host
    site = tmp_path / "site"
    shutil.copytree(_sos_package(), site / "sos")
    shutil.copyfile(PACKAGING / "sos" / "ftagent.py", site / "sos" / "report" / "plugins" / "ftagent.py")
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([SOS_PYTHON, "/usr/bin/sosreport", "--batch", "--only-plugins", "ftagent",
                           "--sysroot", str(root), "--tmp-dir", str(out), "-z", "gzip"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    archive = next(out.glob("sosreport-*.tar.gz"))
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        files = {m.name[len(top) + 1:]: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
                 for m in tar.getmembers() if m.isfile()}
    # Only this plugin ran.
    assert {p.split("/")[1] for p in files if p.startswith("sos_commands/")} == {"ftagent"}
    # The configuration, secrets masked and everything else as written.
    agent = files["etc/ftagent/ftagent.conf"]
    assert "proxy = http://proxyuser:********@proxy.example.com:3128" in agent
    assert "etcd_password = ********" in agent and "no_proxy = 127.0.0.1,localhost" in agent
    assert "rhsm_password = ********" in files["etc/ftreport.conf"]
    site_conf = files["etc/ftreport.d/site.conf"]
    assert "password = ********" in site_conf and "rhsm_encrypted_password = ********" in site_conf
    assert "owner = acme" in site_conf
    assert files["etc/sysconfig/ftreport"] == "VIRTWHO_DEBUG=0\nVIRTWHO_ESX_PASSWORD=********\n"
    # Status files; never the identity key, the lease holder id or the password key.
    assert json.loads(files["var/lib/ftagent/lease.json"]) == {"state": "HELD", "generation": 7}
    assert "var/lib/ftreport/sent-0123456789abcdef.json" in files
    assert not any(p.startswith(("var/lib/ftagent/identity", "var/lib/ftreport/key")) or p.endswith(".holder")
                   for p in files)
    assert not any(p.endswith("key.pem") for p in files), "the identity key beside ftagent.conf"
    key = (root / "etc/ftagent/identity/key.pem").read_text()
    assert not [p for p, text in files.items() if key.strip().splitlines()[1] in text]
    for secret in SECRETS:
        assert not [p for p, text in files.items() if secret in text], secret
    # The programs' own summaries, run on the same tree, and the units' journal.
    status = _json_in(files["sos_commands/ftagent/ftagent_status_--json"])
    assert consumer in json.dumps(status)  # the tree's ftagent.conf, registered identity
    body = _json_in(files["sos_commands/ftagent/ftreport_--print"])
    assert len(body["hypervisors"]) == 2  # the tree's fake source, builtin:report1
    assert any(p.startswith("sos_commands/ftagent/journalctl_--no-pager") and "--unit_ftreport" in p
               and "--unit_ftagent-heartbeat" in p for p in files)
