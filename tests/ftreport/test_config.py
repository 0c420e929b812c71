"""Configuration: virt-who files work unchanged; bad files are named by file, section and key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ftreport.config import load_config
from ftreport.errors import ConfigError
from ftreport.password import decrypt_password, encrypt_password
from ftreport.sources.esx import EsxSettings, parse_esx_server
from ftreport.sources.libvirt import libvirt_settings

from .conftest import run_ftreport, write_config

VIRT_WHO_ESX = """\
# An existing virt-who configuration, copied as is.
[esx-prod]
type=esx
server=vcenter.example.com
username=administrator@vsphere.local
password=Secret123
owner=ACME_Corporation
env=Library
hypervisor_id=hostname
rhsm_hostname=satellite.example.com
rhsm_port=443
rhsm_prefix=/rhsm
rhsm_username=virtwho_reporter
rhsm_password=Pa55
filter_hosts=esx-*.example.com, "esx-ha-[0-9]+"
exclude_hosts='esx-retired.example.com'
"""

VIRT_WHO_GLOBAL = """\
[global]
interval=7200
debug=False
oneshot=False
reporter_id=mgmt-host-1

[defaults]
owner=ACME_Corporation
hypervisor_id=uuid
"""


def test_virt_who_section_parses_unchanged(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    conf = tmp_path / "virt-who.conf"
    conf.write_text(VIRT_WHO_ESX)
    config = load_config([str(conf)])
    (src,) = config.sources
    assert src.name == "esx-prod" and src.type == "esx"
    esx = src.settings
    assert isinstance(esx, EsxSettings)
    assert esx.server == "vcenter.example.com" and parse_esx_server(esx.server) == ("vcenter.example.com", 443, "/sdk")
    assert esx.username == "administrator@vsphere.local" and esx.password == "Secret123"
    assert src.hypervisor_id == "hostname"
    assert src.host_filter.include == ("esx-*.example.com", "esx-ha-[0-9]+")
    assert src.host_filter.exclude == ("esx-retired.example.com",)
    assert src.host_filter.allows("esx-7.example.com") and src.host_filter.allows("esx-ha-12")
    assert not src.host_filter.allows("esx-retired.example.com")
    assert not src.host_filter.allows("kvm-1.example.com")
    dest = src.require_destination()
    assert dest.url == "https://satellite.example.com:443/rhsm"
    assert dest.owner == "ACME_Corporation" and dest.username == "virtwho_reporter" and dest.password == "Pa55"
    assert dest.insecure is False


def test_main_file_defaults_and_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          isolated_env: dict[str, str]) -> None:
    main = tmp_path / "ftreport.conf"
    main.write_text(VIRT_WHO_GLOBAL + "rhsm_hostname=https://cp.example.com:8443\n")
    confd = tmp_path / "ftreport.d"
    confd.mkdir()
    (confd / "b.conf").write_text("[kvm]\ntype=libvirt\nserver=kvm1.example.com\nusername=root\n")
    (confd / "a.conf").write_text("[fake]\ntype=fake\nfile=builtin:report2\nowner=Other\n")
    (confd / "ignored.txt").write_text("[nope]\ntype=nope\n")
    monkeypatch.setenv("FTREPORT_CONFIG", str(main))
    monkeypatch.setenv("FTREPORT_CONFIG_DIR", str(confd))
    config = load_config()
    assert config.global_.interval == 7200 and config.global_.reporter_id == "mgmt-host-1"
    assert [s.name for s in config.sources] == ["fake", "kvm"]
    fake, kvm = config.sources
    assert fake.require_destination().owner == "Other"
    assert kvm.require_destination().owner == "ACME_Corporation"
    assert kvm.require_destination().url == "https://cp.example.com:8443/candlepin"
    assert libvirt_settings(kvm).server == "qemu+ssh://root@kvm1.example.com/system"
    # -c replaces the directory (the main file still gives [global]).
    only = write_config(tmp_path / "only.conf", {"x": {"type": "fake"}})
    config = load_config([str(only)])
    assert [s.name for s in config.sources] == ["x"] and config.global_.interval == 7200


@pytest.mark.parametrize(("server", "expected"), [
    ("vc.example.com", ("vc.example.com", 443, "/sdk")),
    ("vc.example.com:8443", ("vc.example.com", 8443, "/sdk")),
    ("https://vc.example.com", ("vc.example.com", 443, "/sdk")),
    ("https://vc.example.com:9443/sdk", ("vc.example.com", 9443, "/sdk")),
    ("https://[::1]:9443/sdk/", ("::1", 9443, "/sdk")),
])
def test_esx_server_forms(server: str, expected: tuple[str, int, str]) -> None:
    assert parse_esx_server(server) == expected


ESX_OK = {"type": "esx", "server": "vc", "username": "u", "password": "p"}


@pytest.mark.parametrize(("section", "key", "message"), [
    ({**ESX_OK, "hypervisor_id": "serial"}, "hypervisor_id", "must be one of uuid, hostname, hwuuid"),
    ({**ESX_OK, "type": "hyperv"}, "type", "not supported by ftreport"),
    ({**ESX_OK, "type": "vmware"}, "type", "unknown source type"),
    ({k: v for k, v in ESX_OK.items() if k != "server"}, "server", "needs the vCenter address"),
    ({**ESX_OK, "server": "ftp://vc"}, "server", "not a vCenter address"),
    ({k: v for k, v in ESX_OK.items() if k != "password"}, "password", "needs password or encrypted_password"),
    ({**ESX_OK, "ca_cert": "/does/not/exist.pem"}, "ca_cert", "no such file"),
    ({**ESX_OK, "insecure": "maybe"}, "insecure", "expected a boolean"),
    ({**ESX_OK, "rhsm_hostname": "cp", "owner": "o", "rhsm_port": "https"}, "rhsm_port", "expected an integer"),
    ({**ESX_OK, "encrypted_password": "00ff", "password": ""}, "encrypted_password", "neither"),
    ({"type": "fake", "file": "/no/such.json"}, "file", "no such file"),
])
def test_bad_values_name_file_section_and_key(tmp_path: Path, isolated_env: dict[str, str],
                                              section: dict[str, str], key: str, message: str) -> None:
    conf = write_config(tmp_path / "bad.conf", {"src1": section})
    with pytest.raises(ConfigError) as info:
        load_config([str(conf)])
    err = info.value
    assert (err.file, err.section, err.key) == (str(conf), "src1", key)
    assert message in str(err)
    assert str(err).startswith(f"{conf} [src1] {key}: ")


def test_bad_global_and_syntax_errors(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    conf = write_config(tmp_path / "g.conf", {"global": {"interval": "soon"}, "f": {"type": "fake"}})
    with pytest.raises(ConfigError, match=r"g\.conf \[global\] interval: expected an integer"):
        load_config([str(conf)])
    dup = tmp_path / "dup.conf"
    dup.write_text("[a]\ntype=esx\ntype=fake\n")  # virt-who: the last value of a repeated key wins
    assert [s.type for s in load_config([str(dup)]).sources] == ["fake"]
    junk = tmp_path / "junk.conf"
    junk.write_text("type=fake\n")
    with pytest.raises(ConfigError, match=r"junk\.conf: line 1: a key outside any \[section\]"):
        load_config([str(junk)])
    other = write_config(tmp_path / "other.conf", {"a": {"type": "fake"}})
    with pytest.raises(ConfigError, match=r"other\.conf \[a\]: source section also defined in .*dup\.conf"):
        load_config([str(write_config(tmp_path / "dup.conf", {"a": {"type": "fake"}})), str(other)])
    with pytest.raises(ConfigError, match=r"missing\.conf: file does not exist"):
        load_config([str(tmp_path / "missing.conf")])


def test_cli_reports_config_errors_with_exit_78(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    conf = write_config(tmp_path / "bad.conf", {"vc": {**ESX_OK, "hypervisor_id": "mac"}})
    out = run_ftreport(["-c", str(conf), "-p"], isolated_env)
    assert out.returncode == 78
    assert f"{conf} [vc] hypervisor_id: must be one of" in out.stderr
    # Sending needs a server and an owner; printing does not.
    conf = write_config(tmp_path / "noserver.conf", {"f": {"type": "fake"}})
    out = run_ftreport(["-c", str(conf), "-o"], isolated_env)
    assert out.returncode == 78
    assert f"{conf} [f] rhsm_hostname: no entitlement server" in out.stderr
    out = run_ftreport(["-c", str(conf), "-p"], isolated_env)
    assert out.returncode == 0, out.stderr


def test_password_encryption_roundtrip_and_key_file(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    key = tmp_path / "state" / "key"
    enc = encrypt_password("Secret123", key)
    assert "Secret123" not in enc
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert decrypt_password(enc, key) == "Secret123"
    assert encrypt_password("Secret123", key) != enc  # fresh nonce every time
    tampered = enc[:-2] + ("00" if enc[-2:] != "00" else "11")
    with pytest.raises(Exception, match="does not match key file"):
        decrypt_password(tampered, key)
    os.chmod(key, 0o644)
    with pytest.raises(Exception, match="must be mode 0600"):
        decrypt_password(enc, key)


def test_password_command_and_encrypted_password_in_config(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    glob = write_config(tmp_path / "global.conf", {"global": {"key_file": tmp_path / "k" / "key"}})
    out = run_ftreport(["password", "-c", str(glob)], isolated_env, stdin="vc-pass\n")
    assert out.returncode == 0, out.stderr
    encrypted = out.stdout.strip()
    assert stat.S_IMODE((tmp_path / "k" / "key").stat().st_mode) == 0o600
    conf = write_config(tmp_path / "esx.conf", {
        "global": {"key_file": tmp_path / "k" / "key"},
        "vc": {"type": "esx", "server": "vc", "username": "u", "encrypted_password": encrypted,
               "rhsm_hostname": "cp", "owner": "o", "rhsm_username": "r"},
    })
    (src,) = load_config([str(conf)]).sources
    assert isinstance(src.settings, EsxSettings) and src.settings.password == "vc-pass"
    # The same key encrypts rhsm_encrypted_password too.
    out = run_ftreport(["password", "--key-file", str(tmp_path / "k" / "key"), "--password", "cp-pass"],
                       isolated_env)
    conf.write_text(conf.read_text().replace("rhsm_username=r", f"rhsm_username=r\nrhsm_encrypted_password={out.stdout.strip()}"))
    (src,) = load_config([str(conf)]).sources
    assert src.require_destination().password == "cp-pass"
