"""Sending: check-in and job polling through ftagent's Connection, a full report at start and every
interval, failures, Retry-After, and the newest report winning after an outage."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses

from ftagent.errors import ConnectionFailed, RateLimited
from ftreport import examples
from ftreport.config import load_config
from ftreport.errors import SendError
from ftreport.sender import Destination
from ftreport.service import Reporter, run_oneshot
from tests.kit.wait import hold_for, wait_until

from .conftest import Recorder, ft_guests, held_back_factory, write_config

URL = "https://cp.test:8443/candlepin"


def _config(tmp_path: Path, data: Path | None = None, **global_: object) -> Path:
    fake = {"type": "fake", "owner": "org1", "rhsm_hostname": URL, "rhsm_username": "admin",
            "rhsm_password": "pw"}
    if data is not None:
        fake["file"] = str(data)
    return write_config(tmp_path / "f.conf", {
        "global": {"state_dir": tmp_path / "state", "reporter_id": "rep-1", "max_backoff": 0.5,
                   "settle": 0.05, **global_},
        "fake": fake})


def _query(url: str | None) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url or "").query)


@responses.activate
def test_oneshot_posts_and_waits_for_the_job_every_time(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    config = load_config([str(_config(tmp_path))])
    responses.post(f"{URL}/hypervisors/org1", json={"id": "j1", "state": "CREATED"})
    responses.get(f"{URL}/jobs/j1", json={"id": "j1", "state": "RUNNING"})
    responses.get(f"{URL}/jobs/j1", json={"id": "j1", "state": "FINISHED",
                                          "resultData": {"created": [{}, {}], "updated": []}})
    assert run_oneshot(config) == 0
    assert [c.request.method for c in responses.calls] == ["POST", "GET", "GET"]
    # (A registered response's own .calls needs responses 0.24; the minimum leg has 0.23.)
    post = responses.calls[0].request
    assert _query(post.url) == {"reporter_id": ["rep-1"]}
    assert post.headers["Authorization"].startswith("Basic ")
    assert json.loads(post.body) == examples.REPORT_1
    # The same report again: a one-shot run is a start, so it goes in full whatever the state
    # directory says was accepted (the server may have lost it since).
    assert len(list((tmp_path / "state").glob("sent-*"))) == 1
    assert run_oneshot(load_config([str(_config(tmp_path))])) == 0
    assert [c.request.method for c in responses.calls] == ["POST", "GET", "GET", "POST", "GET"]
    assert json.loads(responses.calls[3].request.body) == examples.REPORT_1


@responses.activate
def test_failed_job_is_not_recorded_as_sent(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    config = load_config([str(_config(tmp_path))])
    responses.post(f"{URL}/hypervisors/org1", json={"id": "j1", "state": "CREATED"})
    responses.get(f"{URL}/jobs/j1", json={"id": "j1", "state": "FAILED", "result": "owner frozen"})
    assert run_oneshot(config) == 1
    assert not list((tmp_path / "state").glob("sent-*"))
    responses.replace(responses.GET, f"{URL}/jobs/j1", json={"id": "j1", "state": "FINISHED", "resultData": {}})
    assert run_oneshot(config) == 0
    assert len(list((tmp_path / "state").glob("sent-*"))) == 1


@responses.activate
def test_rate_limit_keeps_retry_after(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    (src,) = load_config([str(_config(tmp_path))]).sources
    responses.post(f"{URL}/hypervisors/org1", status=429, headers={"Retry-After": "7"},
                   json={"displayMessage": "slow down"})
    dest = Destination(src.require_destination(), reporter_id="r", state_dir=tmp_path / "state")
    with pytest.raises(SendError) as info:
        dest.check_in(b"{}")
    assert info.value.retry_after == 7
    assert "slow down" in str(info.value)


@pytest.fixture
def running(tmp_path: Path, isolated_env: dict[str, str]) -> Iterator[tuple[Reporter, Recorder, Path]]:
    data = tmp_path / "report.json"
    data.write_text(json.dumps(examples.REPORT_1))
    config = load_config([str(_config(tmp_path, data))])
    recorder = Recorder()
    rep = Reporter(config, connection_factory=recorder.factory)
    thread = threading.Thread(target=rep.run, daemon=True)
    thread.start()
    yield rep, recorder, data
    rep.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()


def _write(path: Path, body: dict[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body))
    tmp.replace(path)


def _sends(recorder: Recorder) -> int:
    """How many reports the daemon tried to send (the ones refused too)."""
    with recorder.lock:
        return sum(1 for method, path in recorder.calls if method == "POST" and path.startswith("/hypervisors/"))


def test_outage_sends_only_the_newest_report_when_back(running: tuple[Reporter, Recorder, Path]) -> None:
    _rep, recorder, data = running
    recorder.wait_for(lambda b: True)
    recorder.fail = ConnectionFailed("cannot connect: connection refused")
    sends = _sends(recorder)
    _write(data, examples.REPORT_2)
    wait_until(lambda: _sends(recorder) > sends, 10, "a send of report 2 while the server is away")
    newest = json.loads(json.dumps(examples.REPORT_2))
    newest["hypervisors"][0]["guestIds"].append({"guestId": "late-guest", "state": 1, "attributes": {}})
    _write(data, newest)
    wait_until(lambda: any(g.guest_id == "late-guest" for snap in _rep.snapshots.gather(["fake"])[0]
                           for hv in snap for g in hv.guests), 10, "the fake source picking up the newest file")
    assert len(recorder.bodies) == 1
    recorder.fail = None
    body = recorder.wait_for(lambda b: len(b["hypervisors"]) == 3)
    for _ in hold_for(1.0):
        # Report 2 was superseded while the server was away: only the newest one was sent.
        assert len(recorder.bodies) == 2
    assert body == newest
    assert set(ft_guests(body)) == {examples.INSTANCE_B, examples.INSTANCE_C}


def test_retry_after_is_honoured(running: tuple[Reporter, Recorder, Path]) -> None:
    _rep, recorder, data = running
    recorder.wait_for(lambda b: True)
    recorder.fail = RateLimited(429, "slow down", retry_after=1.5)
    sends = _sends(recorder)
    _write(data, examples.REPORT_2)
    wait_until(lambda: _sends(recorder) > sends, 10, "a send of report 2 answered 429")
    failed_at = time.monotonic()
    recorder.fail = None
    recorder.wait_for(lambda b: len(b["hypervisors"]) == 3)
    assert time.monotonic() - failed_at > 0.7  # waited for Retry-After, not the 0.5 s backoff


def test_idle_daemon_does_not_rebuild_the_report(tmp_path: Path, isolated_env: dict[str, str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The delivery loop wakes every half second; with 45,000 guests, building and hashing the
    report each time took the CPU the sources needed to notice the next failover. It is built
    again only when a source published a new snapshot (or a send is retried)."""
    from ftreport.encoding import ReportEncoder

    built: list[float] = []
    real = ReportEncoder.encode

    def counting(self: ReportEncoder, hypervisors: Any, **kwargs: Any) -> Any:
        built.append(time.monotonic())
        return real(self, hypervisors, **kwargs)

    monkeypatch.setattr(ReportEncoder, "encode", counting)
    data = tmp_path / "fake.json"
    data.write_text(json.dumps(examples.REPORT_1))
    recorder = Recorder()
    rep = Reporter(load_config([str(_config(tmp_path, data, interval=3600))]), connection_factory=recorder.factory)
    thread = threading.Thread(target=rep.run, daemon=True)
    thread.start()
    try:
        recorder.wait_for(lambda b: True)
        before = len(built)
        for _ in hold_for(1.6):  # three wake-ups of the loop with nothing new
            assert len(built) == before
        _write(data, examples.REPORT_2)
        recorder.wait_for(lambda b: len(b["hypervisors"]) == 3)
        assert len(built) == before + 1
    finally:
        rep.stop()
        thread.join(timeout=10)


