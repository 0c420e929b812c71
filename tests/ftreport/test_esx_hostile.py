"""A hostile vCenter: ftreport ends each call within its deadline, with a one-line error naming the
bound that was broken, at the memory of a normal run.

The simulator's answers go through the paging proxy, which makes one call's answer hostile
(``tests/ftreport/vimhostile.py``): sent one byte a second, flooded, nested, with a huge text, a
page far bigger than asked, entities. Each case runs ``ftreport -o -p`` as a user would and
checks three things the issue asks for:

- the time from the hostile call reaching the proxy to ftreport's exit is at most ``timeout`` +
  1 s (``timeout`` is 3 s here; the second covers the process's exit on a loaded machine);
- the peak RSS is at most 1.5 times that of a normal run through the same proxy, measured in the
  same session (about 40 MiB: every case here would take hundreds of MiB, or never end, without
  the bounds, so the margin only absorbs noise);
- the error, one line, names the source, the vCenter and the bound.

Peak RSS and exit time are the child's own (``tests/ftreport/peak.py``). The sizes are CI-sized (a
few MB, or answers that would be hundreds of MB but end at a bound); ``python -m bench
ftreport_hostile`` floods with 500 MB.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ftreport.config import load_config
from ftreport.service import Reporter
from tests.kit.wait import wait_until

from .conftest import Recorder, Vcsim, esx_section, write_config
from .peak import Run, run_measured
from .vimhostile import big_page, deep, drip, entities, flood, huge_text
from .vimproxy import HostileAnswer, PagingProxy

TIMEOUT = 3


@pytest.fixture(scope="module")
def hostile_proxy(vcsim_session: Vcsim) -> Iterator[PagingProxy]:
    sim = vcsim_session
    with PagingProxy(sim.url, sim.tls.cert_path, sim.tls.key_path, sim.tls.ca_path) as proxy:
        yield proxy


def _conf(work: Path, sim: Vcsim, proxy: PagingProxy, **extra: object) -> Path:
    return write_config(work / "esx.conf", {
        "global": {"state_dir": work / "state"},
        "vcenter": {**esx_section(sim), "server": proxy.url, "timeout": TIMEOUT, **extra}})


@pytest.fixture(scope="module")
def normal_run(vcsim_session: Vcsim, hostile_proxy: PagingProxy, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """``ftreport -o -p`` through the proxy, answering normally: the reference."""
    work = tmp_path_factory.mktemp("normal")
    env = _env(work)
    run = run_measured(["-c", str(_conf(work, vcsim_session, hostile_proxy)), "-o", "-p"], env, work)
    assert run.returncode == 0, run.stderr
    assert len(json.loads(run.stdout)["hypervisors"]) == 7
    return run


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ, FTREPORT_CONFIG=str(work / "none.conf"), FTREPORT_CONFIG_DIR=str(work / "none.d"),
               FTREPORT_STATE_DIR=str(work / "state"), PYTHONUNBUFFERED="1")
    env.pop("NOTIFY_SOCKET", None)
    env.pop("FTREPORT_ESX_DECODER", None)
    return env


_RETRIEVE = "retrieving the inventory"
CASES: dict[str, tuple[str, HostileAnswer, dict[str, object], str, str]] = {
    # name: (method made hostile, answer, extra keys, what ftreport was doing, the error's end)
    "drip": ("RetrievePropertiesEx", drip(), {}, _RETRIEVE,
             f"no complete answer within timeout = {TIMEOUT} s"),
    "drip, headers too, pyvmomi decoder": ("RetrievePropertiesEx", drip(head=True), {"decoder": "pyvmomi"},
                                           _RETRIEVE, f"no complete answer within timeout = {TIMEOUT} s"),
    "drip of the API version list": ("GET", drip(), {}, "login", f"no complete answer within timeout = {TIMEOUT} s"),
    "flood of unknown elements past max_answer_size": (
        "RetrievePropertiesEx", flood(64 << 20), {"max_answer_size": "2M"}, _RETRIEVE,
        "the answer is larger than max_answer_size = 2 MiB"),
    # (pyvmomi refuses elements it does not know: a page of known ones, past the size)
    "oversize answer, pyvmomi decoder": (
        "RetrievePropertiesEx", big_page(1_100_000), {"max_answer_size": "2M", "decoder": "pyvmomi",
                                                      "page_size": 2_000_000}, _RETRIEVE,
        "the answer is larger than max_answer_size = 2 MiB"),
    "deep nesting": ("RetrievePropertiesEx", deep(1_000_000), {}, _RETRIEVE,
                     "an element is nested deeper than 64 levels"),
    "deep nesting, pyvmomi decoder": ("RetrievePropertiesEx", deep(1_000_000), {"decoder": "pyvmomi"}, _RETRIEVE,
                                      "an element is nested deeper than 64 levels"),
    "huge text": ("RetrievePropertiesEx", huge_text(50 << 20), {}, _RETRIEVE, "a text is longer than 64 KiB"),
    "oversize page": ("RetrievePropertiesEx", big_page(1_100_000), {}, _RETRIEVE,
                      "the page has more than page_size = 2000 objects, the most vCenter was asked for"),
    "oversize page, pyvmomi decoder": ("RetrievePropertiesEx", big_page(100), {"decoder": "pyvmomi", "page_size": 50},
                                       _RETRIEVE,
                                       "the page has more than page_size = 50 objects, the most vCenter was asked for"),
    "billion laughs": ("RetrievePropertiesEx", entities("laughs"), {}, _RETRIEVE,
                       "the answer has a document type declaration, which SOAP forbids (its entities are never "
                       "expanded)"),
    "external entity": ("RetrievePropertiesEx", entities("external"), {}, _RETRIEVE,
                        "the answer has a document type declaration, which SOAP forbids (its entities are never "
                        "expanded)"),
    "entities in the login's answer": ("Login", entities("laughs"), {}, "login",
                                       "the answer has a document type declaration, which SOAP forbids (its "
                                       "entities are never expanded)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_answer_ends_in_time_with_one_line_naming_the_bound(
        case: str, vcsim_session: Vcsim, hostile_proxy: PagingProxy, normal_run: Run, tmp_path: Path) -> None:
    method, answer, extra, doing, message = CASES[case]
    # A vCenter that drips drips everything: logging out of it would take as long again.
    also = ["Logout"] if case.startswith("drip") and method != "GET" else []
    for name in [method, *also]:
        hostile_proxy.hostile(name, answer)
    try:
        run = run_measured(["-c", str(_conf(tmp_path, vcsim_session, hostile_proxy, **extra)), "-o", "-p"],
                           _env(tmp_path), tmp_path)
    finally:
        for name in [method, *also]:
            hostile_proxy.hostile(name, None)
    assert run.returncode == 1, run.stderr
    assert run.stdout == ""
    errors = [line for line in run.stderr.splitlines() if "ERROR" in line and "vcenter" in line]
    assert len(errors) == 1 and "Traceback" not in run.stderr, run.stderr
    assert errors[0].endswith(f"vcenter: {doing} at {hostile_proxy.url} stopped: {message}"), run.stderr
    took = run.ended - hostile_proxy.arrived[method]
    assert took <= TIMEOUT + 1, f"{took:.2f} s after the hostile call"
    if case.startswith("drip"):
        assert took >= TIMEOUT - 0.1  # the deadline, not something else, ended it
    assert run.rss_mib <= 1.5 * normal_run.rss_mib, f"{run.rss_mib:.0f} MiB, normally {normal_run.rss_mib:.0f} MiB"


def test_unknown_elements_are_dropped_as_they_stream(vcsim_session: Vcsim, hostile_proxy: PagingProxy,
                                                     normal_run: Run, tmp_path: Path) -> None:
    """4 MB of elements nobody asked for (about 300,000), within every bound: the report is the
    normal one, and nothing of the flood was kept (it would take some 50 MiB more)."""
    hostile_proxy.hostile("RetrievePropertiesEx", flood(4 << 20))
    try:
        run = run_measured(["-c", str(_conf(tmp_path, vcsim_session, hostile_proxy)), "-o", "-p"],
                           _env(tmp_path), tmp_path)
    finally:
        hostile_proxy.hostile("RetrievePropertiesEx", None)
    assert run.returncode == 0, run.stderr
    assert run.stdout == normal_run.stdout
    assert run.ended - hostile_proxy.arrived["RetrievePropertiesEx"] <= TIMEOUT + 1
    assert run.rss_mib <= 1.5 * normal_run.rss_mib, f"{run.rss_mib:.0f} MiB, normally {normal_run.rss_mib:.0f} MiB"


def test_the_daemon_retries_a_hostile_vcenter_with_backoff_and_reports_the_others(
        vcsim_session: Vcsim, hostile_proxy: PagingProxy, tmp_path: Path, isolated_env: dict[str, str],
        caplog: pytest.LogCaptureFixture) -> None:
    """The vCenter turns hostile after the first report: its source fails on every watch, one
    line each time, retried later and later; a change in another source is reported meanwhile,
    with the vCenter's last hypervisors kept."""
    caplog.set_level(logging.INFO, logger="ftreport")
    data = tmp_path / "other.json"
    other = {"hypervisors": [{"hypervisorId": {"hypervisorId": "other-host"}, "name": "other-host",
                              "guestIds": []}]}
    data.write_text(json.dumps(other))
    dest = {"owner": "org1", "rhsm_hostname": "https://127.0.0.1:9/candlepin"}
    conf = write_config(tmp_path / "daemon.conf", {
        "global": {"state_dir": tmp_path / "state", "max_backoff": 4, "settle": 0.1, "interval": 3600},
        "vcenter": {**esx_section(vcsim_session), "server": hostile_proxy.url, "timeout": TIMEOUT, **dest},
        "other": {"type": "fake", "file": data, **dest}})
    recorder = Recorder()
    rep = Reporter(load_config(paths=[conf]), connection_factory=recorder.factory)
    thread = threading.Thread(target=rep.run, daemon=True)
    thread.start()
    try:
        first = recorder.wait_for(lambda body: len(body["hypervisors"]) == 8)
        hostile_proxy.hostile("WaitForUpdatesEx", deep(1_000_000))
        line = (f"vcenter: watching the inventory at {hostile_proxy.url} stopped: an element is nested deeper "
                "than 64 levels; retrying in")
        wait_until(lambda: caplog.text.count(line) >= 3, 20, lambda: f"three failed watches in:\n{caplog.text}")
        delays = [float(r.getMessage().rsplit(" ", 2)[1]) for r in caplog.records if r.getMessage().startswith(line)]
        assert delays[:3] == [0.5, 1.0, 2.0]
        other["hypervisors"][0]["guestIds"] = [{"guestId": "new-guest", "state": 1, "attributes": {}}]
        tmp = data.with_suffix(".tmp")
        tmp.write_text(json.dumps(other))
        tmp.replace(data)
        body = recorder.wait_for(lambda b: any(g["guestId"] == "new-guest" for hv in b["hypervisors"]
                                               for g in hv["guestIds"]))
        vcenter_hosts = {hv["hypervisorId"]["hypervisorId"] for hv in first["hypervisors"]} - {"other-host"}
        assert vcenter_hosts <= {hv["hypervisorId"]["hypervisorId"] for hv in body["hypervisors"]}
    finally:
        hostile_proxy.hostile("WaitForUpdatesEx", None)
        rep.stop()
        thread.join(timeout=20)
