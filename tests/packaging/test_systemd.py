"""systemd units, timer and cron file: systemd-analyze accepts them, and they keep the promises
operators rely on (readiness, reload, a watchdog that cannot outlive the lease, no restart after a
fence, a spread-out timer)."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.packaging.conftest import MAN, PACKAGING, UNITS

BIN = Path(sys.executable).parent
UNIT_FILES = sorted(p.name for p in UNITS.iterdir() if p.suffix in {".service", ".timer"})


def _unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def _seconds(value: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|min|h)?", value):
        total += float(number) * {"ms": 0.001, "s": 1, "": 1, "min": 60, "h": 3600}[unit]
    return total


def test_units_present() -> None:
    assert UNIT_FILES == ["ftagent-checkin.service", "ftagent-checkin.timer", "ftagent-heartbeat.service",
                          "ftmock.service", "ftreport.service"]


def test_systemd_analyze_verify_accepts_every_unit(tmp_path: Path) -> None:
    """Verified as installed: the commands point at this tree's entry points (systemd-analyze needs
    them to exist) and the Documentation= pages are this tree's man pages."""
    units = tmp_path / "units"
    units.mkdir()
    for name in UNIT_FILES:
        text = (UNITS / name).read_text()
        text = re.sub(r"/usr/bin/(ftagent|ftreport|ftmock)\b", lambda m: str(BIN / m.group(1)), text)
        (units / name).write_text(text)
    manpath = tmp_path / "man"
    for page in MAN.iterdir():
        section = manpath / f"man{page.suffix[1:]}"
        section.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, section / page.name)
    env = dict(os.environ, MANPATH=str(manpath))
    proc = subprocess.run(["systemd-analyze", "verify", *[str(units / n) for n in UNIT_FILES]],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""


def test_ftreport_service_is_notify_with_reload_by_sighup() -> None:
    svc = _unit("ftreport.service")["Service"]
    assert svc["Type"] == "notify"
    assert re.fullmatch(r"/bin/kill -(HUP|s HUP|SIGHUP) \$MAINPID", svc["ExecReload"])
    assert svc["ExecStart"] == "/usr/bin/ftreport"
    assert svc.get("StandardError", "journal") == "journal"
    assert "2" in svc["RestartPreventExitStatus"].split(), "a configuration error must not loop"


def test_ftreport_reads_sysconfig_with_virt_whos_variables() -> None:
    """The unit reads /etc/sysconfig/ftreport (optional); the shipped file is all comments, and
    every variable it names is one ftreport knows (honours, accepts, or reports as unsupported)."""
    from ftreport import environment

    svc = _unit("ftreport.service")["Service"]
    assert svc["EnvironmentFile"] == "-/etc/sysconfig/ftreport"
    assert svc["LogsDirectory"] == "ftreport"
    text = (PACKAGING / "sysconfig" / "ftreport").read_text()
    assert all(not line.strip() or line.startswith("#") for line in text.splitlines())
    named = set(re.findall(r"#(VIRTWHO_[A-Z_]+)=", text))
    assert named == set(environment.FLAGS) - {"VIRTWHO_PRINT"} | set(environment.VALUES)
    uncommented = "\n".join(line[1:] for line in text.splitlines() if re.match(r"#[A-Z_]+=", line))
    settings = environment.read_environment(dict(re.findall(r"^([A-Z_]+)=(.*)$", uncommented, re.M)))
    assert settings.unsupported == ()


def test_heartbeat_watchdog_cannot_outlive_the_lease_and_fencing_is_not_undone() -> None:
    from ftagent.lease import LeaseSettings

    svc = _unit("ftagent-heartbeat.service")["Service"]
    assert svc["Type"] == "notify"
    assert svc["ExecStart"] == "/usr/bin/ftagent heartbeat"
    watchdog = _seconds(svc["WatchdogSec"])
    defaults = LeaseSettings()
    # WATCHDOG=1 is sent up to the local deadline (ttl - margin after the last renewal was sent); the
    # kill must land before the server can give the lease away (ttl after that).
    assert 0 < watchdog <= defaults.margin
    assert watchdog < defaults.ttl - defaults.margin
    # FENCED is terminal until an operator restarts: no restart on failure, abort or watchdog.
    assert svc.get("Restart", "no") == "no"


def test_checkin_is_a_oneshot_started_by_a_randomized_timer() -> None:
    svc = _unit("ftagent-checkin.service")["Service"]
    assert svc["Type"] == "oneshot"
    assert svc["ExecStart"] == "/usr/bin/ftagent checkin"
    timer = _unit("ftagent-checkin.timer")["Timer"]
    assert _seconds(timer["RandomizedDelaySec"]) >= 60
    assert _seconds(timer["OnUnitInactiveSec"]) >= 600
    assert _unit("ftagent-checkin.timer")["Install"]["WantedBy"] == "timers.target"


@pytest.mark.parametrize("name", [n for n in UNIT_FILES if n.endswith(".service")])
def test_services_are_hardened_with_writable_state(name: str) -> None:
    svc = _unit(name)["Service"]
    assert svc["ProtectSystem"] == "strict"
    assert svc["StateDirectoryMode"] == "0700"
    assert svc["UMask"] == "0077"
    assert svc["PrivateTmp"] == "yes"


def test_cron_alternative_is_off_until_uncommented_and_then_valid() -> None:
    lines = (PACKAGING / "cron" / "ftagent").read_text().splitlines()
    active = [ln for ln in lines if ln.strip() and not ln.startswith("#") and "=" not in ln.split()[0]]
    assert active == [], "the package must not start a cron job by itself"
    jobs = [ln[1:] for ln in lines if re.match(r"#\s*[\d*]", ln)]
    assert len(jobs) == 1
    fields = jobs[0].split(None, 6)
    assert fields[5] == "root"
    assert "ftagent checkin" in fields[6]
    assert "%" not in fields[6].replace("\\%", ""), "an unescaped % ends a crontab command"
    assert "SHELL=/bin/bash" in lines, "$RANDOM needs bash"


def _recv_all(sock: socket.socket, want: str, timeout: float) -> list[str]:
    """Notification datagrams until one containing ``want`` arrives."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if want in got[-1].split("\n"):
            return got
    raise AssertionError(f"no {want} within {timeout} s; got {got}")


def test_ftreport_speaks_the_notify_protocol_the_unit_expects(tmp_path: Path) -> None:
    """READY=1 once running, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 and exit 0 on SIGTERM."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: the reporter keeps retrying, which is fine here
    conf = tmp_path / "fake.conf"
    conf.write_text(f"[fake]\ntype = fake\nfile = builtin:report1\nowner = acme\n"
                    f"rhsm_hostname = 127.0.0.1\nrhsm_port = {port}\nrhsm_username = u\nrhsm_password = p\n")
    address = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    env = dict(os.environ, NOTIFY_SOCKET=address, FTREPORT_CONFIG=str(tmp_path / "none.conf"),
               FTREPORT_STATE_DIR=str(tmp_path / "state"))
    proc = subprocess.Popen([str(BIN / "ftreport"), "-c", str(conf)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _recv_all(sock, "READY=1", 30)
        proc.send_signal(signal.SIGHUP)
        after_hup = _recv_all(sock, "READY=1", 30)
        assert any("RELOADING=1" in msg for msg in after_hup)
        proc.send_signal(signal.SIGTERM)
        _recv_all(sock, "STOPPING=1", 30)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()


def test_shipped_ftagent_conf_loads_without_warnings(caplog: pytest.LogCaptureFixture) -> None:
    from ftagent.config import load_config
    from ftagent.lease import parse_lease_settings

    conf = load_config(PACKAGING / "config" / "ftagent.conf")
    settings = parse_lease_settings(conf)
    assert not [r for r in caplog.records if r.levelname in {"WARNING", "ERROR"}]
    assert settings.enabled and settings.fence_command is None and settings.fence_units == ()


def test_shipped_ftreport_conf_loads_without_warnings(caplog: pytest.LogCaptureFixture) -> None:
    from ftreport.config import load_config

    conf = load_config(paths=[PACKAGING / "config" / "ftreport.conf"])
    assert conf.sources == ()
    assert conf.global_.interval == 3600
    assert not [r for r in caplog.records if r.levelname in {"WARNING", "ERROR"}]


def test_commented_defaults_in_shipped_ftagent_conf_are_the_code_defaults() -> None:
    """Uncommenting a line of the shipped file changes nothing: its values are the built-in ones."""
    from ftagent.config import AgentConfig, ServerConfig
    from ftagent.lease import LeaseSettings

    objects = {"server": ServerConfig(), "agent": AgentConfig(), "lease": LeaseSettings()}
    section = None
    checked = 0
    for line in (PACKAGING / "config" / "ftagent.conf").read_text().splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m.group(1)
        elif section and (m := re.fullmatch(r"#(\w+) = (\S+)", line)):
            key, value = m.groups()
            default = getattr(objects[section], key, None)
            if default is None or key in {"ca_cert", "log_file"} or (key.startswith("fence_") and key != "fence_timeout"):
                continue
            if isinstance(default, bool):
                assert (value == "yes") == default, key
            elif isinstance(default, int | float):
                assert float(value) == default, key
            else:
                assert value == str(default), key
            checked += 1
    assert checked >= 12