def test_a_slow_source_does_not_hold_back_the_others_first_report(tmp_path: Path,
                                                                 isolated_env: dict[str, str]) -> None:
    """Two vCenters for one organization, one of them still busy with its first collection: after
    first_report_wait the other's hypervisors are reported alone, and both once the slow one is done."""
    fast_data, slow_data = tmp_path / "fast.json", tmp_path / "slow.json"
    fast_data.write_text(json.dumps(examples.REPORT_1))
    slow = json.loads(json.dumps(examples.REPORT_1))
    for hv in slow["hypervisors"]:
        hv["hypervisorId"]["hypervisorId"] = "slow-" + hv["hypervisorId"]["hypervisorId"]
    slow_data.write_text(json.dumps(slow))
    dest = {"type": "fake", "owner": "org1", "rhsm_hostname": URL, "rhsm_username": "admin", "rhsm_password": "pw"}
    conf = write_config(tmp_path / "two.conf", {
        "global": {"state_dir": tmp_path / "state", "reporter_id": "rep-1", "settle": 0.05,
                   "first_report_wait": 0.5},
        "fast": {**dest, "file": fast_data}, "slow": {**dest, "file": slow_data}})
    release = threading.Event()
    factory = held_back_factory("slow", release)

    recorder = Recorder()
    rep = Reporter(load_config([str(conf)]), factory=factory, connection_factory=recorder.factory)
    thread = threading.Thread(target=rep.run, daemon=True)
    thread.start()
    try:
        first = recorder.wait_for(lambda b: True)
        ids = [hv["hypervisorId"]["hypervisorId"] for hv in first["hypervisors"]]
        assert ids and not any(i.startswith("slow-") for i in ids)
        assert len(recorder.bodies) == 1
        release.set()
        both = recorder.wait_for(lambda b: len(b["hypervisors"]) == 2 * len(ids))
        assert sum(hv["hypervisorId"]["hypervisorId"].startswith("slow-") for hv in both["hypervisors"]) == len(ids)
    finally:
        release.set()
        rep.stop()
        thread.join(timeout=10)


