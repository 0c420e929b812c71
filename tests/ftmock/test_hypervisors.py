"""Hypervisor check-in as virt-who sends it, and its asynchronous job."""

from __future__ import annotations

import json

from tests.conftest import FtmockServer
from tests.ftmock.conftest import admin_client, checkin, hypervisor


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
