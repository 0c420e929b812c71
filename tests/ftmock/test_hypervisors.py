"""Hypervisor check-in as virt-who sends it, and its asynchronous job."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.conftest import FtmockServer
from tests.ftmock.conftest import admin_client, checkin, hypervisor
from tests.kit.ftmock import finished_job


def test_checkin_creates_hypervisors_and_reports_job_result(server: FtmockServer, org: str) -> None:
    report = {"hypervisors": [hypervisor("h1", ["g1", "g2"]), hypervisor("h2", ["g3"])]}
    job = checkin(server, org, report, content_type="text/plain")  # virt-who's content type
    assert job["state"] == "FINISHED"
    assert sorted(h["name"] for h in job["resultData"]["created"]) == ["h1", "h2"]
    assert job["resultData"]["updated"] == [] and job["resultData"]["failedUpdate"] == []
    hyps = admin_client(server).get(f"/owners/{org}/consumers?type=hypervisor").json()
    assert sorted(h["hypervisorId"]["hypervisorId"] for h in hyps) == ["h1", "h2"]
    assert hyps[0]["facts"]["hypervisor.type"] == "VMware ESXi"

    again = checkin(server, org, report)
    assert sorted(h["name"] for h in again["resultData"]["unchanged"]) == ["h1", "h2"]
    moved = {"hypervisors": [hypervisor("h1", ["g1"]), hypervisor("h2", ["g3", "g2"])]}
    third = checkin(server, org, moved)
    assert sorted(h["name"] for h in third["resultData"]["updated"]) == ["h1", "h2"]


def test_hypervisor_ids_match_case_insensitively(server: FtmockServer, org: str) -> None:
    checkin(server, org, {"hypervisors": [hypervisor("ABC-1", ["g"])]})
    job = checkin(server, org, {"hypervisors": [hypervisor("abc-1", ["g"], name="ABC-1")]})
    assert [h["name"] for h in job["resultData"]["unchanged"]] == ["ABC-1"]


def test_duplicate_hypervisor_in_one_report_is_applied_once(server: FtmockServer, org: str) -> None:
    job = checkin(server, org, {"hypervisors": [hypervisor("dup", ["a"]), hypervisor("dup", ["b"])]})
    assert [h["name"] for h in job["resultData"]["created"]] == ["dup"]
    assert job["resultData"]["failedUpdate"][0]["hypervisorId"] == "dup"


def test_heartbeat(server: FtmockServer, org: str) -> None:
    checkin(server, org, {"hypervisors": [hypervisor("hb", [])]}, reporter="r-hb")
    r = admin_client(server).put(f"/hypervisors/{org}/heartbeat?reporter_id=r-hb")
    assert r.status_code == 200
    assert r.json()["state"] == "FINISHED"
    assert admin_client(server).put(f"/hypervisors/{org}/heartbeat").status_code == 400


def test_bad_reports_are_refused_before_a_job_exists(server: FtmockServer, org: str) -> None:
    admin = admin_client(server)
    cases = [
        b"{not json",
        json.dumps({"hypervisors": "nope"}).encode(),
        json.dumps({"hypervisors": [{"name": "no id"}]}).encode(),
        json.dumps({"hypervisors": [{"hypervisorId": {"hypervisorId": "x"}, "guestIds": [{"state": 1}]}]}).encode(),
        json.dumps({"hypervisors": [{"hypervisorId": {"hypervisorId": "x"}, "guestIds": "g"}]}).encode(),
    ]
    for body in cases:
        r = admin.post(f"/hypervisors/{org}?reporter_id=r", data=body, headers={"Content-Type": "text/plain"})
        assert r.status_code == 400, body
        assert r.json()["displayMessage"]
    r = admin.post("/hypervisors/no-such-org?reporter_id=r", data=b'{"hypervisors": []}')
    assert r.status_code == 404
    assert admin.get("/jobs/hypervisor_update_nope").status_code == 404


def test_large_checkin_finishes(server: FtmockServer, org: str) -> None:
    report = {"hypervisors": [hypervisor(f"big-{h}", [f"{h:04d}-{g:04d}" for g in range(50)])
                              for h in range(20)]}
    job = checkin(server, org, report)
    assert job["state"] == "FINISHED"
    assert len(job["resultData"]["created"]) == 20


# -- a repeated report: what the stored guest-list digest may skip, and what it must not hide ---------

def _host(server: FtmockServer, org: str, name: str) -> dict[str, Any]:
    hyps = admin_client(server).get(f"/owners/{org}/consumers?type=hypervisor").json()
    return next(h for h in hyps if h["name"] == name)


def _guests(server: FtmockServer, org: str, name: str) -> dict[str, dict[str, Any]]:
    return {g["guestId"]: g["attributes"] for g in _host(server, org, name)["guestIds"]}


def _kinds(job: dict[str, Any]) -> dict[str, list[str]]:
    return {k: sorted(h["name"] for h in v) for k, v in job["resultData"].items() if k != "failedUpdate" and v}


def _as_stored(attributes: dict[str, Any]) -> dict[str, Any]:
    """Guest attributes as Candlepin keeps them (its GuestIdDTO's are strings): numbers and booleans as text."""
    return {k: ("true" if v else "false") if isinstance(v, bool) else str(v) if isinstance(v, (int, float)) else v
            for k, v in attributes.items()}


def _guest(gid: str, state: int = 1, **attributes: Any) -> dict[str, Any]:
    return {"guestId": gid, "state": state, "attributes": {"virtWhoType": "esx", "active": 1, **attributes}}


def test_identical_report_is_unchanged_and_keeps_every_guest(server: FtmockServer, org: str) -> None:
    report = {"hypervisors": [hypervisor("same-1", [_guest("g1"), _guest("g2")]), hypervisor("same-2", ["g3"])]}
    checkin(server, org, report)
    before = _host(server, org, "same-1")
    time.sleep(0.01)  # a real duration: timestamps have millisecond resolution
    job = checkin(server, org, report)
    assert _kinds(job) == {"unchanged": ["same-1", "same-2"]}
    after = _host(server, org, "same-1")
    assert after["updated"] == before["updated"] and after["lastCheckin"] > before["lastCheckin"]
    assert _guests(server, org, "same-1") == {"g1": {"virtWhoType": "esx", "active": "1"},
                                              "g2": {"virtWhoType": "esx", "active": "1"}}
    assert set(_guests(server, org, "same-2")) == {"g3"}


def test_changed_facts_or_name_with_the_same_guests_is_updated(server: FtmockServer, org: str) -> None:
    host = hypervisor("facts-1", [_guest("g1")])
    checkin(server, org, {"hypervisors": [host]})
    before = _host(server, org, "facts-1")
    time.sleep(0.01)  # a real duration: timestamps have millisecond resolution
    job = checkin(server, org, {"hypervisors": [{**host, "facts": {**host["facts"], "cpu.cpu_socket(s)": "4"}}]})
    assert _kinds(job) == {"updated": ["facts-1"]}
    after = _host(server, org, "facts-1")
    assert after["facts"]["cpu.cpu_socket(s)"] == "4" and after["updated"] > before["updated"]
    assert set(_guests(server, org, "facts-1")) == {"g1"}
    job = checkin(server, org, {"hypervisors": [{**host, "name": "facts-1-renamed"}]})
    assert _kinds(job) == {"updated": ["facts-1-renamed"]}


def test_no_change_in_a_guest_is_hidden(server: FtmockServer, org: str) -> None:
    """Each report differs from the one before in one detail of one guest: each is an update, and
    the guest rows show it; a report that only reorders the guests changes nothing."""
    steps: list[tuple[str, list[dict[str, Any]], str]] = [
        ("first", [_guest("g1"), _guest("g2")], "created"),
        ("state", [_guest("g1", state=5), _guest("g2")], "updated"),
        ("attribute value", [_guest("g1", state=5, active=0), _guest("g2")], "updated"),
        ("attribute type 0 -> false", [_guest("g1", state=5, active=False), _guest("g2")], "updated"),
        ("attribute type false -> 0.0", [_guest("g1", state=5, active=0.0), _guest("g2")], "updated"),
        ("attribute added", [_guest("g1", state=5, active=0.0, extra="x"), _guest("g2")], "updated"),
        ("guest id spelling", [_guest("G1", state=5, active=0.0, extra="x"), _guest("g2")], "updated"),
        ("order only", [_guest("g2"), _guest("G1", state=5, active=0.0, extra="x")], "unchanged"),
        ("guest removed", [_guest("g2")], "updated"),
        ("state null", [{"guestId": "g2", "state": None, "attributes": {"virtWhoType": "esx", "active": 1}}],
         "updated"),
    ]
    for what, guests, kind in steps:
        job = checkin(server, org, {"hypervisors": [hypervisor("detail-1", guests)]})
        assert _kinds(job) == {kind: ["detail-1"]}, what
        stored = _guests(server, org, "detail-1")
        # 0, False and 0.0 read back as "0", "false" and "0.0": each change shows
        sent = {g["guestId"]: _as_stored(g["attributes"]) for g in guests}
        assert stored == sent, what


def test_guests_replaced_through_the_consumer_api_are_restored_by_the_same_report(
        server: FtmockServer, org: str) -> None:
    report = {"hypervisors": [hypervisor("put-1", [_guest("g1"), _guest("g2")])]}
    checkin(server, org, report)
    admin = admin_client(server)
    uuid = _host(server, org, "put-1")["uuid"]
    assert admin.put(f"/consumers/{uuid}", json={"guestIds": [{"guestId": "other"}]}).status_code == 204
    assert set(_guests(server, org, "put-1")) == {"other"}
    job = checkin(server, org, report)
    assert _kinds(job) == {"updated": ["put-1"]}
    assert set(_guests(server, org, "put-1")) == {"g1", "g2"}


def test_report_parsing_fast_path_keeps_every_check(server: FtmockServer, org: str) -> None:
    """Plain guests are checked inline, FT and unusual ones by the full path: both refuse the same."""
    admin = admin_client(server)

    def post(guests: list[Any], **extra: Any) -> Any:
        body = json.dumps({"hypervisors": [{**hypervisor("fast-1", guests), **extra}]})
        return admin.post(f"/hypervisors/{org}?reporter_id=r", data=body, headers={"Content-Type": "text/plain"})

    def nested(levels: int) -> Any:
        value: Any = "leaf"
        for _ in range(levels):
            value = [value]
        return value

    refused = {
        "guestId empty": [_guest(" ")],
        "guestId too long": [_guest("x" * 256)],
        "guestId a number": [{"guestId": 7}],
        "state a string": [{"guestId": "g", "state": "1"}],
        "state a boolean": [{"guestId": "g", "state": True}],
        "attributes a list": [{"guestId": "g", "attributes": ["a"]}],
        "attribute nested too deep": [_guest("g", deep=nested(27))],
        "unknown guest key nested too deep": [{"guestId": "g", "other": nested(28)}],
        "guest a number": [5],
    }
    for what, guests in refused.items():
        r = post([_guest("ok-1"), *guests])
        assert r.status_code == 400, (what, r.text)
        assert "fast-1" in r.json()["displayMessage"] or "nested" in r.json()["displayMessage"], what
    r = post([_guest("ok-1")], other=nested(30))
    assert r.status_code == 400 and "nested" in r.json()["displayMessage"]
    for body in (b'{"hypervisors": [{"hypervisorId": "h", "guestIds": [{"guestId": "g", "state": '
                 b'9223372036854775808}]}]}',
                 b'{"hypervisors": [{"hypervisorId": "h", "guestIds": [{"guestId": "g\\udc00"}]}]}',
                 b'{"hypervisors": [{"hypervisorId": "h", "guestIds": [{"guestId": "g", "attributes": {"\\ud800": 1}}]}]}'):
        r = admin.post(f"/hypervisors/{org}", data=body, headers={"Content-Type": "text/plain"})
        assert r.status_code == 400, body
    assert admin.get(f"/owners/{org}/consumers").json() == []
    # What the checks allow is stored as sent (numbers read back as text): deep-but-allowed attributes,
    # big integers, any guest key.
    guests = [_guest("ok-1", deep=nested(26), big=9223372036854775807, emoji="\U0001f600"), "bare-id",
              {"guestId": "g-extra", "other": {"x": 1}}]
    job = checkin(server, org, {"hypervisors": [hypervisor("fast-1", guests)]})
    assert _kinds(job) == {"created": ["fast-1"]}
    stored = _guests(server, org, "fast-1")
    assert stored["ok-1"]["deep"] == nested(26) and stored["ok-1"]["big"] == "9223372036854775807"
    assert stored["ok-1"]["emoji"] == "\U0001f600" and stored["bare-id"] == {} and stored["g-extra"] == {}


def test_a_burst_of_reports_is_applied_in_order(server: FtmockServer, org: str) -> None:
    """Reports sent faster than they are applied: a few wait parsed, the rest as their stored
    payload; either way each is compared with the one before it."""
    admin = admin_client(server)
    reports = [{"hypervisors": [hypervisor("burst-1", [f"b-{n}", "b-common"]), hypervisor("burst-2", ["b-fixed"])]}
               for n in range(8)]
    reports.insert(4, reports[3])  # the same report twice in a row: its second job changes nothing
    jobs = []
    for report in reports:
        r = admin.post(f"/hypervisors/{org}?reporter_id=burst", data=json.dumps(report),
                       headers={"Content-Type": "text/plain"})
        assert r.status_code == 200, r.text
        jobs.append(r.json()["id"])
    results = []
    for job_id in jobs:
        job = finished_job(lambda job_id: admin.get(f"/jobs/{job_id}").json(), job_id, timeout=60)
        assert job["state"] == "FINISHED", job
        results.append(_kinds(job))
    expected = [{"created": ["burst-1", "burst-2"]}] + [{"updated": ["burst-1"], "unchanged": ["burst-2"]}] * 8
    expected[4] = {"unchanged": ["burst-1", "burst-2"]}
    assert results == expected
    assert set(_guests(server, org, "burst-1")) == {"b-7", "b-common"}
