"""The lease's fault scenarios, each run against every backend: the server, etcd and sanlock.

Two instances of one FT VM (the same identity, each its own holder id) run ``ftagent heartbeat``
against one backend (a :class:`tests.kit.lease_sites.LeaseSite`): a steady holder and a clean
release, two instances started together, a holder whose host freezes past its deadline, and
one-shot claims.  Whatever happens, the backend's own record shows one holder at a time with
growing generations, and a holder that lost the lease fenced.  What only one backend has (the
server's 308, etcd's quorum, sanlock's kill path) is tested in that backend's module.

The sanlock cases run where Debian's python3-sanlock loads (``make test-sanlock``, marker
``sanlock``); elsewhere they are skipped with a reason that says so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kit.lease import boottime
from tests.kit.lease_sites import LeaseSite, open_site

BACKENDS = ["server", "etcd", pytest.param("sanlock", marks=pytest.mark.sanlock)]


@pytest.fixture(params=BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LeaseSite]:
    made = open_site(request.param, request, tmp_path)
    try:
        yield made
    finally:
        made.close()


def test_steady_holder_then_a_clean_release_hands_over_at_once(site: LeaseSite) -> None:
    a, b = site.a, site.b
    site.start(a)
    status = site.held(a, site.acquire_timeout)
    gen, first = status["generation"], status["renewals"]
    site.start(b)
    site.wait(lambda: b.status().get("held_by") == site.holder_seen(a), 30, "b seeing a as the holder")
    for holders in site.watch(site.steady_seconds):  # renewals go on; the other instance waits
        assert holders == [a]
    status = a.status()
    assert status["state"] == "HELD" and status["generation"] == gen and status["renewals"] >= first + 3
    assert b.state() == "ACQUIRING"
    site.check_steady(a, status)
    lease = json.loads(site.ftagent(a, "status", "--json").stdout)["lease"]
    assert (lease["state"], lease["generation"], lease["running"]) == ("HELD", gen, True)
    site.check_summary(lease)
    assert site.history() == [(status["holder_fingerprint"], gen)]
    stopped = time.monotonic()
    assert site.stop(a) == 0
    assert a.state() == "RELEASED" and not a.fences()
    status_b = site.held(b, site.release_handover)
    assert time.monotonic() - stopped < site.release_handover  # no waiting for an expiry: the release freed it
    assert site.successor_generation(gen, status_b["generation"]), (gen, status_b)
    assert site.history() == [(status["holder_fingerprint"], gen),
                              (status_b["holder_fingerprint"], status_b["generation"])]
    assert site.stop(b) == 0
    assert not a.fences() and not b.fences()


def test_two_instances_started_together_only_one_holds(site: LeaseSite) -> None:
    a, b = site.a, site.b
    site.start(a)
    site.start(b)
    site.wait(lambda: "HELD" in (a.state(), b.state()), site.acquire_timeout, "one of them HELD")
    for holders in site.watch(3):
        assert len(holders) == 1
    assert sorted([a.state(), b.state()]) == ["ACQUIRING", "HELD"]
    winner, loser = (a, b) if a.state() == "HELD" else (b, a)
    assert loser.status()["held_by"] == site.holder_seen(winner)
    holder = winner.status()["holder_fingerprint"]
    assert [h for h, _ in site.history()] == [holder]  # the other never held
    assert site.stop(winner) == 0
    site.held(loser, site.release_handover)  # the other takes over after the release
    assert site.stop(loser) == 0
    assert not a.fences() and not b.fences()
    assert [h for h, _ in site.history()] == [holder, loser.status()["holder_fingerprint"]]


@pytest.mark.slow
def test_frozen_holder_is_taken_over_only_after_its_deadline_and_fences_on_resume(site: LeaseSite) -> None:
    """The holder's host freezes: the other instance gets the lease only once the backend let the
    holder's lease expire, after the holder's own deadline; the holder, resumed, fences at once
    without a renewal, and the backend refuses its stale generation."""
    a, b = site.a, site.b
    site.start(a)
    site.held(a, site.acquire_timeout)
    site.start(b)
    site.wait(lambda: b.status().get("held_by") == site.holder_seen(a), 30, "b waiting")
    before = a.status()
    frozen_at = boottime()
    site.freeze(a)
    try:
        site.held(b, site.takeover_timeout)
        took_over = boottime()
        assert took_over - frozen_at >= site.frozen_takeover_after  # not before the backend's expiry
        assert before["deadline"] < took_over  # a's own deadline ran out before b could take over
        assert a.fences() == []  # a frozen host fences nothing
        for holders in site.watch(0.5):
            assert holders == [b]
    finally:
        site.thaw(a)
    site.wait(lambda: a.state() == "FENCED", site.resume_fence_timeout, "a fencing on resume")
    after = a.status()
    assert after["renewals"] == before["renewals"]  # no renewal was accepted after the pause
    assert any(word in a.fences()[0][1] for word in site.late_fence_reasons), a.fences()
    assert site.successor_generation(after["generation"], b.status()["generation"])
    site.check_stale(a, after)
    for holders in site.watch(1):
        assert holders == [b]
    assert a.state() == "FENCED" and len(a.fences()) == 1 and b.state() == "HELD" and not b.fences()
    assert [h for h, _ in site.history()] == [after["holder_fingerprint"], b.status()["holder_fingerprint"]]
    assert site.stop(a) == 3 and site.stop(b) == 0


@pytest.mark.parametrize("site", ["server", "etcd"], indirect=True)
def test_one_shot_claims_grant_refuse_and_renew(site: LeaseSite) -> None:
    """``heartbeat --once`` leaves the lease held after the process ends where the backend keeps it
    (not sanlock's, which the daemon frees with the process: see ``one_shot_holds``)."""
    assert site.one_shot_holds
    a, b = site.a, site.b
    r = site.ftagent(a, "heartbeat", "--once", "--json")
    assert r.returncode == 0, r.stderr
    gen = json.loads(r.stdout)["generation"]
    assert site.ftagent(b, "heartbeat", "--once").returncode == 3  # another instance holds it
    r = site.ftagent(a, "heartbeat", "--once", "--json")  # the same holder again: a renewal, same generation
    assert r.returncode == 0 and json.loads(r.stdout)["generation"] == gen, r.stderr
    assert site.history() == [(a.status()["holder_fingerprint"], gen)]
