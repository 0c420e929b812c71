"""The esx source's streaming SOAP decoder against pyvmomi's: recorded responses, the simulator,
and the simulator behind a proxy that pages results as a real vCenter does."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ftreport.cli import EXIT_CONFIG
from ftreport.config import load_config
from ftreport.errors import SourceAuthError, SourceError
from ftreport.model import report_body
from ftreport.service import Reporter, collect_all
from ftreport.settings import SourceConfig
from ftreport.sources.esx import EsxSettings, EsxSource
from ftreport.sources.inventory import Inventory
from ftreport.sources.vimstream import (
    VimFault,
    VimProtocolError,
    decode_retrieve,
    decode_updates,
)
from tests.kit.wait import wait_until

from .conftest import (
    VCSIM_PASSWORD,
    VCSIM_USER,
    Recorder,
    SourceWatch,
    Vcsim,
    esx_section,
    ft_guests,
    run_ftreport,
    write_config,
)
from .vimproxy import PagingProxy, iter_pages

VIM = Path(__file__).parent / "data" / "vim"


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i:i + size] for i in range(0, len(data), size))


def _pyvmomi_decode(path: Path, result_type: str) -> Any:
    """pyvmomi's own decoding of a recorded response (what the pyvmomi path would have seen)."""
    from pyVmomi import SoapAdapter, vmodl

    stub = SoapAdapter.SoapStubAdapter(host="127.0.0.1", port=1, version="vim.version.version11")
    with open(path, "rb") as f:
        return SoapAdapter.SoapResponseDeserializer(stub).Deserialize(
            f, getattr(vmodl.query.PropertyCollector, result_type))


def _config(url: str, ca: Path, *, decoder: str, page_size: int = 2000, **extra: Any) -> SourceConfig:
    return SourceConfig(name="vcenter", type="esx", file="test",
                        settings=EsxSettings(server=url, username=VCSIM_USER, password=VCSIM_PASSWORD, ca_cert=str(ca),
                                             decoder=decoder, page_size=page_size, **extra))


def _body(snapshot: Any) -> str:
    return json.dumps(report_body(snapshot), sort_keys=True)


# -- recorded responses --------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_recorded_retrieve_decodes_as_pyvmomi_does(chunk: int) -> None:
    data = (VIM / "retrieve.xml").read_bytes()
    ours = Inventory()
    page = decode_retrieve(_chunks(data, chunk), ours.objects)
    assert page.token is None and page.objects == 13
    theirs = Inventory()
    theirs.load(_pyvmomi_decode(VIM / "retrieve.xml", "RetrieveResult").objects)
    assert ours.objects == theirs.objects
    assert ours.counts() == (4, 8)
    # Typed values as pyvmomi gives them: ints, moIds, arrays; absent optional properties absent.
    ft = [p for p in ours.objects["VirtualMachine"].values() if "config.ftInfo.role" in p]
    assert sorted(p["config.ftInfo.role"] for p in ft) == [1, 2]
    assert all(len(p["config.ftInfo.instanceUuids"]) == 2 for p in ft)
    assert all(p["runtime.host"].startswith("host-") for p in ours.objects["VirtualMachine"].values())
    assert {p["summary.hardware.numCpuPkgs"] for p in ours.objects["HostSystem"].values()} == {2}


def test_recorded_updates_decode_as_pyvmomi_does() -> None:
    ours, theirs = Inventory(), Inventory()
    for name in ("updates.xml", "updates-failover.xml"):
        page = decode_updates(_chunks((VIM / name).read_bytes(), 1000), ours.objects)
        update = _pyvmomi_decode(VIM / name, "UpdateSet")
        assert page.received and page.version == update.version and not page.truncated
        assert page.updates == theirs.update(update)
        assert ours.objects == theirs.objects
    # The failover changed roles: the former backup is now the primary.
    roles = sorted((p["config.instanceUuid"], p["config.ftInfo.role"]) for p in ours.objects["VirtualMachine"].values()
                   if p.get("config.ftInfo.role"))
    assert [r for _, r in roles] == [1, 2] or [r for _, r in roles] == [2, 1]
    # Unset optional properties of an entering object arrive without a value: None, as in pyvmomi.
    plain = [p for p in ours.objects["VirtualMachine"].values() if p.get("config.ftInfo.role") is None]
    assert plain and all("config.ftInfo.role" in p for p in plain)


