"""Logging as operators meet it: ftreport under systemd writes journal priorities, ftagent writes a
log file that survives logrotate moving it away."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clirunner import Runner

BIN = Path(sys.executable).parent


def _ftreport_print(tmp_path: Path, journal: bool) -> list[str]:
    """``ftreport --print`` on the built-in report; returns its stderr lines."""
    conf = tmp_path / "fake.conf"
    conf.write_text("[fake]\ntype = fake\nfile = builtin:report1\nowner = acme\n")
    err_path = tmp_path / "stderr"
    env = dict(os.environ, FTREPORT_CONFIG=str(tmp_path / "none.conf"), FTREPORT_STATE_DIR=str(tmp_path / "state"))
    env.pop("JOURNAL_STREAM", None)
    with open(err_path, "wb") as err:
        if journal:
            st = os.fstat(err.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        proc = subprocess.run([str(BIN / "ftreport"), "--print", "-c", str(conf)], stdout=subprocess.PIPE,
                              stderr=err, env=env, timeout=60)
    assert proc.returncode == 0
    assert b'"hypervisors"' in proc.stdout
    return err_path.read_text().splitlines()


def test_ftreport_logs_with_journal_priorities_under_systemd(tmp_path: Path) -> None:
    lines = _ftreport_print(tmp_path, journal=True)
    assert lines, "expected ftreport to log something"
    assert all(line[:3] in {"<3>", "<4>", "<6>", "<7>"} for line in lines), lines
    assert any(line.startswith("<6>ftreport") for line in lines)


def test_ftreport_logs_plain_lines_otherwise(tmp_path: Path) -> None:
    lines = _ftreport_print(tmp_path, journal=False)
    assert lines
    assert not any(line.startswith("<") for line in lines)
    assert any(" INFO ftreport" in line for line in lines)


def test_ftreport_ignores_a_journal_stream_that_is_not_its_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A JOURNAL_STREAM inherited from a parent service while stderr goes elsewhere: plain lines.
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    conf = tmp_path / "fake.conf"
    conf.write_text("[fake]\ntype = fake\nowner = acme\n")
    env = dict(os.environ, FTREPORT_CONFIG=str(tmp_path / "none.conf"), FTREPORT_STATE_DIR=str(tmp_path / "s"))
    proc = subprocess.run([str(BIN / "ftreport"), "--print", "-c", str(conf)], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0
    assert proc.stderr and not proc.stderr.startswith("<")


@pytest.fixture
def clean_root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in before:
            root.removeHandler(handler)
            handler.close()


def _guest_config(tmp_path: Path, log_file: Path | None = None) -> Path:
    facts = tmp_path / "facts.d"
    facts.mkdir()
    (facts / "uuid.facts").write_text('{"virt.uuid": "4211aaaa-0000-0000-0000-000000000001"}')
    conf = tmp_path / "ftagent.conf"
    text = f"[agent]\nidentity_dir = {tmp_path}/id\nentitlement_dir = {tmp_path}/ent\nfacts_dir = {facts}\n"
    text += f"lock_file = {tmp_path}/lock\n"
    if log_file is not None:
        text += f"log_file = {log_file}\n"
    conf.write_text(text)
    return conf


@pytest.mark.usefixtures("clean_root_handlers")
def test_ftagent_logs_to_the_default_file_when_its_directory_exists(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from ftagent import cli

    logdir = tmp_path / "var-log-ftagent"
    logdir.mkdir()
    monkeypatch.setattr(cli, "DEFAULT_LOG_FILE", str(logdir / "ftagent.log"))
    result = Runner().invoke(cli.cli, ["--config", str(_guest_config(tmp_path)), "facts", "--json"])
    assert result.exit_code == 0, result.output
    assert (logdir / "ftagent.log").exists()


@pytest.mark.usefixtures("clean_root_handlers")
def test_ftagent_without_the_log_directory_logs_nowhere_and_says_nothing(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from ftagent import cli

    monkeypatch.setattr(cli, "DEFAULT_LOG_FILE", str(tmp_path / "absent" / "ftagent.log"))
    result = Runner().invoke(cli.cli, ["--config", str(_guest_config(tmp_path)), "facts", "--json"])
    assert result.exit_code == 0, result.output
    assert "log file" not in result.output
    assert not (tmp_path / "absent").exists()


@pytest.mark.usefixtures("clean_root_handlers")
def test_ftagent_log_file_follows_logrotate(tmp_path: Path) -> None:
    """After the file is moved away (logrotate's default), new messages go to a new file at the path."""
    from ftagent import cli

    log_file = tmp_path / "ftagent.log"
    result = Runner().invoke(cli.cli, ["--config", str(_guest_config(tmp_path, log_file)), "facts", "--json"])
    assert result.exit_code == 0, result.output
    log = logging.getLogger("ftagent.rotation-test")
    log.warning("before rotation")
    log_file.rename(tmp_path / "ftagent.log.1")
    log.warning("after rotation")
    assert "before rotation" in (tmp_path / "ftagent.log.1").read_text()
    assert "after rotation" not in (tmp_path / "ftagent.log.1").read_text()
    assert "after rotation" in log_file.read_text()
