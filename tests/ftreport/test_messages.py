"""ftreport's messages for operator mistakes: one line naming the path and the fix, never a traceback."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clirunner import Runner
from tests.conftest import FtmockServer
from tests.kit.orgs import new_org

from .conftest import Vcsim, esx_section, run_ftreport, write_config
from .test_ftmock import server_section

ROOT = os.geteuid() == 0


def unprivileged(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if ROOT else []
    return subprocess.run([*prefix, sys.executable, "-m", "ftreport", *args], env=env, capture_output=True,
                          text=True, timeout=60, cwd="/")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can traverse (pytest's tmp_path is private)."""
    path = Path(tempfile.mkdtemp(prefix="ftreport-msg-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "ERROR" in line or "Traceback" in line or "error" in line]


def test_unreadable_config_directory_is_named(shared_dir: Path, isolated_env: dict[str, str]) -> None:
    confd = shared_dir / "ftreport.d"
    confd.mkdir(mode=0o700)
    (confd / "src.conf").write_text("[src]\ntype=fake\n")
    if not ROOT:
        os.chmod(confd, 0)
    env = dict(isolated_env, FTREPORT_CONFIG_DIR=str(confd), FTREPORT_STATE_DIR=str(shared_dir / "state"),
               FTREPORT_ROOT=str(shared_dir), FTREPORT_CONFIG=str(shared_dir / "ftreport.conf"))
    out = unprivileged(["-o"], env)
    assert out.returncode == 78
    assert "no sources configured" not in out.stderr
    assert f"directory {confd} is not readable" in out.stderr and "run as root" in out.stderr
    assert "Traceback" not in out.stderr


def test_unreadable_rhsm_ca_cert_is_one_line(ftmock_session: FtmockServer, shared_dir: Path,
                                              isolated_env: dict[str, str]) -> None:
    org = new_org(ftmock_session)
    ca = shared_dir / "ca.pem"
    shutil.copy(ftmock_session.ca_path, ca)
    os.chmod(ca, 0o600 if ROOT else 0)
    section = dict(server_section(ftmock_session, org), rhsm_ca_cert=ca, type="fake")
    conf = write_config(shared_dir / "f.conf", {"src": section})
    os.chmod(conf, 0o644)
    env = dict(isolated_env, FTREPORT_STATE_DIR=str(shared_dir / "state"), FTREPORT_ROOT=str(shared_dir),
               FTREPORT_CONFIG=str(shared_dir / "ftreport.conf"))
    out = unprivileged(["-c", str(conf), "-o"], env)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    lines = errors(out.stderr)
    assert len(lines) == 1, out.stderr
    assert f"CA certificate {ca} (rhsm_ca_cert) is not readable" in lines[0]


def test_full_disk_under_ftreport_password(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    exe = shutil.which("ftreport-password")
    assert exe
    if ROOT:
        # A real full file system: a tiny tmpfs in a private mount namespace, filled up.
        script = (f"mount -t tmpfs -o size=8k ftfull {key_dir} && "
                  f"(dd if=/dev/zero of={key_dir}/fill bs=1k count=64 2>/dev/null; true) && "
                  f"exec {exe} --key-file {key_dir}/key --password secret")
        out = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    else:
        def no_room() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

        out = subprocess.run([exe, "--key-file", str(key_dir / "key"), "--password", "secret"],
                             capture_output=True, text=True, timeout=60, preexec_fn=no_room)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert f"cannot write key file {key_dir}/key" in out.stderr and "free space" in out.stderr
    assert out.stderr.strip().count("\n") == 0


def test_unreachable_main_config_is_one_line(shared_dir: Path, isolated_env: dict[str, str]) -> None:
    private = shared_dir / "private"
    private.mkdir(mode=0o700)
    if not ROOT:
        os.chmod(private, 0)
    out = unprivileged(["-o"], dict(isolated_env, FTREPORT_CONFIG=str(private / "ftreport.conf")))
    assert out.returncode == 78 and "Traceback" not in out.stderr
    assert f"cannot reach {private}/ftreport.conf: permission denied" in out.stderr


def test_urllib3_retries_do_not_leak(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    conf = write_config(tmp_path / "f.conf", {"src": {
        "type": "fake", "owner": "o", "rhsm_hostname": "https://127.0.0.1:9/candlepin",
        "rhsm_username": "u", "rhsm_password": "p", "rhsm_insecure": "1"}})
    out = run_ftreport(["-c", str(conf), "-o"], isolated_env)
    assert out.returncode == 1
    assert "Retrying" not in out.stderr and "urllib3" not in out.stderr
    assert "connection refused" in out.stderr


def test_parent_filter_dropping_every_host_warns(vcsim_session: Vcsim, tmp_path: Path,
                                                  isolated_env: dict[str, str]) -> None:
    conf = write_config(tmp_path / "esx.conf", {"vcenter": esx_section(vcsim_session,
                                                                       filter_host_parents="DC0_C9")})
    out = run_ftreport(["-c", str(conf), "-p"], isolated_env)
    warning = [line for line in out.stderr.splitlines() if "filter_host_parents" in line]
    assert len(warning) == 1, out.stderr
    hosts = len(vcsim_session.state(all_objects=True)["hosts"])
    assert f"excluded all {hosts} hosts (after 0 excluded by filter_hosts/exclude_hosts)" in warning[0]
    assert "parents seen: (no cluster), DC0_C0, DC0_C1" in warning[0]
    out = run_ftreport(["-c", str(write_config(tmp_path / "ok.conf", {"vcenter": esx_section(
        vcsim_session, filter_host_parents="DC0_C0")})), "-p"], isolated_env)
    assert "filter_host_parents" not in out.stderr


# -- exit codes (ftreport.cli.exit_code_for) and one-line errors -------------------------------------------

def test_usage_error_exits_64_with_clicks_hint(isolated_env: dict[str, str]) -> None:
    out = run_ftreport(["--no-such-option"], isolated_env)
    assert out.returncode == 64
    assert "no such option" in out.stderr.lower() and "Usage: ftreport" in out.stderr  # click 7 writes it lower-case
    out = run_ftreport(["-i", "0", "-p"], isolated_env)
    assert out.returncode == 64 and "--interval" in out.stderr


def test_configuration_error_is_one_plain_line_exit_78(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    conf = write_config(tmp_path / "bad.conf", {"vc": {"type": "fake", "hypervisor_id": "mac"}})
    out = run_ftreport(["-c", str(conf), "-p"], isolated_env)
    assert out.returncode == 78
    assert out.stderr.splitlines() == [f"ftreport: error: {conf} [vc] hypervisor_id: must be one of uuid, hostname, "
                                       "hwuuid, got 'mac'"]


def test_without_any_configuration_file_the_error_names_where_it_looked(isolated_env: dict[str, str]) -> None:
    """As virt-who, no configuration means the local libvirt; on a host that is not registered
    either, there is nowhere to send it, and the one line says where ftreport looked for both."""
    main, directory = isolated_env["FTREPORT_CONFIG"], isolated_env["FTREPORT_CONFIG_DIR"]
    rhsm_conf = Path(isolated_env["FTREPORT_ROOT"]) / "etc" / "rhsm" / "rhsm.conf"
    out = run_ftreport(["-o"], isolated_env)
    assert out.returncode == 78, out.stderr
    assert out.stderr.splitlines()[-1] == (
        f"ftreport: error: no sources configured (looked for {main} and {directory}/*.conf; -c FILE names one), "
        "and the local libvirt, reported instead as virt-who does, has nowhere to go: this host is not "
        f"registered (there is no {rhsm_conf})")
    assert f"no source configured (looked for {main} and {directory}/*.conf): reporting the local libvirt" \
        in out.stderr
    # -c FILE names the configuration: a file without a source is an error, not the local libvirt.
    empty = Path(main).with_name("empty.conf")
    empty.write_text("[global]\ninterval=60\n")
    out = run_ftreport(["-c", str(empty), "-p"], isolated_env)
    assert out.returncode == 78
    assert out.stderr.splitlines() == [f"ftreport: error: no sources configured (files read: {empty})"]


def test_a_bug_exits_70_and_says_how_to_see_the_traceback(tmp_path: Path, isolated_env: dict[str, str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from ftreport import cli

    def broken(*_args: object, **_kwargs: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "run_oneshot", broken)
    conf = write_config(tmp_path / "f.conf", {"f": {"type": "fake"}})
    result = Runner().invoke(cli.main, ["-c", str(conf), "-p"])
    assert result.exit_code == 70
    assert "ftreport: error: internal error: RuntimeError: boom" in result.stderr
    assert "--debug" in result.stderr and "Traceback" not in result.stderr


def test_password_command_errors(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    out = run_ftreport(["password", "--key-file", str(tmp_path / "key")], isolated_env, stdin="\n")
    assert out.returncode == 64 and "empty password" in out.stderr
    out = run_ftreport(["password", "-c", str(tmp_path / "missing.conf"), "-p", "x"], isolated_env)
    assert out.returncode == 78
    assert out.stderr.splitlines() == [f"ftreport: error: {tmp_path / 'missing.conf'}: file does not exist"]


def test_version(isolated_env: dict[str, str]) -> None:
    from ftreport import __version__

    out = run_ftreport(["--version"], isolated_env)
    assert out.returncode == 0 and __version__ in out.stdout
