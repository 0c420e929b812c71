"""virt-who's fallbacks on a registered host: the entitlement server from rhsm.conf, the host's consumer
certificate for authentication, rhsm.conf's CA directory, and the local libvirt when nothing is
configured. The host lives under a test root (``FTREPORT_ROOT``); its registration is a real one with
ftmock. The same at the real paths, in a private mount namespace: ``test_host_real_paths.py``."""

from __future__ import annotations

import json
from pathlib import Path

import libvirt
import pytest
import requests

from ftreport.config import LOCAL_SOURCE, load_config
from ftreport.errors import ConfigError
from tests.conftest import FtmockServer
from tests.kit.orgs import new_org
from tests.kit.rhsmhost import register_host, write_rhsm_conf

from .conftest import run_ftreport, write_config


def consumer(server: FtmockServer, uuid: str) -> dict[str, object]:
    r = requests.get(f"{server.url}/consumers/{uuid}", auth=server.admin_auth, verify=str(server.ca_path),
                     timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def hypervisors(server: FtmockServer, org: str) -> set[str]:
    r = requests.get(f"{server.url}/owners/{org}/consumers", params={"type": "hypervisor"},
                     auth=server.admin_auth, verify=str(server.ca_path), timeout=30)
    assert r.status_code == 200, r.text
    return {c["hypervisorId"]["hypervisorId"] for c in r.json() if c.get("hypervisorId")}


def test_keys_a_section_leaves_out_come_from_rhsm_conf(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    """Each rhsm_* key on its own: the section's value, else rhsm.conf's (with interpolation), as
    virt-who merges them; credentials: the section's user, else the host's consumer certificate; CA:
    rhsm_ca_cert, else rhsm.conf's ca_cert_dir."""
    root = Path(isolated_env["FTREPORT_ROOT"])
    (root / "etc/rhsm/ca").mkdir(parents=True)
    (root / "etc/rhsm/ca/site.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (root / "etc/rhsm/rhsm.conf").write_text(
        "[server]\nhostname = sat.example.com\nport = 8443\nprefix = /rhsm\nproxy_hostname = proxy.example.com\n"
        "proxy_port = 3129\nproxy_user = pu\nproxy_password = pp\nno_proxy = .internal\n"
        "[rhsm]\nbase = /etc/rhsm\nca_cert_dir = %(base)s/ca/\nconsumerCertDir = /etc/pki/consumer\n")
    pki = root / "etc/pki/consumer"
    pki.mkdir(parents=True)
    (pki / "cert.pem").write_text("x")
    (pki / "key.pem").write_text("x")
    own_ca = tmp_path / "own-ca.pem"
    own_ca.write_text("x")
    conf = write_config(tmp_path / "vw.conf", {
        "bare": {"type": "fake", "owner": "ACME"},
        "own-server": {"type": "fake", "owner": "ACME", "rhsm_hostname": "cp.example.com",
                       "rhsm_username": "reporter", "rhsm_password": "pw", "rhsm_ca_cert": own_ca},
    })
    bare, own = (s.require_destination() for s in load_config([str(conf)]).sources)
    assert bare.url == "https://sat.example.com:8443/rhsm"
    assert bare.proxy == "http://pu:pp@proxy.example.com:3129" and bare.no_proxy == ".internal"
    assert (bare.username, bare.cert_file, bare.key_file) == (None, str(pki / "cert.pem"), str(pki / "key.pem"))
    assert bare.ca_cert == str(root / "etc/rhsm/ca")
    # A section naming its server keeps rhsm.conf's port and prefix, as virt-who does.
    assert own.url == "https://cp.example.com:8443/rhsm"
    assert (own.username, own.password, own.cert_file, own.ca_cert) == ("reporter", "pw", None, str(own_ca))
    # A bad value in rhsm.conf is named there.
    rhsm_conf = root / "etc/rhsm/rhsm.conf"
    rhsm_conf.write_text("[server]\nport = https\n")
    with pytest.raises(ConfigError) as err:
        load_config([str(conf)])
    assert (err.value.file, err.value.section, err.value.key) == (str(rhsm_conf), "server", "port")
    # Without rhsm.conf there is no server to fall back on, and the message says where it looked.
    rhsm_conf.unlink()
    section = load_config([str(conf)]).sources[0]
    with pytest.raises(ConfigError, match=f"register this host with subscription-manager .there is no {rhsm_conf}"):
        section.require_destination()


def test_a_virt_who_configuration_without_rhsm_settings_reports_as_the_host(
        ftmock_session: FtmockServer, tmp_path: Path, isolated_env: dict[str, str]) -> None:
    """A virt-who file naming only the hypervisor manager and the owner, on a host whose rhsm.conf and
    consumer certificate point at ftmock: the report goes there, authenticated as the host."""
    org = new_org(ftmock_session)
    root = Path(isolated_env["FTREPORT_ROOT"])
    write_rhsm_conf(root, ftmock_session)
    register_host(root, ftmock_session, org, ctype="hypervisor", name="virt-who-host.example.com")
    conf = tmp_path / "virt-who.d" / "kvm.conf"
    conf.parent.mkdir()
    conf.write_text(f"[kvm]\ntype=libvirt\nserver=test:///default\nowner={org}\nenv=Library\n")
    out = run_ftreport(["-c", str(conf), "-o"], isolated_env)
    assert out.returncode == 0, out.stderr
    url = f"https://127.0.0.1:{ftmock_session.port}/candlepin"
    assert f"report accepted by {org}@{url}: 1 hypervisors" in out.stderr
    assert len(hypervisors(ftmock_session, org)) == 1
    out = run_ftreport(["-c", str(conf), "-s", "-j"], isolated_env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["servers"][f"{org}@{url}"]["ok"] is True
    # The host's consumer may check in only for its own org: an owner it does not belong to fails,
    # and --status says which org the certificate is of.
    other = new_org(ftmock_session)
    conf.write_text(f"[kvm]\ntype=libvirt\nserver=test:///default\nowner={other}\n")
    out = run_ftreport(["-c", str(conf), "-o"], isolated_env)
    assert out.returncode == 1 and "403" in out.stderr and hypervisors(ftmock_session, other) == set()
    out = run_ftreport(["-c", str(conf), "-s"], isolated_env)
    assert out.returncode == 1 and f"belongs to org {org}, not {other}" in out.stdout


def test_without_configuration_the_local_libvirt_goes_to_the_hosts_consumer(
        ftmock_session: FtmockServer, isolated_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """No configuration file at all: the local libvirt (libvirt's test driver standing in for
    qemu:///system through libvirt's own LIBVIRT_DEFAULT_URI) is reported as virt-who reports it,
    as the guest list of the registered host's own consumer."""
    org = new_org(ftmock_session)
    root = Path(isolated_env["FTREPORT_ROOT"])
    write_rhsm_conf(root, ftmock_session)
    host = register_host(root, ftmock_session, org, name="kvm-host.example.com")
    env = {k: v for k, v in isolated_env.items() if k not in ("FTREPORT_CONFIG", "FTREPORT_CONFIG_DIR")}
    env["LIBVIRT_DEFAULT_URI"] = "test:///default"
    out = run_ftreport(["-o"], env)
    assert out.returncode == 0, out.stderr
    assert f"looked for {root}/etc/ftreport.conf and {root}/etc/ftreport.d/*.conf): reporting the local " \
           "libvirt" in out.stderr
    assert f"report accepted by consumer {host}@https://127.0.0.1:{ftmock_session.port}/candlepin" in out.stderr
    domains = {d.UUIDString() for d in libvirt.openReadOnly("test:///default").listAllDomains(0)}
    reported = consumer(ftmock_session, host)["guestIds"]
    assert isinstance(reported, list) and {g["guestId"] for g in reported} == domains
    assert hypervisors(ftmock_session, org) == set()  # a guest list, not a hypervisor check-in
    # The same with the root's own ftreport.conf holding only [global]: still no source, still local.
    (root / "etc" / "ftreport.conf").write_text("[global]\ninterval=120\n")
    monkeypatch.delenv("FTREPORT_CONFIG")
    monkeypatch.delenv("FTREPORT_CONFIG_DIR")
    config = load_config()
    assert config.global_.interval == 120 and [s.name for s in config.sources] == [LOCAL_SOURCE]
    assert config.sources[0].require_destination().guests_of == host


def test_a_consumer_certificate_checks_in_only_its_org_and_follows_only_its_jobs(
        ftmock_session: FtmockServer, tmp_path: Path) -> None:
    """ftmock's side, as Candlepin: a consumer's certificate may post hypervisor reports for its
    own org and read the jobs it started; another org, or another's job, is refused."""
    org = new_org(ftmock_session)
    uuid = register_host(tmp_path, ftmock_session, org)
    pki = tmp_path / "etc/pki/consumer"
    cert = (str(pki / "cert.pem"), str(pki / "key.pem"))
    body = {"hypervisors": [{"hypervisorId": {"hypervisorId": "hv-1"}, "guestIds": [], "facts": {}}]}
    r = requests.post(f"{ftmock_session.url}/hypervisors/{org}", json=body, cert=cert,
                      verify=str(ftmock_session.ca_path), timeout=30)
    assert r.status_code == 200, r.text
    job = r.json()["id"]
    r = requests.get(f"{ftmock_session.url}/jobs/{job}", cert=cert, verify=str(ftmock_session.ca_path), timeout=30)
    assert r.status_code == 200 and r.json()["id"] == job
    other = new_org(ftmock_session)
    r = requests.post(f"{ftmock_session.url}/hypervisors/{other}", json=body, cert=cert,
                      verify=str(ftmock_session.ca_path), timeout=30)
    assert r.status_code == 403
    stranger = register_host(tmp_path / "other", ftmock_session, org)
    spki = tmp_path / "other/etc/pki/consumer"
    r = requests.get(f"{ftmock_session.url}/jobs/{job}", cert=(str(spki / "cert.pem"), str(spki / "key.pem")),
                     verify=str(ftmock_session.ca_path), timeout=30)
    assert r.status_code == 404 and stranger != uuid
    # Nothing else of the org opens to the certificate.
    r = requests.get(f"{ftmock_session.url}/owners/{org}/consumers", cert=cert,
                     verify=str(ftmock_session.ca_path), timeout=30)
    assert r.status_code == 403