def test_watch_snapshots_remake_only_changed_guests_and_match_a_full_rebuild() -> None:
    """After the full state, a snapshot remakes the guests of the VMs an update set touched; the
    result is the report a fresh inventory of the same records gives."""
    config = SourceConfig(name="vcenter", type="esx", file="test")
    inv = Inventory()
    decode_updates([(VIM / "updates.xml").read_bytes()], inv.objects, inv.touched)
    first = inv.snapshot(config)
    unchanged = {g.guest_id + str(g.attributes.get("instanceUUID")): g for hv in first for g in hv.guests}
    touched = set() if inv.touched is None else inv.touched
    decode_updates([(VIM / "updates-failover.xml").read_bytes()], inv.objects, touched)
    assert sorted(touched) == ["vm-59", "vm-62"]
    after = inv.snapshot(config)
    fresh = Inventory()
    fresh.objects = json.loads(json.dumps(inv.objects))
    assert _body(after) == _body(fresh.snapshot(config)) != _body(first)
    # Guests of untouched VMs are the very objects of the previous snapshot.
    same = [g for hv in after for g in hv.guests if "instanceUUID" not in g.attributes]
    assert same and all(g is unchanged[g.guest_id + "None"] for g in same)


@pytest.mark.parametrize(("name", "fault"), [("fault-notauthenticated.xml", "NotAuthenticated"),
                                             ("fault-invalidlogin.xml", "InvalidLogin"),
                                             ("fault-requestcanceled.xml", "RequestCanceled")])
def test_recorded_faults_raise_the_fault_pyvmomi_names(name: str, fault: str) -> None:
    with pytest.raises(VimFault) as info:
        decode_updates([(VIM / name).read_bytes()], Inventory().objects)
    assert info.value.fault == fault
    assert type(_pyvmomi_decode(VIM / name, "UpdateSet")).__name__.rpartition(".")[2] == fault


def test_types_arrays_removals_and_leaving_objects() -> None:
    doc = b"""<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"
      xmlns:x="http://www.w3.org/2001/XMLSchema-instance" xmlns:xs="http://www.w3.org/2001/XMLSchema"><s:Body>
      <WaitForUpdatesExResponse xmlns="urn:vim25"><returnval><version>7</version><filterSet><filter
      type="PropertyFilter">f</filter>
      <objectSet><kind>modify</kind><obj type="VirtualMachine">vm-1</obj>
        <changeSet><name>a</name><op>assign</op><val x:type="xs:long">12</val></changeSet>
        <changeSet><name>b</name><op>assign</op><val x:type="xs:boolean">true</val></changeSet>
        <changeSet><name>c</name><op>assign</op><val x:type="ArrayOfInt"><int>1</int><int>2</int></val></changeSet>
        <changeSet><name>d</name><op>assign</op><val x:type="ArrayOfManagedObjectReference"><ManagedObjectReference
          type="HostSystem">host-1</ManagedObjectReference></val></changeSet>
        <changeSet><name>e</name><op>remove</op></changeSet>
        <changeSet><name>f</name><op>assign</op><val x:type="xs:string"></val></changeSet>
      </objectSet>
      <objectSet><kind>leave</kind><obj type="HostSystem">host-9</obj></objectSet>
      <objectSet><kind>enter</kind><obj type="Datastore">ds-1</obj></objectSet>
      </filterSet><truncated>true</truncated></returnval></WaitForUpdatesExResponse></s:Body></s:Envelope>"""
    inv = Inventory()
    inv.objects["VirtualMachine"]["vm-1"] = {"e": "gone soon", "z": "kept"}
    inv.objects["HostSystem"]["host-9"] = {"name": "old"}
    page = decode_updates(_chunks(doc, 5), inv.objects)
    assert (page.version, page.truncated, page.updates) == ("7", True, 3)
    assert inv.objects["VirtualMachine"]["vm-1"] == {"a": 12, "b": True, "c": [1, 2], "d": ["host-1"], "f": "",
                                                     "z": "kept"}
    assert inv.objects["HostSystem"] == {}
    assert "Datastore" not in inv.objects


def test_empty_wait_is_not_an_update_set() -> None:
    doc = (b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
           b'<WaitForUpdatesExResponse xmlns="urn:vim25"></WaitForUpdatesExResponse></soapenv:Body>'
           b"</soapenv:Envelope>")
    assert not decode_updates([doc], Inventory().objects).received


@pytest.mark.parametrize("data", [b"<html><body>502 Bad Gateway</body></html>",
                                  (VIM / "retrieve.xml").read_bytes()[:5000]])
