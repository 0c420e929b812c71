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
    assert {"64", "78"} <= set(svc["RestartPreventExitStatus"].split()), "a configuration error must not loop"


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
    from ftagent.lease.backends.sanlock import SanlockSettings

    objects = {"server": ServerConfig(), "agent": AgentConfig(), "lease": LeaseSettings()}
    # A backend's own keys have their defaults in the settings its module declares.
    backend_defaults = SanlockSettings(sanlock_path=Path("/unused"), sanlock_host_id=1)
    section = None
    checked = 0
    for line in (PACKAGING / "config" / "ftagent.conf").read_text().splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m.group(1)
        elif section and (m := re.fullmatch(r"#(\w+) = (\S+)", line)):
            key, value = m.groups()
            default = getattr(objects[section], key, None)
            if default is None and section == "lease":
                default = getattr(backend_defaults, key, None)
            if key == "log_file":  # no fixed default: that path when its directory is writable (said above it)
                continue
            assert default is not None, f"#{key} = {value} looks like a default but {key} has none"
            if isinstance(default, bool):
                assert (value == "yes") == default, key
            elif isinstance(default, (int, float)):
                assert float(value) == default, key
            else:
                assert value == str(default), key
            checked += 1
    assert checked >= 12


def _installed_copy(tmp_path: Path, name: str) -> Path:
    """The unit as installed, its commands pointing at this tree's entry points."""
    text = (UNITS / name).read_text()
    text = re.sub(r"/usr/bin/(ftagent|ftreport|ftmock)\b", lambda m: str(BIN / m.group(1)), text)
    path = tmp_path / name
    path.write_text(text)
    return path


def _exposure(unit: Path) -> tuple[float, str]:
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    return float(m.group(1)), proc.stdout


def test_ftmock_runs_unprivileged_and_systemd_rates_it_ok(tmp_path: Path) -> None:
    """A network server for labs: its own (dynamic) user, no capabilities, a syscall filter; systemd's
    own review of the unit file rates the exposure "OK" (below 2 of 10)."""
    svc = _unit("ftmock.service")["Service"]
    assert svc["DynamicUser"] == "yes" and svc["User"] == "ftmock"
    assert svc["StateDirectory"] == "ftmock", "the data directory must belong to the dynamic user"
    assert "--data-dir /var/lib/ftmock" in svc["ExecStart"]
    exposure, report = _exposure(_installed_copy(tmp_path, "ftmock.service"))
    assert exposure < 2.0, report
    for line in report.splitlines():
        if re.match(r"\S+\s+(User=/DynamicUser=|CapabilityBoundingSet=~CAP_SYS_ADMIN|NoNewPrivileges=)", line):
            assert line.startswith("✓"), line


def test_ftreport_reads_its_sysconfig_file_and_starts_after_libvirtd() -> None:
    unit = _unit("ftreport.service")
    assert "-/etc/sysconfig/ftreport" in unit["Service"]["EnvironmentFile"].split()
    assert "libvirtd.service" in unit["Unit"]["After"].split()


HOOK = """#!/bin/sh
# A fence hook as an operator writes one: record why, in the place the unit gives it.
echo "$1" > "$RUNTIME_DIRECTORY/fenced"
if echo x > /var/spool/ftagent-fence-test 2>/dev/null; then
    echo writable > "$RUNTIME_DIRECTORY/spool"
else
    echo read-only > "$RUNTIME_DIRECTORY/spool"
fi
"""


# The heartbeat's own fencing ladder (its module moves into ftagent.lease with the lease package).
FENCE = """
import json
try:
    from ftagent.lease.fencing import FenceLadder
except ImportError:
    from ftagent.fencing import FenceLadder
print(json.dumps(FenceLadder(command="/usr/local/sbin/ft-fence").fence("lease lost: 409").as_dict()))
"""


