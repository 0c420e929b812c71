"""Configuration parsing, fact collection and the lock."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest

from ftagent.config import load_config, register_section
from ftagent.errors import ConfigError, LockTimeout
from ftagent.facts import SystemPaths, collect_facts, same_virt_uuid, uuid_variants
from ftagent.lock import FileLock


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_full_config_relative_paths_resolved_against_file(tmp_path: Path) -> None:
    conf = write(tmp_path / "a.conf", """
[server]
url = https://127.0.0.1:8443/candlepin
ca_cert = ca.pem
insecure = no
timeout = 7.5
proxy = http://proxy:3128
no_proxy = localhost,127.0.0.1
[agent]
identity_dir = id
entitlement_dir = /abs/ent
facts_dir = facts
lock_file = run/lock
[lease]
ttl = 10
anything = goes
""")
    cfg = load_config(conf)
    assert cfg.server.url == "https://127.0.0.1:8443/candlepin"
    assert cfg.server.ca_cert == tmp_path / "ca.pem"
    assert cfg.server.insecure is False
    assert cfg.server.timeout == 7.5
    assert cfg.server.proxy == "http://proxy:3128"
    assert cfg.server.no_proxy == "localhost,127.0.0.1"
    assert cfg.agent.identity_dir == tmp_path / "id"
    assert cfg.agent.entitlement_dir == Path("/abs/ent")
    assert cfg.agent.lock_file == tmp_path / "run" / "lock"
    assert cfg.lease == {"ttl": "10", "anything": "goes"}


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [("server", "insecure", "maybe"), ("server", "timeout", "soon"), ("server", "timeout", "-1"),
     ("server", "url", "ftp://x"), ("agent", "lock_timeout", "x")],
)
def test_bad_values_name_file_section_and_key(tmp_path: Path, section: str, key: str, value: str) -> None:
    conf = write(tmp_path / "bad.conf", f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(conf)
    text = str(info.value)
    assert str(conf) in text and f"[{section}]" in text and key in text


def test_unknown_keys_and_sections_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    conf = write(tmp_path / "c.conf", "[server]\nurl = https://h/c\nurll = x\n[weird]\na = b\n[lease]\nfoo = 1\n")
    with caplog.at_level(logging.WARNING):
        load_config(conf)
    assert "unknown key urll" in caplog.text
    assert "unknown section [weird]" in caplog.text
    assert "foo" not in caplog.text


def test_syntax_error_and_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="syntax error"):
        load_config(write(tmp_path / "s.conf", "no section header\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.conf")


def test_env_var_picks_the_file_and_missing_default_means_defaults(tmp_path: Path) -> None:
    conf = write(tmp_path / "e.conf", "[server]\nurl = https://envhost/candlepin\n")
    assert load_config(env={"FTAGENT_CONFIG": str(conf)}).server.url == "https://envhost/candlepin"
    cfg = load_config(env={})  # /etc/ftagent/ftagent.conf does not exist on the test machine
    assert cfg.server.url is None and cfg.agent.identity_dir == Path("/var/lib/ftagent/identity")


def test_registered_section_validator(tmp_path: Path) -> None:
    def check(values: dict[str, str] | object) -> None:
        raise ValueError("ttl must be a number")

    register_section("heartbeat_test", check)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"\[heartbeat_test\].*ttl must be a number"):
        load_config(write(tmp_path / "h.conf", "[heartbeat_test]\nttl = x\n"))


# -- facts ---------------------------------------------------------------------------------------


def fake_system(tmp_path: Path, uuid: str = "4C4C4544-0042-3010-8048-B2C04F4E4E31", vendor: str = "VMware, Inc.") -> SystemPaths:
    dmi = tmp_path / "dmi"
    dmi.mkdir()
    (dmi / "product_uuid").write_text(uuid + "\n")
    (dmi / "sys_vendor").write_text(vendor + "\n")
    (dmi / "product_name").write_text("VMware Virtual Platform\n")
    write(tmp_path / "os-release", 'NAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n')
    write(tmp_path / "cpuinfo", "processor: 0\nflags : fpu vme hypervisor\n")
    write(tmp_path / "meminfo", "MemTotal:       2048000 kB\n")
    return SystemPaths(dmi_dir=dmi, os_release=tmp_path / "os-release", cpuinfo=tmp_path / "cpuinfo",
                       meminfo=tmp_path / "meminfo", dmidecode=None, hostname="guest1.example")


def test_collected_facts_from_injected_paths(tmp_path: Path) -> None:
    facts = collect_facts(tmp_path / "nofacts", paths=fake_system(tmp_path))
    assert facts["virt.uuid"] == "4c4c4544-0042-3010-8048-b2c04f4e4e31"
    assert facts["virt.is_guest"] == "true"
    assert facts["virt.host_type"] == "vmware"
    assert facts["network.hostname"] == "guest1.example"
    assert facts["distribution.name"] == "Debian GNU/Linux"
    assert facts["distribution.version"] == "12"
    assert facts["memory.memtotal"] == "2048000"
    assert facts["uname.machine"]


def test_bogus_uuid_ignored_and_bare_metal(tmp_path: Path) -> None:
    paths = fake_system(tmp_path, uuid="03000200-0400-0500-0006-000700080009", vendor="Dell Inc.")
    (paths.dmi_dir / "product_name").write_text("PowerEdge\n")
    write(paths.cpuinfo, "flags : fpu vme\n")
    facts = collect_facts(None, paths=paths)
    assert "virt.uuid" not in facts
    assert facts["virt.is_guest"] == "false"


def test_facts_files_override_in_name_order(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "facts"
    d.mkdir()
    (d / "10-a.facts").write_text(json.dumps({"virt.uuid": "AAAA", "custom.n": 3, "custom.flag": True}))
    (d / "20-b.facts").write_text(json.dumps({"virt.uuid": "BBBB"}))
    (d / "30-bad.facts").write_text("{not json")
    (d / "ignored.txt").write_text("{}")
    facts = collect_facts(d, paths=fake_system(tmp_path))
    assert facts["virt.uuid"] == "BBBB"
    assert facts["custom.n"] == "3" and facts["custom.flag"] == "true"
    assert "ignoring facts file" in caplog.text


def test_uuid_matching_ignores_case_and_smbios_byte_order() -> None:
    a = "4C4C4544-0042-3010-8048-B2C04F4E4E31"
    swapped = "44454c4c-4200-1030-8048-b2c04f4e4e31"
    assert swapped in uuid_variants(a)
    assert same_virt_uuid(a, a.lower())
    assert same_virt_uuid(a, swapped)
    assert not same_virt_uuid(a, "4C4C4544-0042-3010-8048-B2C04F4E4E32")
    assert not same_virt_uuid(a, None)


# -- lock ----------------------------------------------------------------------------------------


def test_lock_excludes_and_times_out(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    held = FileLock(path)
    held.acquire()
    with pytest.raises(LockTimeout, match="another ftagent process"):
        FileLock(path, timeout=0.2).acquire()
    threading.Timer(0.2, held.release).start()
    started = time.monotonic()
    with FileLock(path, timeout=5):
        assert time.monotonic() - started >= 0.15


def test_without_a_configuration_file_errors_name_the_default_path_looked_for(tmp_path: Path) -> None:
    import os
    import subprocess

    from tests.kit.guest import FTAGENT

    env = {k: v for k, v in os.environ.items() if k != "FTAGENT_CONFIG"}
    env["FTAGENT_PASSWORD"] = "secret"
    res = subprocess.run([FTAGENT, "register", "--org", "acme", "--username", "admin"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 78, res.stderr
    assert "no server URL: set [server] url in /etc/ftagent/ftagent.conf (there is no such file" in res.stderr
