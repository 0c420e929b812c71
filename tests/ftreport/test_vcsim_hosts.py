"""The vCenter simulator keeps both sides of the VM-host relation consistent, as vCenter does.

A client may read where a VM runs from the VM (``runtime.host``) or from the hosts
(``HostSystem.vm``, as virt-who does). After every move and every failover both sides are read
through pyvmomi and must agree.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from .conftest import VCSIM_PASSWORD, VCSIM_USER, Vcsim


@pytest.fixture
def content(vcsim: Vcsim) -> Iterator[Any]:
    parts = urlsplit(vcsim.url)
    ctx = ssl.create_default_context(cafile=str(vcsim.tls.ca_path))
    si = SmartConnect(host=parts.hostname, port=parts.port, path=parts.path, user=VCSIM_USER,
                      pwd=VCSIM_PASSWORD, sslContext=ctx)
    yield si.RetrieveContent()
    Disconnect(si)


def _both_sides(content: Any) -> tuple[dict[str, str], dict[str, set[str]]]:
    """(VM name -> host name from runtime.host, host name -> VM names from HostSystem.vm)."""
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    by_vm = {vm.name: vm.runtime.host.name for vm in view.view}
    view.Destroy()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
    by_host = {host.name: {vm.name for vm in host.vm} for host in view.view}
    view.Destroy()
    return by_vm, by_host


def _assert_consistent(content: Any) -> dict[str, str]:
    by_vm, by_host = _both_sides(content)
    for vm, host in by_vm.items():
        listed_on = sorted(h for h, vms in by_host.items() if vm in vms)
        assert listed_on == [host], f"{vm} runs on {host} but is listed by {listed_on}"
    assert sum(len(v) for v in by_host.values()) == len(by_vm)
    return by_vm


def test_host_lists_follow_moves_and_failovers(vcsim: Vcsim, content: Any) -> None:
    placement = _assert_consistent(content)
    hosts = sorted({h["name"] for h in vcsim.state(all_objects=True)["hosts"]})
    vms = sorted(placement)
    # Moves: every VM visits two other hosts, and one move back to the host it is on (a no-op).
    for i, vm in enumerate(vms[:3]):
        for step in (1, 2):
            target = next(h for h in hosts[(i + step) % len(hosts):] + hosts if h != placement[vm])
            vcsim.move(vm, target)
            placement = _assert_consistent(content)
            assert placement[vm] == target
        vcsim.move(vm, placement[vm])
        assert _assert_consistent(content) == placement
    # Failovers: the failed primary's VM object moves to a new host as the new backup.
    for _ in range(3):
        before = vcsim.state()["ft"][0]["instances"]
        after = vcsim.failover("0")["ft"][0]["instances"]
        placement = _assert_consistent(content)
        old_primary = before[0]["name"]
        assert after[-1]["name"] == old_primary
        assert placement[old_primary] == after[-1]["hostName"] != before[0]["hostName"]
        assert placement[after[0]["name"]] == after[0]["hostName"]
