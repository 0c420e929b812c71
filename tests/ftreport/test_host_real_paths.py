"""virt-who's fallbacks on a registered host, at the real paths: ``/etc/rhsm/rhsm.conf``, its CA in
``/etc/rhsm/ca/`` and the host's consumer certificate in ``/etc/pki/consumer``, each a tmpfs of a private
mount namespace (:mod:`tests.kit.mountns`), with no ``FTREPORT_ROOT``. ftreport runs in the namespace;
ftmock, outside it on loopback, is the server rhsm.conf names."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt

from tests.conftest import FtmockServer
from tests.kit.mountns import MountNamespace, rhel_namespace
from tests.kit.orgs import new_org
from tests.kit.rhsmhost import register_host, write_rhsm_conf

from .test_host_registration import consumer, hypervisors


def ftreport(ns: MountNamespace, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return ns.run([sys.executable, "-m", "ftreport", *args], env=env)


def host_env(isolated_env: dict[str, str]) -> dict[str, str]:
    """The test's environment without the system root: ftreport's configuration and state stay the
    test's, the host registration is the namespace's own."""
    return {k: v for k, v in isolated_env.items() if k != "FTREPORT_ROOT"}


def test_a_virt_who_configuration_without_rhsm_settings_uses_etc_rhsm_and_etc_pki_consumer(
        ftmock_session: FtmockServer, tmp_path: Path, isolated_env: dict[str, str],
        closing: Callable[[Any], Any]) -> None:
    org = new_org(ftmock_session)
    seed = tmp_path / "seed"
    write_rhsm_conf(seed, ftmock_session)
    register_host(seed, ftmock_session, org, ctype="hypervisor", name="virt-who-host.example.com")
    ns = closing(rhel_namespace(seed, tmp_path))
    conf = tmp_path / "virt-who.d" / "kvm.conf"
    conf.parent.mkdir()
    conf.write_text(f"[kvm]\ntype=libvirt\nserver=test:///default\nowner={org}\nenv=Library\n")
    env = host_env(isolated_env)
    out = ftreport(ns, ["-c", str(conf), "-o"], env)
    assert out.returncode == 0, out.stderr
    url = f"https://127.0.0.1:{ftmock_session.port}/candlepin"
    assert f"report accepted by {org}@{url}: 1 hypervisors" in out.stderr
    assert len(hypervisors(ftmock_session, org)) == 1
    out = ftreport(ns, ["-c", str(conf), "-s", "-j"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["servers"][f"{org}@{url}"]["ok"] is True


def test_without_configuration_the_local_libvirt_goes_to_the_hosts_consumer_in_etc_pki(
        ftmock_session: FtmockServer, tmp_path: Path, isolated_env: dict[str, str],
        closing: Callable[[Any], Any]) -> None:
    """No configuration file (the main file and the directory the environment names do not exist): the
    local libvirt (libvirt's test driver standing in for qemu:///system) is reported as the guest list
    of the consumer whose certificate is /etc/pki/consumer/cert.pem."""
    org = new_org(ftmock_session)
    seed = tmp_path / "seed"
    write_rhsm_conf(seed, ftmock_session)
    host = register_host(seed, ftmock_session, org, name="kvm-host.example.com")
    ns = closing(rhel_namespace(seed, tmp_path))
    env = dict(host_env(isolated_env), LIBVIRT_DEFAULT_URI="test:///default")
    assert not Path(env["FTREPORT_CONFIG"]).exists() and not Path(env["FTREPORT_CONFIG_DIR"]).exists()
    out = ftreport(ns, ["-o"], env)
    assert out.returncode == 0, out.stderr
    assert "reporting the local libvirt" in out.stderr
    assert f"report accepted by consumer {host}@https://127.0.0.1:{ftmock_session.port}/candlepin" in out.stderr
    domains = {d.UUIDString() for d in libvirt.openReadOnly("test:///default").listAllDomains(0)}
    reported = consumer(ftmock_session, host)["guestIds"]
    assert isinstance(reported, list) and {g["guestId"] for g in reported} == domains
    assert hypervisors(ftmock_session, org) == set()  # a guest list, not a hypervisor check-in