def test_not_soap_or_cut_short_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(VimProtocolError):
        decode_retrieve([data], Inventory().objects)


# -- the simulator: both decoders give the same reports ------------------------------------


@pytest.fixture
def pager(vcsim: Vcsim) -> Iterator[PagingProxy]:
    with PagingProxy(vcsim.url, vcsim.tls.cert_path, vcsim.tls.key_path, vcsim.tls.ca_path) as proxy:
        yield proxy


@pytest.fixture
def session_pager(vcsim_session: Vcsim) -> Iterator[PagingProxy]:
    sim = vcsim_session
    with PagingProxy(sim.url, sim.tls.cert_path, sim.tls.key_path, sim.tls.ca_path) as proxy:
        yield proxy


def test_collect_is_identical_with_both_decoders_and_in_pages(vcsim_session: Vcsim, session_pager: PagingProxy,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="ftreport.sources.esx")
    ca = vcsim_session.tls.ca_path
    bodies = {}
    for decoder in ("stream", "pyvmomi"):
        bodies[decoder, "whole"] = _body(EsxSource(_config(vcsim_session.url, ca, decoder=decoder)).collect())
        session_pager.pages.clear()
        bodies[decoder, "pages"] = _body(EsxSource(_config(session_pager.url, ca, decoder=decoder,
                                                           page_size=4)).collect())
        # 7 hosts + 12 VMs + 2 clusters in pages of 4, continued by token.
        assert list(iter_pages(session_pager, "RetrievePropertiesEx")) == [4]
        assert list(iter_pages(session_pager, "ContinueRetrievePropertiesEx")) == [4, 4, 4, 4, 1]
    assert len(set(bodies.values())) == 1
    assert len(json.loads(bodies["stream", "whole"])["hypervisors"]) == 7
    # Both decoders carry the FT state of the 2 groups' 4 instances (and no other VM's).
    states = _ft_states(json.loads(bodies["stream", "whole"]))
    assert sorted(state for _role, state in states.values()) == ["running"] * 4
    # The simulator writes vCenter's regular shape: every object, whole or in pages, was scanned.
    assert caplog.text.count("21 objects retrieved, 21 of them read by the regular-shape scanner") == 2


def test_print_is_identical_with_both_decoders(vcsim_session: Vcsim, tmp_path: Path,
                                               isolated_env: dict[str, str]) -> None:
    """The user's view: `ftreport -o -p`, the decoder chosen by the config key or the env var."""
    outs = []
    for n, (key, env) in enumerate([("stream", None), ("pyvmomi", None), (None, "pyvmomi")]):
        section = esx_section(vcsim_session, **({"decoder": key} if key else {}))
        conf = write_config(tmp_path / f"esx{n}.conf", {"vcenter": section})
        out = run_ftreport(["-c", str(conf), "-o", "-p"], {**isolated_env, **({"FTREPORT_ESX_DECODER": env} if env
                                                                              else {})})
        assert out.returncode == 0, out.stderr
        outs.append(out.stdout)
    assert outs[0] == outs[1] == outs[2]
    conf = write_config(tmp_path / "bad.conf", {"vcenter": esx_section(vcsim_session, decoder="expat")})
    out = run_ftreport(["-c", str(conf), "-o", "-p"], isolated_env)
    assert out.returncode == EXIT_CONFIG and "decoder" in out.stderr and "stream, pyvmomi" in out.stderr


def _wait_same(watchers: list[SourceWatch], predicate: Any, what: str) -> dict[str, Any]:
    def same() -> dict[str, Any] | None:
        bodies = [w.latest for w in watchers]
        for w in watchers:
            assert w.error is None, w.error
        if all(b is not None and predicate(b) for b in bodies) and all(b == bodies[0] for b in bodies):
            return bodies[0]
        return None

    return wait_until(same, 15, lambda: f"{what}: the decoders disagree or never saw it: {[w.latest for w in watchers]}")


