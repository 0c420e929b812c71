"""End-to-end plumbing: the three programs as processes, a guest in a directory, admin calls."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import FtmockServer
from tests.kit.guest import Guest, make_guest

BIN = Path(sys.executable).parent
PRODUCT = "RH00001"

# The simulator fixtures, shared with the reporter's own tests.
from tests.ftreport.conftest import VCSIM_PASSWORD, VCSIM_USER, Vcsim, test_ca, vcsim  # noqa: E402, F401


def run(cmd: str, *args: str, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(BIN / cmd), *args], env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


class Admin:
    def __init__(self, server: FtmockServer) -> None:
        self.server = server

    def call(self, method: str, path: str, **kw: Any) -> Any:
        r = requests.request(method, self.server.url + path, auth=self.server.admin_auth, timeout=30,
                             verify=str(self.server.ca_path), **kw)
        assert r.status_code < 300, (method, path, r.status_code, r.text)
        return r.json() if r.content else None

    def virt_pool(self, org: str) -> str:
        self.call("POST", f"/owners/{org}/products", json={"id": PRODUCT, "name": "RHEL for Virtual Datacenters",
                                                           "attributes": {"virt_limit": "unlimited"}})
        return str(self.call("POST", f"/owners/{org}/pools", json={"productId": PRODUCT, "quantity": 50})["id"])

    def entitle_hypervisors(self, org: str, pool: str) -> None:
        for hyp in self.call("GET", f"/owners/{org}/consumers?type=hypervisor"):
            if not self.call("GET", f"/consumers/{hyp['uuid']}/entitlements"):
                self.call("POST", f"/consumers/{hyp['uuid']}/entitlements?pool={pool}")

    def ft_consumers(self, org: str) -> dict[str, dict[str, Any]]:
        """instanceUUID (lower case) -> consumer."""
        return {c["facts"]["instanceUUID"].lower(): c for c in self.call("GET", f"/owners/{org}/consumers")
                if "instanceUUID" in c["facts"]}

    def entitlement_hosts(self, consumer: str) -> list[str]:
        """The hypervisorId of the derived pool behind each entitlement of a consumer."""
        return sorted(str(e["pool"]["hypervisorId"]) for e in self.call("GET", f"/consumers/{consumer}/entitlements"))


#: An FT guest's lease in these tests: renewals every second, generous deadlines (the three
#: programs run together on a loaded machine), a fence that does nothing.
VM_LEASE = {"renew_interval": "1", "ttl": "20", "margin": "5", "fence_command": "/bin/true"}


def vm_guest(root: Path, server: FtmockServer, virt_uuid: str, lease: bool = False) -> Guest:
    """The agent of an FT VM with ``virt_uuid`` (RHEL installed), not registered; with ``lease``, it
    holds the FT group's lease when asked (``heartbeat --once``)."""
    return make_guest(root, server, virt_uuid=virt_uuid, product=(PRODUCT, "RHEL"),
                      agent_options={"log_file": root / "ftagent.log"}, lease=VM_LEASE if lease else None)


@contextmanager
def esx_reporter(tmp_path: Path, server: FtmockServer, org: str, sim: Vcsim) -> Iterator[subprocess.Popen[bytes]]:
    """``ftreport`` as a daemon reporting the simulator's hosts and guests to ``org`` (its log in
    ``tmp_path/ftreport.log``), stopped when the block ends."""
    conf = report_config(tmp_path / "ftreport.conf", server, org,
                         {"type": "esx", "server": sim.url, "username": VCSIM_USER, "password": VCSIM_PASSWORD,
                          "ca_cert": sim.tls.ca_path},
                         extra_global={"settle": 0.2})
    with open(tmp_path / "ftreport.log", "wb") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "ftreport", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                  stderr=log)
        try:
            yield daemon
        finally:
            daemon.terminate()
            daemon.wait(timeout=20)


def report_config(path: Path, server: FtmockServer, org: str, source: dict[str, object],
                  extra_global: dict[str, object] | None = None) -> Path:
    lines = ["[global]", f"state_dir = {path.parent / 'ftreport-state'}", "reporter_id = e2e"]
    lines += [f"{k} = {v}" for k, v in (extra_global or {}).items()]
    lines += ["", "[source]"]
    section = {**source, "owner": org, "rhsm_hostname": server.url, "rhsm_ca_cert": server.ca_path,
               "rhsm_username": server.admin_auth[0], "rhsm_password": server.admin_auth[1]}
    lines += [f"{k} = {v}" for k, v in section.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def server(ftmock_session: FtmockServer) -> FtmockServer:
    return ftmock_session


@pytest.fixture
def admin(server: FtmockServer) -> Admin:
    return Admin(server)


@pytest.fixture
def isolated_reporter_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ftreport reads only the files a test names, never /etc."""
    monkeypatch.setenv("FTREPORT_CONFIG", str(tmp_path / "no-main.conf"))
    monkeypatch.setenv("FTREPORT_CONFIG_DIR", str(tmp_path / "no-dir"))
    monkeypatch.setenv("FTREPORT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
