"""The lease state machine against the backend protocol, with an in-memory backend that keeps real lease rules.

:class:`MemoryBackend` is a test double of :class:`ftagent.lease.backend.LeaseBackend` with the
semantics every backend must have: one holder at a time, a generation that grows with every new
grant, expiry ``ttl`` after the last call the backend received, refusals naming the holder.  Two
keepers share one, as two instances of an FT VM share the lease.  The server backend's behaviour
over HTTPS is covered by test_heartbeat_faults.py against ftmock.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from ftagent.config import load_config
from ftagent.errors import ConfigError, ConnectionFailed, FailoverError, FailoverRequired
from ftagent.failover import ValidatedFailover
from ftagent.identity import IdentityStore
from ftagent.lease import Grant, LeaseKeeper, LeaseLost, LeaseRefused, LeaseSettings, LeaseState, parse_lease_settings
from ftagent.lease.backends import BACKENDS, open_backend
from ftagent.lease.backends.server import ServerBackend
from ftagent.lease.clock import ManualClock


class MemoryBackend:
    """One lease in memory on a :class:`ManualClock`; ``down`` makes every call fail like a lost network."""

    name = "memory"

    def __init__(self, clock: ManualClock, ttl: float) -> None:
        self.clock = clock
        self.ttl = ttl
        self.holder: str | None = None
        self.generation = 0
        self.expires = 0.0
        self.down = False
        self.answer: FailoverRequired | None = None  # what renewals get while set (the server's failover answer)
        self.grants: list[tuple[str, int, float]] = []  # (holder, generation, received at)

    def _live(self) -> bool:
        return self.holder is not None and self.clock.now() < self.expires

    def _check(self) -> None:
        if self.down:
            raise ConnectionFailed("backend unreachable")

    def _take(self, holder: str) -> Grant:
        self.holder, self.generation = holder, self.generation + 1
        return self._extend()

    def _extend(self) -> Grant:
        assert self.holder is not None
        self.expires = self.clock.now() + self.ttl
        self.grants.append((self.holder, self.generation, self.clock.now()))
        return Grant(self.holder, self.generation)

    def grant(self, consumer: str, holder: str, timeout: float) -> Grant:
        self._check()
        if self._live() and self.holder != holder:
            raise LeaseRefused("held", holder=self.holder, generation=self.generation)
        return self._extend() if self._live() else self._take(holder)

    def renew(self, consumer: str, holder: str, generation: int, timeout: float) -> Grant:
        self._check()
        if self.answer is not None:
            raise self.answer
        if not self._live() or self.holder != holder or self.generation != generation:
            raise LeaseRefused("stale", holder=self.holder, generation=self.generation, expired=not self._live())
        return self._extend()

    def handover(self, successor: Mapping[str, Any], holder: str, generation: int | None, timeout: float) -> Grant:
        self._check()
        if self._live() and self.holder != holder:
            raise LeaseRefused("held", holder=self.holder, generation=self.generation)
        granted = self._take(holder)
        return Grant(granted.holder, granted.generation, str(successor["uuid"]))

    def release(self, consumer: str, holder: str, timeout: float) -> None:
        self._check()
        if self.holder == holder:
            self.holder = None

    def close(self) -> None:
        pass


SETTINGS = LeaseSettings(renew_interval=1.0, ttl=6.0, margin=2.0)


def make_keeper(backend: MemoryBackend, holder: str, fenced: list[str]) -> LeaseKeeper:
    return LeaseKeeper(SETTINGS, backend, holder=holder, consumer="c1", clock=backend.clock,
                       fence=lambda reason: fenced.append(f"{holder}: {reason}") or None)


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend(ManualClock(), SETTINGS.ttl)


def test_grant_renew_and_a_second_instance_waits(backend: MemoryBackend) -> None:
    fenced: list[str] = []
    a, b = make_keeper(backend, "a", fenced), make_keeper(backend, "b", fenced)
    assert a.step() == LeaseState.HELD and a.generation == 1
    assert b.step() == LeaseState.ACQUIRING and b.held_by == "a" and "held by a" in (b.reason or "")
    backend.clock.advance(1)
    assert a.step() == LeaseState.HELD and a.generation == 1 and a.renewals == 2
    assert a.deadline == pytest.approx(backend.clock.now() + SETTINGS.ttl - SETTINGS.margin)
    assert not fenced


def test_renewals_failing_degrade_then_fence_before_the_backend_lets_anyone_in(backend: MemoryBackend) -> None:
    fenced: list[str] = []
    a, b = make_keeper(backend, "a", fenced), make_keeper(backend, "b", fenced)
    a.step()
    backend.down = True
    backend.clock.advance(1)
    assert a.step() == LeaseState.DEGRADED and a.holds()
    backend.clock.advance(2)
    assert a.step() == LeaseState.DEGRADED and a.failures == 2
    backend.clock.advance(1.01)  # past send time + ttl - margin
    assert a.check_deadline() and a.state == LeaseState.FENCED and "deadline" in fenced[0]
    fenced_at = backend.clock.now()
    backend.down = False
    assert b.step() == LeaseState.ACQUIRING  # the backend still counts a's lease
    backend.clock.advance(backend.expires - backend.clock.now())
    assert b.step() == LeaseState.HELD and b.generation == 2
    assert backend.grants[-1][2] - fenced_at >= SETTINGS.margin - 0.02  # a was out margin seconds before
    assert a.step() == LeaseState.FENCED  # terminal: no more calls
    assert [g[0] for g in backend.grants] == ["a", "b"]


@pytest.mark.parametrize("jitter", [0.0, 0.5, 1.0])
def test_degraded_retries_at_the_short_cadence_and_never_past_the_deadline(backend: MemoryBackend,
                                                                         jitter: float) -> None:
    settings = LeaseSettings(renew_interval=2.0, retry_interval=0.5, ttl=8.0, margin=2.0)
    a = LeaseKeeper(settings, backend, holder="a", consumer="c1", clock=backend.clock, jitter=lambda: jitter,
                    fence=lambda reason: None)
    backend.ttl = settings.ttl
    a.step()
    assert a.next_step_in() == 2.0  # HELD: renew_interval
    backend.clock.advance(2.0)
    backend.down = True
    a.step()
    assert a.state == LeaseState.DEGRADED
    expected = 0.5 * (1 + 0.2 * (2 * jitter - 1))  # retry_interval, jittered by up to 20 %
    assert a.next_step_in() == pytest.approx(expected)
    backend.clock.advance(0.3)  # counted from the start of the failed attempt
    assert a.next_step_in() == pytest.approx(max(0.0, expected - 0.3))
    backend.clock.advance(a.deadline - backend.clock.now() - 0.1)  # type: ignore[operator]
    a.step()
    assert a.next_step_in() == pytest.approx(0.1)  # the last retry comes before the deadline, not after
    backend.down = False
    a.step()
    assert a.state == LeaseState.HELD and a.next_step_in() == 2.0


def test_a_changed_generation_is_refused_and_fences(backend: MemoryBackend) -> None:
    fenced: list[str] = []
    a = make_keeper(backend, "a", fenced)
    a.step()
    backend.generation += 1  # the lease was granted anew behind this instance's back
    backend.clock.advance(1)
    assert a.step() == LeaseState.FENCED and "lease lost" in fenced[0] and "generation 2" in fenced[0]


def test_handover_moves_the_lease_and_a_refused_one_fences(backend: MemoryBackend) -> None:
    fenced: list[str] = []
    a = make_keeper(backend, "a", fenced)
    a.step()
    a.claim_successor("c1", "c2", {"idCert": {"cert": "x"}})
    assert (a.state, a.consumer, a.generation) == (LeaseState.HELD, "c2", 2)
    backend.clock.advance(1)
    assert a.step() == LeaseState.HELD and a.generation == 2
    backend.holder = "other"  # another instance won the lease
    with pytest.raises(LeaseLost) as lost:
        a.claim_successor("c2", "c3", {})
    assert lost.value.holder == "other" and a.state == LeaseState.FENCED and "another instance" in fenced[0]


class RecordingSwapper:
    """Stands in for :class:`ftagent.failover.IdentitySwapper` (whose checks test_failover.py covers):
    records the steps the keeper takes, and refuses the answer when told to."""

    def __init__(self, backend: MemoryBackend, refuse: str | None = None) -> None:
        self.backend = backend
        self.refuse = refuse
        self.steps: list[str] = []

    def validate(self, answer: FailoverRequired) -> ValidatedFailover:
        if self.refuse:
            raise FailoverError(self.refuse)
        self.steps.append(f"validated (lease held by {self.backend.holder}, generation {self.backend.generation})")
        return ValidatedFailover(str(answer.from_uuid), str(answer.to_uuid), b"", None,
                                 dict(answer.failover["consumer"]), 1, "")

    def install(self, checked: ValidatedFailover) -> None:
        self.steps.append(f"installed (lease held by {self.backend.holder}, generation {self.backend.generation})")


def test_a_renewal_answered_with_a_failover_is_claimed_before_the_swap_and_not_repeated(
        backend: MemoryBackend) -> None:
    fenced: list[str] = []
    swapper = RecordingSwapper(backend)
    a = LeaseKeeper(SETTINGS, backend, holder="a", consumer="c1", clock=backend.clock,
                    swapper=swapper, fence=lambda reason: fenced.append(reason) or None)  # type: ignore[arg-type]
    a.step()
    backend.answer = FailoverRequired(308, body={"failover": {"from": "c1", "to": "c2", "consumer": {"uuid": "c2"}}})
    backend.clock.advance(1)
    grants = len(backend.grants)
    assert a.step() == LeaseState.HELD
    # Validated first, installed only once the successor's lease was claimed (the handover: generation 2).
    assert swapper.steps == ["validated (lease held by a, generation 1)", "installed (lease held by a, generation 2)"]
    assert (a.consumer, a.generation) == ("c2", 2)
    assert len(backend.grants) == grants + 1  # the handover, and no repeated renewal after it
    backend.answer = None
    backend.clock.advance(1)
    assert a.step() == LeaseState.HELD and a.generation == 2 and not fenced


def test_a_failover_answer_that_cannot_be_followed_is_a_failed_renewal(backend: MemoryBackend) -> None:
    fenced: list[str] = []
    answer = FailoverRequired(308, body={"failover": {"from": "c1", "to": "c2", "consumer": {}}})
    refusing = RecordingSwapper(backend, refuse="failover refused: the successor's certificate is not issued by the "
                                                "configured CA")
    for swapper in (refusing, None):
        a = LeaseKeeper(SETTINGS, backend, holder=f"a-{swapper}", consumer="c1", clock=backend.clock,
                        swapper=swapper, fence=lambda reason: fenced.append(reason) or None)  # type: ignore[arg-type]
        backend.holder = None
        a.step()
        backend.answer = answer
        backend.clock.advance(1)
        assert a.step() == LeaseState.DEGRADED and a.consumer == "c1" and a.holds()
        assert "failover" in (a.reason or "")
        backend.answer = None
    assert not fenced and not refusing.steps


def test_release_lets_the_other_instance_in_at_once(backend: MemoryBackend) -> None:
    fenced: list[str] = []
    a, b = make_keeper(backend, "a", fenced), make_keeper(backend, "b", fenced)
    a.step()
    assert b.step() == LeaseState.ACQUIRING
    assert a.release() == LeaseState.RELEASED
    assert b.step() == LeaseState.HELD and b.generation == 2 and not fenced


def test_backend_key_selects_the_server_backend_by_default(tmp_path: Path) -> None:
    conf = tmp_path / "ftagent.conf"
    conf.write_text("[server]\nurl = https://127.0.0.1:1/candlepin\n\n[lease]\nttl = 12\nmargin = 3\nrenew_interval = 3\n")
    config = load_config(conf)
    settings = parse_lease_settings(config)
    assert settings.backend == "server" and "server" in BACKENDS
    backend = open_backend(config, settings, IdentityStore(tmp_path / "identity"))
    assert isinstance(backend, ServerBackend) and backend.name == "server" and backend.ttl == 12.0
    conf.write_text("[server]\nurl = https://127.0.0.1:1/candlepin\n\n[lease]\nbackend = Server\n")
    assert parse_lease_settings(load_config(conf)).backend == "server"
    conf.write_text("[server]\nurl = https://127.0.0.1:1/candlepin\n\n[lease]\nbackend = zookeeper\n")
    with pytest.raises(ConfigError) as err:
        parse_lease_settings(load_config(conf))
    assert "[lease] backend" in str(err.value) and "'zookeeper'" in str(err.value) and "server" in str(err.value)


class AgedBackend(MemoryBackend):
    """A backend whose promise started ``age`` seconds before its answer (sanlock: the daemon's last
    lockspace renewal), as :attr:`Grant.age` says."""

    age = 2.5

    def _extend(self) -> Grant:
        granted = super()._extend()
        self.expires -= self.age
        return Grant(granted.holder, granted.generation, age=self.age)


def test_grant_age_moves_the_deadline_back_to_when_the_promise_started() -> None:
    backend = AgedBackend(ManualClock(), SETTINGS.ttl)
    fenced: list[str] = []
    a = make_keeper(backend, "a", fenced)
    assert a.step() == LeaseState.HELD
    assert a.deadline == pytest.approx(backend.clock.now() - backend.age + SETTINGS.ttl - SETTINGS.margin)
    backend.down = True
    backend.clock.advance(SETTINGS.ttl - SETTINGS.margin - backend.age + 0.01)
    assert a.check_deadline() and a.state == LeaseState.FENCED
    assert backend.expires - backend.clock.now() >= SETTINGS.margin - 0.02  # still margin before the backend's end