def test_watch_is_identical_with_both_decoders_through_changes(vcsim: Vcsim, pager: PagingProxy,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """Both decoders watch the same simulator, directly and in truncated update sets of 2 objects,
    through FT failovers, a power-off and a move: after every change, identical reports."""
    caplog.set_level(logging.DEBUG, logger="ftreport.sources.esx")
    ca = vcsim.tls.ca_path
    watchers = [SourceWatch(EsxSource(_config(url, ca, decoder=d, page_size=size)))
                for d in ("stream", "pyvmomi") for url, size in ((vcsim.url, 2000), (pager.url, 2))]
    try:
        first = _wait_same(watchers, lambda b: len(ft_guests(b)) == 2, "first report")
        assert len(first["hypervisors"]) == 4
        assert sum(1 for m, n in pager.pages if m == "WaitForUpdatesEx" and n == 2) >= 5  # truncated pages
        group = vcsim.state()["ft"][0]
        for _ in range(2):  # fail over and back
            primary = vcsim.failover()["ft"][0]["instances"][0]["instanceUuid"]
            body = _wait_same(watchers, lambda b, p=primary: ft_guests(b).get(p, {}).get("role") == "0",
                              "failover")
            assert sorted(g["role"] for g in ft_guests(body).values()) == ["0", "1"]
        assert group["uuid"] in {g["guestId"] for g in ft_guests(body).values()}
        vms = vcsim.state(all_objects=True)
        plain = next(v for v in vms["vms"] if "ftRole" not in v)
        target = next(h for h in vms["hosts"] if h["uuid"] != plain["hostUuid"])
        vcsim.power(plain["name"], "poweredOff")
        vcsim.move(plain["name"], target["name"])

        def moved_and_off(body: dict[str, Any]) -> bool:
            return any(hv["hypervisorId"]["hypervisorId"] == target["uuid"] and g["guestId"] == plain["uuid"]
                       and g["state"] == 5 for hv in body["hypervisors"] for g in hv["guestIds"])

        body = _wait_same(watchers, moved_and_off, "power-off and move")
        # What the watchers built change by change is what a fresh collection sees.
        fresh = EsxSource(_config(vcsim.url, ca, decoder="pyvmomi")).collect()
        assert json.dumps(body, sort_keys=True) == _body(fresh)
        # The stream decoder's update sets were read by the scanner, every object of them.
        counts = re.findall(r"(\d+) object updates, (\d+) of them read by the regular-shape scanner", caplog.text)
        assert len(counts) >= 4 and all(changed == scanned for changed, scanned in counts)
    finally:
        for w in watchers:
            w.close()


def _ft_states(body: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    """instanceUUID -> (role, faultToleranceState) of a report body's FT guests."""
    return {g["attributes"]["instanceUUID"]: (g["attributes"]["ftinfo.role"],
                                              g["attributes"].get("faultToleranceState"))
            for hv in body["hypervisors"] for g in hv["guestIds"] if "instanceUUID" in g["attributes"]}


def test_fault_tolerance_state_through_a_failover_with_both_decoders(vcsim: Vcsim) -> None:
    """vSphere's runtime.faultToleranceState arrives with the FT info, in the same filter, through
    both decoders: running, needSecondary once the primary is lost, starting while a new secondary
    is made, running again; after FT is turned off the VM is a plain guest again."""
    ca = vcsim.tls.ca_path
    watchers = [SourceWatch(EsxSource(_config(vcsim.url, ca, decoder=d))) for d in ("stream", "pyvmomi")]
    try:
        a, b = vcsim.state()["ft"][0]["instances"]
        a_id, b_id = a["instanceUuid"], b["instanceUuid"]
        _wait_same(watchers, lambda body: _ft_states(body) == {a_id: ("0", "running"), b_id: ("1", "running")},
                   "running")
        vcsim.failover(secondary="later")
        _wait_same(watchers, lambda body: _ft_states(body) == {b_id: ("0", "needSecondary")}, "needSecondary")
        new_id = vcsim.add_secondary()["ft"][0]["instances"][1]["instanceUuid"]
        assert new_id not in (a_id, b_id)
        _wait_same(watchers, lambda body: _ft_states(body) == {b_id: ("0", "starting"), new_id: ("1", "starting")},
                   "starting")
        vcsim.set_ft_state("0", "running")
        _wait_same(watchers, lambda body: _ft_states(body) == {b_id: ("0", "running"), new_id: ("1", "running")},
                   "running again")
        vcsim.ft_off()
        body = _wait_same(watchers, lambda body: not _ft_states(body), "FT off")
        plain = [g for hv in body["hypervisors"] for g in hv["guestIds"] if g["guestId"] == b["uuid"]]
        assert [g["attributes"] for g in plain] == [{"virtWhoType": "esx", "active": 1}]
    finally:
        for w in watchers:
            w.close()


# -- faults through the decoder keep the source's error handling ---------------------------


def test_fault_in_a_page_is_the_sources_error(vcsim_session: Vcsim, session_pager: PagingProxy) -> None:
    ca = vcsim_session.tls.ca_path
    for decoder in ("stream", "pyvmomi"):
        session_pager.inject("ContinueRetrievePropertiesEx", VIM / "fault-notauthenticated.xml")
        with pytest.raises(SourceError) as info:
            EsxSource(_config(session_pager.url, ca, decoder=decoder, page_size=5)).collect()
        assert str(info.value) == f"vcenter: session with {session_pager.url} ended (expired or vCenter restarted)"
        session_pager.inject("RetrievePropertiesEx", VIM / "fault-requestcanceled.xml")
        with pytest.raises(SourceError) as info:
            EsxSource(_config(session_pager.url, ca, decoder=decoder)).collect()
        assert str(info.value).endswith("retrieving the inventory at " + session_pager.url + " failed: RequestCanceled")
    session_pager.inject("Login", VIM / "fault-invalidlogin.xml")
    with pytest.raises(SourceAuthError):
        EsxSource(_config(session_pager.url, ca, decoder="stream")).collect()


def test_canceled_wait_reconnects_and_a_failover_still_arrives(vcsim: Vcsim, pager: PagingProxy, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """vCenter cancels the daemon's WaitForUpdatesEx: the source fails, the worker backs off and
    watches again, and the next failover reaches the server."""
    caplog.set_level(logging.INFO, logger="ftreport")
    conf = write_config(tmp_path / "daemon.conf", {
        "global": {"state_dir": tmp_path / "state", "max_backoff": 1, "settle": 0.2, "interval": 3600},
        "vcenter": {**esx_section(vcsim, owner="org1", rhsm_hostname="https://127.0.0.1:9/candlepin"),
                    "server": pager.url, "page_size": 3},
    })
    recorder = Recorder()
    rep = Reporter(load_config(paths=[conf]), connection_factory=recorder.factory)
    thread = threading.Thread(target=rep.run, daemon=True)
    thread.start()
    try:
        recorder.wait_for(lambda body: len(ft_guests(body)) == 2)
        pager.inject("WaitForUpdatesEx", VIM / "fault-requestcanceled.xml")
        wait_until(lambda: "failed: RequestCanceled; retrying in" in caplog.text, 10,
                   lambda: f"the canceled wait logged; log:\n{caplog.text}")
        primary = vcsim.failover()["ft"][0]["instances"][0]["instanceUuid"]
        recorder.wait_for(lambda body: ft_guests(body).get(primary, {}).get("role") == "0")
        assert "logged in to" in caplog.text and "again (new session)" in caplog.text
    finally:
        rep.stop()
        thread.join(timeout=20)


def test_sources_collect_concurrently_and_a_dead_one_delays_nobody(vcsim_session: Vcsim, tmp_path: Path) -> None:
    """Three sources on one simulator and one on a port that never answers: the three finish as
    soon as they would alone; the dead one fails on its own timeout."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts TCP connections, never speaks TLS
    try:
        ca = vcsim_session.tls.ca_path
        configs = [SourceConfig(name=f"vc{i}", type="esx", file="t",
                                settings=EsxSettings(server=vcsim_session.url, username=VCSIM_USER,
                                                     password=VCSIM_PASSWORD, ca_cert=str(ca))) for i in range(3)]
        configs.append(SourceConfig(name="dead", type="esx", file="t",
                                    settings=EsxSettings(server=f"https://127.0.0.1:{silent.getsockname()[1]}/sdk",
                                                         username=VCSIM_USER, password=VCSIM_PASSWORD,
                                                         ca_cert=str(ca), timeout=3)))
        finished: dict[str, float] = {}
        started = time.monotonic()

        class Timed(EsxSource):
            def collect(self) -> Any:
                try:
                    return super().collect()
                finally:
                    finished[self.name] = time.monotonic() - started

        # One process, so that the finishing times are all noted here (test_forked.py has the processes).
        snapshots, errors = collect_all(configs, factory=lambda cfg, progress: Timed(cfg, progress=progress),
                                        processes=1)
        assert sorted(snapshots) == ["vc0", "vc1", "vc2"] and list(errors) == ["dead"]
        assert len({_body(s) for s in snapshots.values()}) == 1
        assert errors["dead"].endswith(": no complete answer within timeout = 3 s")
        # The live sources were done well before the dead one gave up.
        assert max(finished[f"vc{i}"] for i in range(3)) < finished["dead"]
    finally:
        silent.close()