def _sandbox_script(svc: configparser.SectionProxy, hook: Path, inner: str) -> str:
    """A shell script that, inside a private mount namespace, installs ``hook`` as
    /usr/local/sbin/ft-fence (where an operator would), lays out the file system as systemd does for
    the unit's ProtectSystem=strict, PrivateTmp= and RuntimeDirectory= settings, then runs
    ``inner``. (There is no running systemd here to start the unit itself.)"""
    assert svc["ProtectSystem"] == "strict"
    runtime = [f"/run/{d}" for d in svc["RuntimeDirectory"].split()]
    mode = svc.get("RuntimeDirectoryMode", "0755")
    lines = ["set -e",
             "mkdir -p /usr/local/sbin",
             "mount -t tmpfs tmpfs /usr/local/sbin",
             f"install -m 0755 {hook} /usr/local/sbin/ft-fence",
             "mount -t tmpfs -o mode=0755 tmpfs /run"]  # the service manager's own /run
    for d in runtime:
        lines += [f"mkdir -p -m {mode} {d}", f"mount --bind {d} {d}"]
    if svc.get("PrivateTmp") == "yes":
        # The private /tmp hides what lies in the host's /tmp. An installed ftagent never does, but a
        # checkout (with its virtualenv and interpreter) may: such a tree is bound back, read-only.
        trees = sorted({str(t) for t in (PACKAGING.resolve().parent, Path(sys.prefix).resolve(),
                                         Path(sys.base_prefix).resolve())
                        if str(t).startswith(("/tmp/", "/var/tmp/"))})
        if trees:
            lines += ["mkdir -p /run/.host-tmp /run/.host-var-tmp", "mount --bind /tmp /run/.host-tmp",
                      "mount --bind /var/tmp /run/.host-var-tmp"]
        lines += ["mount -t tmpfs tmpfs /tmp", "mount -t tmpfs tmpfs /var/tmp"]
        for tree in trees:
            host = tree.replace("/var/tmp/", "/run/.host-var-tmp/", 1).replace("/tmp/", "/run/.host-tmp/", 1)
            lines += [f"mkdir -p {tree}", f"mount --bind {host} {tree}"]
    keep = " ".join(runtime + (["/tmp", "/var/tmp"] if svc.get("PrivateTmp") == "yes" else []))
    # strict: every other mount read-only, /proc, /sys and /dev excepted (handled by other settings)
    lines.append(
        "for m in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do "
        "case \"$m\" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue;; esac; "
        f"case \" {keep} \" in *\" $m \"*) continue;; esac; "
        "mount -o remount,bind,ro \"$m\" 2>/dev/null || mount -o remount,ro \"$m\"; done")
    lines.append(f"export RUNTIME_DIRECTORY={runtime[0]}")
    lines.append(inner)
    return "\n".join(lines) + "\n"


def test_fence_hook_writes_to_the_heartbeat_runtime_directory_under_the_sandbox(tmp_path: Path) -> None:
    """The heartbeat's fencing ladder runs the hook under the unit's ProtectSystem=strict; the hook's
    documented writable place ($RUNTIME_DIRECTORY = /run/ftagent) works there, the rest of the
    system is read-only. Emulated with a mount namespace: systemd is not PID 1 here."""
    svc = _unit("ftagent-heartbeat.service")["Service"]
    assert svc["RuntimeDirectory"] == "ftagent"
    assert svc.get("RuntimeDirectoryPreserve") == "yes", "what the hook wrote must survive the watchdog kill"
    hook = tmp_path / "hook"
    hook.write_text(HOOK)
    fence = f"{sys.executable} -c '{FENCE}'"
    inner = f"{fence}\ncat /run/ftagent/fenced /run/ftagent/spool; stat -c %a /run/ftagent\n"
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", _sandbox_script(svc, hook, inner)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report, fenced, spool, mode = proc.stdout.strip().splitlines()
    assert '"status": 0' in report
    assert fenced == "lease lost: 409"
    assert spool == "read-only", "the sandbox must be in force for the test to mean anything"
    assert mode == svc["RuntimeDirectoryMode"].lstrip("0")
    assert not Path("/var/spool/ftagent-fence-test").exists()
