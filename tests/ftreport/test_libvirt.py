"""The libvirt source against libvirt's own test:/// driver with our node XML."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import libvirt

from ftreport.config import load_config
from ftreport.sources.libvirt import LibvirtSource
from tests.kit.wait import wait_until

from .conftest import DATA, SourceWatch, run_ftreport, write_config

NODE = DATA / "libvirt-node.xml"
WEB, DB, BATCH = (f"6a0b1f1e-3c2d-4e5f-8a9b-0c1d2e3f4a0{i}" for i in (1, 2, 3))


def test_print_reports_domains_of_the_test_driver(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    conf = write_config(tmp_path / "kvm.conf", {"kvm": {"type": "libvirt", "server": f"test://{NODE}"}})
    out = run_ftreport(["-c", str(conf), "-p"], isolated_env)
    assert out.returncode == 0, out.stderr
    (hv,) = json.loads(out.stdout)["hypervisors"]
    # The test driver has no host UUID: it is derived from the URI and host name, stably.
    expected_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"test://{NODE}#{hv['name']}"))
    assert hv["hypervisorId"]["hypervisorId"] == expected_id
    assert [g["guestId"] for g in hv["guestIds"]] == [WEB, DB, BATCH]
    assert all(g["state"] == 1 and g["attributes"] == {"virtWhoType": "libvirt", "active": 1} for g in hv["guestIds"])
    assert hv["facts"]["cpu.cpu_socket(s)"] == "2"
    assert hv["facts"]["hypervisor.type"] == "TEST"
    out = run_ftreport(["-c", str(write_config(tmp_path / "k2.conf", {"kvm": {
        "type": "libvirt", "server": f"test://{NODE}", "hypervisor_id": "hostname"}})), "-p"], isolated_env)
    (hv2,) = json.loads(out.stdout)["hypervisors"]
    assert hv2["hypervisorId"]["hypervisorId"] == hv["name"]


def test_domain_events_give_prompt_updates(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    conf = write_config(tmp_path / "kvm.conf", {"kvm": {"type": "libvirt", "server": f"test://{NODE}"}})
    config = load_config([str(conf)]).sources[0]
    # The test driver keeps its state per connection, so the test changes domains through the
    # connection the source uses (injected through the connector boundary).
    conns: list[Any] = []

    def connector(uri: str | None, _user: str | None, _password: str | None) -> Any:
        conn = libvirt.open(uri)
        conns.append(conn)
        return conn

    watch = SourceWatch(LibvirtSource(config, connector=connector, poll_interval=3600, refresh_interval=3600))
    snaps = watch.snapshots
    wait_until(lambda: snaps, 10, "the first snapshot")
    assert {g.guest_id: g.state for g in snaps[0][0].guests} == {WEB: 1, DB: 1, BATCH: 1}
    started = time.monotonic()
    conns[0].lookupByUUIDString(BATCH).destroy()
    wait_until(lambda: len(snaps) >= 2, 10, "the snapshot after the guest stopped")
    assert time.monotonic() - started < 2.0  # an event, not the (hour-long) poll
    assert {g.guest_id: (g.state, g.attributes["active"]) for g in snaps[1][0].guests} == {
        WEB: (1, 1), DB: (1, 1), BATCH: (5, 0)}
    watch.close()
    assert not watch.thread.is_alive() and watch.error is None


def test_unreachable_uri_fails_cleanly(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    conf = write_config(tmp_path / "kvm.conf", {
        "kvm": {"type": "libvirt", "server": f"test://{tmp_path}/missing.xml"},
        "fake": {"type": "fake"}})
    out = run_ftreport(["-c", str(conf), "-p"], isolated_env)
    # One failing source does not stop the others: the fake source is still printed.
    assert out.returncode == 1
    assert "kvm: connecting to test://" in out.stderr
    assert len(json.loads(out.stdout)["hypervisors"]) == 2