def test_the_first_report_waits_for_every_source_within_first_report_wait(tmp_path: Path,
                                                                         isolated_env: dict[str, str]) -> None:
    """With the default wait, two sources starting together give one first report with both."""
    datas = []
    for name in ("a", "b"):
        body = json.loads(json.dumps(examples.REPORT_1))
        for hv in body["hypervisors"]:
            hv["hypervisorId"]["hypervisorId"] = f"{name}-" + hv["hypervisorId"]["hypervisorId"]
        (tmp_path / f"{name}.json").write_text(json.dumps(body))
        datas.append(len(body["hypervisors"]))
    dest = {"type": "fake", "owner": "org1", "rhsm_hostname": URL, "rhsm_username": "admin", "rhsm_password": "pw"}
    conf = write_config(tmp_path / "two.conf", {
        "global": {"state_dir": tmp_path / "state", "reporter_id": "rep-1", "settle": 0.05},
        "a": {**dest, "file": tmp_path / "a.json"}, "b": {**dest, "file": tmp_path / "b.json"}})
    recorder = Recorder()
    rep = Reporter(load_config([str(conf)]), connection_factory=recorder.factory)
    thread = threading.Thread(target=rep.run, daemon=True)
    thread.start()
    try:
        recorder.wait_for(lambda b: True)
        assert len(recorder.bodies[0]["hypervisors"]) == sum(datas)
    finally:
        rep.stop()
        thread.join(timeout=10)


def test_the_daemon_steps_one_cycle_at_a_time(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    """Driven cycle by cycle on its own clock: the full report once the source is read, nothing
    more while nothing changes, the full report again once `interval` has passed."""
    now = [1000.0]
    recorder = Recorder()
    rep = Reporter(load_config([str(_config(tmp_path, interval=60))]), connection_factory=recorder.factory,
                   clock=lambda: now[0])
    with rep:
        deadline = time.monotonic() + 10
        while not recorder.bodies:  # the source's thread reads the file once started
            assert time.monotonic() < deadline, "no first report"
            rep.step()
        assert recorder.bodies == [examples.REPORT_1]
        for _ in range(3):
            assert rep.step(wait=0)
        now[0] += 59
        assert rep.step(wait=0)
        assert len(recorder.bodies) == 1
        now[0] += 1
        assert rep.step(wait=0)
        assert recorder.bodies == [examples.REPORT_1, examples.REPORT_1] and recorder.heartbeats == 0
        now[0] += 30
        assert rep.step(wait=0)
        assert len(recorder.bodies) == 2  # the interval counts from the last full report
        rep.stop()
        assert not rep.step(wait=0)
