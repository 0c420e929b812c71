"""ftreport as a drop-in for virt-who: its configuration files, encrypted passwords, environment
variables and flags, unchanged.

The corpus (tests/ftreport/virtwho_corpus/, see its README) holds virt-who configurations in the
shapes of virt-who's documentation, templates and tests. Every file is either accepted with the
meaning virt-who gives it (asserted below, key by key) or refused with a message naming the file,
section and key, and why.

virt-who's password scheme is implemented here independently of ftreport (virt-who's own module
cannot be installed from the package index): AES-128-CBC under the first 16 bytes of each of the key
file's two hex lines (key, then IV), PKCS#7-style padding, hex text.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ftreport.config import load_config
from ftreport.errors import ConfigError
from ftreport.settings import Config, SourceConfig
from ftreport.sources.esx import esx_scheme, esx_settings, parse_esx_server
from ftreport.sources.fake import fake_settings
from ftreport.sources.libvirt import libvirt_settings
from tests.kit.ca import TLSFiles

from .conftest import VCSIM_PASSWORD, VCSIM_USER, Vcsim, run_ftreport

CORPUS = Path(__file__).resolve().parent / "virtwho_corpus"


def virtwho_encrypt(password: str, key_file: Path) -> str:
    """virt-who-password's output for ``password`` under ``key_file``, written from virt-who's
    documented scheme (not from ftreport's code)."""
    key_line, iv_line = key_file.read_text().split("\n")[:2]
    key, iv = bytes.fromhex(key_line.strip())[:16], bytes.fromhex(iv_line.strip())[:16]
    data = password.encode("utf-8")
    pad = 16 - len(data) % 16
    data += bytes([pad]) * pad
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return (enc.update(data) + enc.finalize()).hex()


def write_virtwho_key(path: Path, key: bytes, iv: bytes) -> Path:
    path.write_text(f"{key.hex()}\n{iv.hex()}\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A copy of the corpus with its key files private (0600, as virt-who-password leaves them)."""
    out = tmp_path / "corpus"
    shutil.copytree(CORPUS, out)
    for key in out.glob("*.key"):
        key.chmod(0o600)
    fake = out / "fake.conf"
    fake.write_text(fake.read_text().replace("@CORPUS@", str(out)))
    return out


def load(corpus: Path, *names: str, key: str = "virt-who.key", **glob: str) -> Config:
    """Load corpus files as virt-who would see them, with virt-who's key file for the test."""
    main = corpus / "_global.conf"
    lines = ["[global]", f"virtwho_key_file={corpus / key}", f"state_dir={corpus / 'state'}"]
    lines += [f"{k}={v}" for k, v in glob.items()]
    main.write_text("\n".join(lines) + "\n")
    return load_config(paths=[main, *(corpus / n for n in names)], environ={})


def one(config: Config, name: str) -> SourceConfig:
    (src,) = [s for s in config.sources if s.name == name]
    return src


# -- accepted files: the meaning virt-who gives them -------------------------------------------------

def check_virt_who_conf(corpus: Path) -> None:
    config = load(corpus, "virt-who.conf", "libvirt-local.conf")
    g = config.global_
    assert (g.interval, g.reporter_id, g.debug, g.oneshot) == (7200.0, "mgmt-1.example.com", False, False)
    src = one(config, "local")
    assert src.type == "libvirt" and libvirt_settings(src).server is None  # local libvirt
    assert src.owner == "ACME_Corporation" and src.hypervisor_id == "hostname"  # from [defaults]
    dest = src.require_destination()
    assert dest.url == "https://satellite.example.com:443/candlepin"
    assert (dest.username, dest.password) == ("virt_who_reporter", "rhsm pässword 16")


def check_template(corpus: Path) -> None:
    assert load(corpus, "template.conf").sources == ()


def check_esx(corpus: Path) -> None:
    src = one(load(corpus, "esx.conf"), "esx-prod")
    esx = esx_settings(src)
    assert (src.type, esx.server, esx.username, esx.password) == (
        "esx", "vcenter.example.com", "administrator@vsphere.local", "Secret123")
    assert src.hypervisor_id == "hwuuid" and src.options["env"] == "Library"
    dest = src.require_destination()
    assert dest.url == "https://satellite.example.com:443/rhsm" and dest.owner == "ACME_Corporation"
    assert (dest.username, dest.password) == ("virtwho_reporter", "Pa55")


def check_esx_encrypted(corpus: Path) -> None:
    src = one(load(corpus, "esx-encrypted.conf"), "esx-encrypted")
    esx = esx_settings(src)
    assert esx.password == "vc-Secret!"
    assert esx.username == "EXAMPLE\\reporter"  # virt-who: the backslash is not an escape
    assert parse_esx_server(esx.server) == ("vcenter.example.com", 8443, "/sdk")


def check_esx_encrypted_old_key(corpus: Path) -> None:
    src = one(load(corpus, "esx-encrypted-old-key.conf", key="virt-who-old.key"), "esx-old-key")
    assert esx_settings(src).password == "exactly16bytes!!"


def check_esx_http(corpus: Path) -> None:
    src = one(load(corpus, "esx-http.conf"), "esx-plain")
    assert esx_scheme(esx_settings(src).server) == "http"
    assert parse_esx_server(esx_settings(src).server) == ("vcenter-lab.example.com", 80, "/sdk")


def check_duplicate_keys(corpus: Path) -> None:
    src = one(load(corpus, "duplicate-keys.conf"), "dup")
    assert (esx_settings(src).server, esx_settings(src).password) == ("second.example.com", "p2")


def check_proxy(corpus: Path) -> None:
    dest = one(load(corpus, "proxy.conf"), "esx-proxied").require_destination()
    assert dest.url == "https://satellite.example.com:8443/candlepin"
    # rhsm_encrypted_proxy_password decrypted; user and password quoted for the proxy URL
    assert dest.proxy == "http://proxy%20user:proxy-secret@proxy.example.com:3128"
    assert dest.no_proxy == ".internal.example.com"


def check_libvirt_local(corpus: Path) -> None:
    src = one(load(corpus, "libvirt-local.conf"), "local")
    assert src.type == "libvirt" and libvirt_settings(src).server is None


def check_libvirt_remote(corpus: Path) -> None:
    config = load(corpus, "libvirt-remote.conf")
    assert libvirt_settings(one(config, "kvm-ssh")).server == "qemu+ssh://root@kvm1.example.com/system"
    assert libvirt_settings(one(config, "kvm-host")).server == "qemu+ssh://admin@kvm2.example.com/system"


def check_fake(corpus: Path) -> None:
    src = one(load(corpus, "fake.conf"), "fake-virt")
    assert src.type == "fake" and fake_settings(src).file == str(corpus / "fake-hypervisors.json")


def check_filters(corpus: Path) -> None:
    config = load(corpus, "filters.conf")
    src = one(config, "filtered")
    assert src.host_filter.include == ("esx-1.example.com", "esx-2.example.com", "esx-3*")
    # A quoted comma is part of the item (a value wholly in quotes loses them first, as in virt-who).
    assert src.host_filter.exclude == ("esx,retired.example.com", "old-*")
    assert src.host_filter.kind == "wildcards"
    assert src.parent_filter.include == ("Production Cluster", "Lab")
    assert src.parent_filter.exclude == ("Old*",)
    assert src.host_filter.allows("esx-31.example.com") and not src.host_filter.allows("esx-4.example.com")
    assert not src.host_filter.allows("esx,retired.example.com")
    old = one(config, "deprecated-spelling")
    assert old.host_filter.include == ("4c4c4544-*",) and old.host_filter.exclude == ("4c4c4544-0000*",)


def check_global_defaults(corpus: Path) -> None:
    config = load(corpus, "global-defaults.conf")
    g = config.global_
    assert g.interval == 120.0 and g.log_per_config and g.log_dir == Path("/var/log/rhsm/virtwho")
    assert one(config, "uses-defaults").require_destination().owner == "DefaultOrg"
    assert one(config, "overrides-defaults").require_destination().owner == "OtherOrg"
    assert one(config, "uses-defaults").require_destination().url == "https://candlepin.example.com:8443/candlepin"


ACCEPTED: dict[str, Callable[[Path], None]] = {
    "virt-who.conf": check_virt_who_conf,
    "template.conf": check_template,
    "esx.conf": check_esx,
    "esx-encrypted.conf": check_esx_encrypted,
    "esx-encrypted-old-key.conf": check_esx_encrypted_old_key,
    "esx-http.conf": check_esx_http,
    "duplicate-keys.conf": check_duplicate_keys,
    "proxy.conf": check_proxy,
    "libvirt-local.conf": check_libvirt_local,
    "libvirt-remote.conf": check_libvirt_remote,
    "fake.conf": check_fake,
    "filters.conf": check_filters,
    "global-defaults.conf": check_global_defaults,
}

# file -> (section, key, part of the reason)
REFUSED: dict[str, tuple[str, str, str]] = {
    **{f"refused-{t}.conf": (f"{t}-source", "type", "not supported") for t in ("hyperv", "rhevm", "xen",
                                                                              "kubevirt", "ahv", "vdsm")},
    "refused-satellite5.conf": ("esx-to-sat5", "sat_server", "Satellite 5 destinations are not supported"),
    "refused-hypervisor-id.conf": ("bad-id", "hypervisor_id", "must be one of uuid, hostname, hwuuid"),
    "refused-no-server.conf": ("no-server", "server", "needs the vCenter address"),
    "refused-filter-quote.conf": ("bad-filter", "filter_hosts", "unterminated double quote"),
    "refused-filter-type.conf": ("bad-filter-type", "filter_type", "must be one of wildcards, regex"),
    "refused-wrong-key.conf": ("wrong-key", "encrypted_password", "does not match virt-who key file"),
}


def test_every_corpus_file_is_checked() -> None:
    assert sorted(p.name for p in CORPUS.glob("*.conf")) == sorted([*ACCEPTED, *REFUSED])


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted_with_virt_whos_meaning(name: str, corpus: Path) -> None:
    ACCEPTED[name](corpus)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_naming_file_section_key_and_why(name: str, corpus: Path) -> None:
    section, key, reason = REFUSED[name]
    with pytest.raises(ConfigError) as info:
        load(corpus, name)
    err = info.value
    assert (Path(err.file or "").name, err.section, err.key) == (name, section, key)
    assert reason in err.reason
    assert str(err).startswith(f"{corpus / name} [{section}] {key}: ")


def test_http_esx_server_warns_that_it_is_unencrypted(corpus: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ftreport.config"):
        load(corpus, "esx-http.conf")
    assert any("plain HTTP" in r.getMessage() and "[esx-plain]" in r.getMessage() for r in caplog.records)


# -- virt-who's password scheme ------------------------------------------------------------------------

def test_corpus_ciphertexts_are_virt_whos_scheme() -> None:
    """The corpus' values are what virt-who's scheme gives (CBC with a fixed IV is deterministic)."""
    key, old = CORPUS / "virt-who.key", CORPUS / "virt-who-old.key"
    assert virtwho_encrypt("vc-Secret!", key) == "217df67d6979caeb0e36d5b862baad40"
    assert virtwho_encrypt("proxy-secret", key) == "11ca87bc6b64b3a29c0188a7e264321b"
    assert virtwho_encrypt("rhsm pässword 16", key) == (
        "eb26d159ded3a9ad971e4064e7b76714e997b6b42a0e01bfaaa86c0198baa5b6")
    assert virtwho_encrypt("exactly16bytes!!", old) == (
        "313b1057292443ba342c24324d0fa8cd65e917f33431f14ea01504de37a3552a")


@pytest.mark.parametrize("password", ["a", "fifteen-chars!!", "sixteen-chars!!!", "ünïcödé ✓ pass", "x" * 40])
def test_virtwho_encrypted_password_decrypts_with_global_virtwho_key_file(
        tmp_path: Path, password: str) -> None:
    vw_key = write_virtwho_key(tmp_path / "vw.key", os.urandom(16), os.urandom(16))
    enc = virtwho_encrypt(password, vw_key)
    conf = tmp_path / "vw.conf"
    conf.write_text(f"[global]\nvirtwho_key_file={vw_key}\nstate_dir={tmp_path / 'state'}\n\n"
                    f"[esx]\ntype=esx\nserver=vc.example.com\nusername=u\nencrypted_password={enc}\n"
                    f"owner=o\nrhsm_hostname=cp.example.com\nrhsm_username=r\nrhsm_encrypted_password={enc}\n")
    (src,) = load_config(paths=[conf], environ={}).sources
    assert esx_settings(src).password == password and src.require_destination().password == password


def test_both_formats_in_one_configuration(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    """New secrets from ftreport-password and old ones from virt-who-password side by side."""
    vw_key = write_virtwho_key(tmp_path / "vw.key", os.urandom(16), os.urandom(16))
    own_key = tmp_path / "ftreport.key"
    proc = subprocess.run([sys.executable, "-c", "from ftreport.cli import password_main; password_main()",
                           "--key-file", str(own_key), "-p", "new-secret"], capture_output=True, text=True,
                          timeout=60, env=isolated_env)
    assert proc.returncode == 0, proc.stderr
    own = proc.stdout.strip()
    conf = tmp_path / "both.conf"
    conf.write_text(f"[global]\nvirtwho_key_file={vw_key}\nkey_file={own_key}\n\n"
                    f"[esx]\ntype=esx\nserver=vc\nusername=u\nencrypted_password={own}\n"
                    f"owner=o\nrhsm_hostname=cp\nrhsm_username=r\n"
                    f"rhsm_encrypted_password={virtwho_encrypt('old-secret', vw_key)}\n")
    (src,) = load_config(paths=[conf], environ={}).sources
    assert (esx_settings(src).password, src.require_destination().password) == ("new-secret", "old-secret")


def test_virtwho_key_file_readable_by_others_is_refused(corpus: Path) -> None:
    (corpus / "virt-who.key").chmod(0o644)
    with pytest.raises(ConfigError, match=r"esx-encrypted\.conf \[esx-encrypted\] encrypted_password: "
                                          r".*virt-who\.key is accessible by others"):
        load(corpus, "esx-encrypted.conf")


def test_missing_virtwho_key_file_is_named(corpus: Path) -> None:
    with pytest.raises(ConfigError, match=r"encrypted_password: virt-who key file .*nope\.key does not exist"):
        load(corpus, "esx-encrypted.conf", key="nope.key")


# -- VIRTWHO_* environment variables -------------------------------------------------------------------

def test_virtwho_environment_applies_over_global(corpus: Path, caplog: pytest.LogCaptureFixture) -> None:
    conf = corpus / "esx.conf"
    env = {"VIRTWHO_DEBUG": "1", "VIRTWHO_ONE_SHOT": "true", "VIRTWHO_INTERVAL": "120",
           "VIRTWHO_REPORTER_ID": "from-env", "VIRTWHO_LOG_DIR": "/var/log/x", "VIRTWHO_LOG_FILE": "x.log",
           "VIRTWHO_LOG_PER_CONFIG": "TRUE", "VIRTWHO_SATELLITE6": "1", "VIRTWHO_BACKGROUND": "1",
           "VIRTWHO_ESX": "1", "VIRTWHO_ESX_SERVER": "vc.example.com", "VIRTWHO_SATELLITE5": "1",
           "VIRTWHO_HYPERV": "", "VIRTWHO_FROBNICATE": "yes"}
    with caplog.at_level(logging.WARNING, logger="ftreport.config"):
        g = load_config(paths=[conf], environ=env).global_
    assert (g.debug, g.oneshot, g.interval, g.reporter_id) == (True, True, 120.0, "from-env")
    assert (g.log_dir, g.log_file, g.log_per_config) == (Path("/var/log/x"), "x.log", True)
    warned = " | ".join(r.getMessage() for r in caplog.records)
    for name in ("VIRTWHO_ESX:", "VIRTWHO_ESX_SERVER:", "VIRTWHO_SATELLITE5:", "VIRTWHO_FROBNICATE:"):
        assert name in warned
    assert "configuring a source through the environment is not supported" in warned
    for quiet in ("VIRTWHO_HYPERV", "VIRTWHO_SATELLITE6", "VIRTWHO_BACKGROUND", "VIRTWHO_DEBUG"):
        assert quiet not in warned
    # virt-who: only "1" and "true" turn a flag on; an empty variable is off
    g = load_config(paths=[conf], environ={"VIRTWHO_DEBUG": "0", "VIRTWHO_ONE_SHOT": ""}).global_
    assert (g.debug, g.oneshot) == (False, False)


def test_malformed_virtwho_interval_is_named(corpus: Path) -> None:
    with pytest.raises(ConfigError, match=r"environment VIRTWHO_INTERVAL: expected a whole number"):
        load_config(paths=[corpus / "esx.conf"], environ={"VIRTWHO_INTERVAL": "hourly"})


# -- the command line, as a user runs it ---------------------------------------------------------------

def test_one_shot_print_with_virt_who_flags_and_environment(corpus: Path, isolated_env: dict[str, str]) -> None:
    env = {**isolated_env, "VIRTWHO_DEBUG": "1"}
    proc = run_ftreport(["--one-shot", "-p", "-c", str(corpus / "fake.conf")], env)
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    assert [h["hypervisorId"]["hypervisorId"] for h in body["hypervisors"]] == [
        "7e98b6ea-0af1-4afa-b846-919549bb0fe2"]
    assert " DEBUG " in proc.stderr  # VIRTWHO_DEBUG=1 turned debug logging on


def test_status_json_on_a_configuration_error(corpus: Path, isolated_env: dict[str, str]) -> None:
    for flags in (["-s", "-j"], ["--status", "--json"]):
        proc = run_ftreport([*flags, "-c", str(corpus / "refused-hypervisor-id.conf")], isolated_env)
        assert proc.returncode == 78
        out = json.loads(proc.stdout)
        assert out["ok"] is False and out["sources"] == {} and out["servers"] == {}
        err = out["config_error"]
        assert (Path(err["file"]).name, err["section"], err["key"]) == (
            "refused-hypervisor-id.conf", "bad-id", "hypervisor_id")
        assert "must be one of" in err["reason"]
    proc = run_ftreport(["-s", "-j", "-c", str(corpus / "template.conf")], isolated_env)
    assert proc.returncode == 78 and "no sources configured" in json.loads(proc.stdout)["config_error"]["message"]


def test_log_dir_and_log_per_config(corpus: Path, tmp_path: Path, isolated_env: dict[str, str]) -> None:
    two = tmp_path / "two.conf"
    two.write_text((corpus / "fake.conf").read_text() + "\n[second]\ntype=fake\nfile=builtin:report1\n")
    logs = tmp_path / "logs"
    proc = run_ftreport(["-p", "-m", "-l", str(logs), "-c", str(two)], isolated_env)
    assert proc.returncode == 0, proc.stderr
    first, second = (logs / "ftreport.fake-virt.log").read_text(), (logs / "ftreport.second.log").read_text()
    assert "fake-virt: 1 hypervisors, 1 guests" in first and "second" not in first
    assert "second: 2 hypervisors" in second and "fake-virt" not in second
    # without log_per_config: one file, named by log_file, holding everything
    proc = run_ftreport(["-p", "-c", str(two)], {**isolated_env, "VIRTWHO_LOG_DIR": str(logs),
                                                 "VIRTWHO_LOG_FILE": "all.log"})
    assert proc.returncode == 0, proc.stderr
    text = (logs / "all.log").read_text()
    assert "fake-virt: 1 hypervisors" in text and "second: 2 hypervisors" in text


def test_ftreport_password_help_and_p(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    cmd = [sys.executable, "-c", "from ftreport.cli import password_main; password_main()"]
    helped = subprocess.run([*cmd, "-h"], capture_output=True, text=True, timeout=60, env=isolated_env)
    assert helped.returncode == 0 and "-p, --password" in helped.stdout
    key = tmp_path / "k"
    made = subprocess.run([*cmd, "--key-file", str(key), "-p", "pw-from-p"], capture_output=True, text=True,
                          timeout=60, env=isolated_env)
    assert made.returncode == 0, made.stderr
    assert "encrypted_password" in made.stderr and (key.stat().st_mode & 0o777) == 0o600
    conf = tmp_path / "c.conf"
    conf.write_text(f"[global]\nkey_file={key}\n[kvm]\ntype=libvirt\npassword=\nencrypted_password={made.stdout.strip()}\n")
    assert libvirt_settings(load_config(paths=[conf], environ={}).sources[0]).password == "pw-from-p"


@pytest.fixture
def plain_vcsim(tmp_path: Path, test_ca: TLSFiles) -> Any:
    sim = Vcsim(workdir=tmp_path / "vcsim-http", tls=test_ca,
                args=["-plain-http", "-cluster", "1", "-host", "2", "-vm", "2", "-ft", "1"])
    sim.start()
    yield sim
    sim.stop()


def test_esx_over_plain_http(plain_vcsim: Vcsim, tmp_path: Path, isolated_env: dict[str, str]) -> None:
    assert plain_vcsim.url.startswith("http://")
    conf = tmp_path / "http.conf"
    conf.write_text(f"[lab]\ntype=esx\nserver={plain_vcsim.url}\nusername={VCSIM_USER}\n"
                    f"password={VCSIM_PASSWORD}\n")
    proc = run_ftreport(["-p", "-c", str(conf)], isolated_env)
    assert proc.returncode == 0, proc.stderr
    body: Mapping[str, Any] = json.loads(proc.stdout)
    assert len(body["hypervisors"]) == 2
    assert "plain HTTP" in proc.stderr and "unencrypted" in proc.stderr


def test_global_configs_replaces_the_directory(corpus: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """virt-who's ``[global] configs``: the listed files are read instead of the directory."""
    main = tmp_path / "ftreport.conf"
    main.write_text(f"[global]\nconfigs={corpus / 'esx.conf'}, \"{corpus / 'libvirt-local.conf'}\"\n")
    confd = tmp_path / "ftreport.d"
    confd.mkdir()
    (confd / "ignored.conf").write_text("[ignored]\ntype=fake\n")
    monkeypatch.setenv("FTREPORT_CONFIG", str(main))
    monkeypatch.setenv("FTREPORT_CONFIG_DIR", str(confd))
    config = load_config(environ={})
    assert [s.name for s in config.sources] == ["esx-prod", "local"]
    # -c files win over [global] configs, as they replace the directory
    assert [s.name for s in load_config([str(corpus / "fake.conf")], environ={}).sources] == ["fake-virt"]
