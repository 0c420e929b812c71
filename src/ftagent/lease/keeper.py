"""The FT group lease's state machine: :class:`LeaseKeeper`.

States (after CloudStack's Host HA and sanlock)::

    DISABLED                       kill switch (``enabled = false``): observe and report only
    ACQUIRING -> HELD <-> DEGRADED  renewals failing, still before the deadline: retried every
                                   ``retry_interval`` (jittered) instead of ``renew_interval``
    HELD|DEGRADED -> FENCING -> FENCED   lost (refused), or past the deadline; FENCED is terminal
    HELD|DEGRADED -> RELEASING -> RELEASED   clean stop

The deadline is ``send time of the last successful renewal + ttl - margin`` on the clock of
:mod:`ftagent.lease.clock` (``CLOCK_BOOTTIME``), ``ttl`` being the backend's
(:attr:`ftagent.lease.backend.LeaseBackend.ttl`).  The backend's lease runs at least ``ttl`` from the
moment it received that renewal, which is after we sent it, so we stop acting as the holder at least
``margin`` seconds before the backend could grant the lease to anyone else.

With the kill switch on, the same protocol runs (claims, renewals, release), but where an enabled
agent would fence this one logs what it would have done and goes on; the reported state is
``DISABLED`` and ``observed`` holds the state the enabled machine would be in.

The machine knows nothing of where the lease lives: it talks to a
:class:`~ftagent.lease.backend.LeaseBackend` (:mod:`ftagent.lease.backends`).  A call answered with a
failover (:class:`~ftagent.errors.FailoverRequired`, from the server backend) comes back here, and the
machine follows it: its ``swapper`` (:class:`~ftagent.failover.IdentitySwapper`) validates the
answer, the machine claims the successor's lease (:meth:`LeaseKeeper.claim_successor`), and only then
the swapper installs the successor's identity.

The holder id is a secret (:mod:`ftagent.lease.status`): logs, reasons and the snapshot name this
instance by its fingerprint, and another holder as the backend named it (never by its id).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ftagent.errors import FailoverError, FailoverRequired, FtagentError
from ftagent.lease.backend import Grant, LeaseBackend, LeaseRefused
from ftagent.lease.clock import Clock
from ftagent.lease.settings import LeaseSettings
from ftagent.lease.states import DONE, HOLDING, LeaseLost, LeaseState
from ftagent.lease.status import holder_fingerprint, holder_path, shown_holder

if TYPE_CHECKING:
    from ftagent.failover import IdentitySwapper
    from ftagent.lease.fencing import FenceReport

__all__ = ["RETRY_JITTER", "Fencer", "LeaseKeeper"]

logger = logging.getLogger(__name__)

Fencer = Callable[[str], "FenceReport | None"]
#: A retry while DEGRADED waits ``retry_interval`` times a random factor within 1 +/- this, so that
#: guests cut off together do not all come back to the server in the same instant.
RETRY_JITTER = 0.2


class LeaseKeeper:
    """The state machine.  Thread-safe: the heartbeat loop calls :meth:`step` (and :meth:`release`),
    a guard thread calls :meth:`check_deadline`.

    ``backend`` carries the lease calls (:class:`~ftagent.lease.backend.LeaseBackend`).

    ``fence(reason)`` runs the fencing ladder; ``on_change(keeper, durable)`` persists the status;
    ``swapper`` validates and installs a failover successor (without it, a failover answer is a
    failed call).  Network I/O is never done while holding the lock.
    """

    def __init__(
        self,
        settings: LeaseSettings,
        backend: LeaseBackend,
        *,
        holder: str,
        consumer: str,
        clock: Clock,
        fence: Fencer,
        on_change: Callable[[LeaseKeeper, bool], None] | None = None,
        swapper: IdentitySwapper | None = None,
        request_timeout: float = 30.0,
        generation: int | None = None,
        deadline: float | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.holder = holder
        #: How this instance is shown in logs and the status file: the holder id's fingerprint.
        self.fingerprint = holder_fingerprint(holder)
        self.consumer = consumer
        self.clock = clock
        self._fence = fence
        self._on_change = on_change
        self._swapper = swapper
        self._jitter = jitter
        self.request_timeout = request_timeout
        self.enabled = settings.enabled
        self._lock = threading.RLock()
        self._state = LeaseState.ACQUIRING
        self.generation: int | None = None
        self.deadline: float | None = None
        #: The holder as last reported, fit to show (:func:`~ftagent.lease.status.shown_holder`).
        self.held_by: str | None = None
        self.renewals = 0
        self.failures = 0
        self.reason: str | None = None
        self.fence_report: dict[str, Any] | None = None
        self.suppressed: list[str] = []
        #: When the last acquisition or renewal attempt started (on ``clock``).
        self.attempted: float | None = None
        if generation is not None and deadline is not None and deadline > clock.now():
            # Carried over from an earlier run (``--once``): still ours until the deadline.
            self._state, self.generation, self.deadline, self.held_by = (LeaseState.HELD, generation, deadline,
                                                                         self.fingerprint)

    # -- views ------------------------------------------------------------------------------

    def _shown(self, holder: str | None) -> str | None:
        return shown_holder(holder, self.holder)

    @property
    def lifetime(self) -> float:
        """Seconds from a call's send time to the local deadline: the backend's ttl - margin."""
        return self.backend.ttl - self.settings.margin

    @property
    def observed(self) -> LeaseState:
        """The state the enabled state machine is in (what the kill switch observes)."""
        return self._state

    @property
    def state(self) -> LeaseState:
        """The reported state: ``DISABLED`` with the kill switch on, else :attr:`observed`."""
        if not self.enabled and self._state not in (LeaseState.RELEASING, LeaseState.RELEASED):
            return LeaseState.DISABLED
        return self._state

    def holds(self) -> bool:
        """True while this instance may act as the holder (HELD/DEGRADED and before the deadline)."""
        with self._lock:
            return (self._state in HOLDING and self.deadline is not None and self.clock.now() < self.deadline)

    def remaining(self) -> float | None:
        """Seconds to the deadline (``None`` when not holding)."""
        with self._lock:
            if self._state not in HOLDING or self.deadline is None:
                return None
            return self.deadline - self.clock.now()

    def snapshot(self) -> dict[str, Any]:
        """The status-file view (``deadline`` on the clock of :mod:`ftagent.lease.clock`)."""
        with self._lock:
            now = self.clock.now()
            return {
                "state": self.state.value,
                "observed": self._state.value if not self.enabled else None,
                "enabled": self.enabled,
                "holder_fingerprint": self.fingerprint,
                "held_by": self.held_by,
                "generation": self.generation,
                "consumer": self.consumer,
                "deadline": self.deadline,
                "deadline_in": None if self.deadline is None else round(self.deadline - now, 3),
                "renewals": self.renewals,
                "failures": self.failures,
                "reason": self.reason,
                "fence": self.fence_report,
                "suppressed_fences": list(self.suppressed[-5:]),
                "ttl": self.backend.ttl,
                "renew_interval": self.settings.renew_interval,
                "margin": self.settings.margin,
            }

    # -- transitions ------------------------------------------------------------------------

    def _changed(self, durable: bool) -> None:
        if self._on_change is not None:
            try:
                self._on_change(self, durable)
            except OSError as exc:
                logger.error("cannot write the lease status: %s", exc)

    def _enter(self, new: LeaseState, reason: str) -> None:
        old = self._state
        self._state = new
        self.reason = reason
        if old != new:
            level = logging.WARNING if new in (LeaseState.DEGRADED, LeaseState.FENCING, LeaseState.FENCED) else (
                logging.INFO)
            tag = " (kill switch on: observing only)" if not self.enabled else ""
            logger.log(level, "lease %s -> %s%s: %s (holder %s, generation %s)", old.value, new.value, tag,
                       reason, self.fingerprint, self.generation)
            self._changed(True)

    def fence_now(self, reason: str) -> bool:
        """Stop acting as the holder: run the ladder once; ``False`` if already fencing/done."""
        with self._lock:
            if self._state in DONE:
                return False
            if not self.enabled:
                logger.warning("kill switch on: NOT fencing although %s", reason)
                self.suppressed.append(reason)
                self._enter(LeaseState.FENCED, f"would fence: {reason}")
                # Observing only: start over as a candidate instead of staying fenced.
                self.generation, self.deadline = None, None
                self._enter(LeaseState.ACQUIRING, f"kill switch on, fence suppressed: {reason}")
                return False
            self._enter(LeaseState.FENCING, reason)
            generation = self.generation
        report = None
        try:
            report = self._fence(reason)
        finally:
            with self._lock:
                if report is not None:
                    self.fence_report = dict(report.as_dict(), generation=generation)
                self._enter(LeaseState.FENCED, reason)
        return True

    def check_deadline(self) -> bool:
        """Fence if the deadline has passed (the guard thread calls this often); True if it fenced."""
        with self._lock:
            if self._state not in HOLDING or self.deadline is None or self.clock.now() < self.deadline:
                return False
            late = self.clock.now() - self.deadline
        return self.fence_now(f"lease deadline passed {late:.2f} s ago without a successful renewal")

    def next_step_in(self) -> float:
        """Seconds until the next :meth:`step` is due: ``renew_interval`` while holding or acquiring; while
        DEGRADED ``retry_interval`` (jittered) from the start of the last attempt, so that a server back
        before the deadline is used; never past the deadline."""
        with self._lock:
            now = self.clock.now()
            if self._state == LeaseState.DEGRADED:
                wait = self.settings.retry_interval * (1 + RETRY_JITTER * (2 * self._jitter() - 1))
                if self.attempted is not None:
                    wait -= now - self.attempted
            else:
                wait = self.settings.renew_interval
            if self._state in HOLDING and self.deadline is not None:
                wait = min(wait, self.deadline - now)
            return max(0.0, wait)

    def _timeout(self, now: float) -> float:
        """Per-request timeout: connect and read each get half of what is left before the deadline."""
        timeout = self.request_timeout
        if self._state in HOLDING and self.deadline is not None:
            timeout = min(timeout, (self.deadline - now) / 2)
        else:
            timeout = min(timeout, self.lifetime / 2)
        return max(0.05, timeout)

    def step(self) -> LeaseState:
        """One acquisition or renewal attempt; returns the reported state afterwards."""
        with self._lock:
            if self._state in DONE:
                return self.state
            now = self.clock.now()
            self.attempted = now
            expired = self._state in HOLDING and self.deadline is not None and now >= self.deadline
            holding = self._state in HOLDING
            generation = self.generation if holding else None
            consumer = self.consumer
            timeout = self._timeout(now)
        if expired:
            self.check_deadline()
            return self.state
        try:
            if generation is None:
                granted = self.backend.grant(consumer, self.holder, timeout)
            else:
                granted = self.backend.renew(consumer, self.holder, generation, timeout)
        except FailoverRequired as answer:
            self._on_failover(answer)
        except LeaseLost as exc:
            self.fence_now(str(exc))
        except LeaseRefused as exc:
            self._on_refused(exc, holding)
        except FtagentError as exc:
            self._on_failure(exc)
        else:
            self._on_granted(granted, now, holding)
        return self.state

    def _on_granted(self, granted: Grant, sent: float, was_holding: bool) -> None:
        with self._lock:
            if self._state in DONE:
                return
            generation = granted.generation
            holder = granted.holder
            new_deadline = self._start(granted, sent) + self.lifetime
            self.held_by = self._shown(holder)
            if holder != self.holder or generation is None:
                reason = f"the {self.backend.name} backend granted the lease to {self.held_by!r}, not to us"
            elif was_holding and self._state in HOLDING and generation != self.generation:
                reason = f"the lease generation changed from {self.generation} to {generation} unexpectedly"
            elif self.clock.now() >= new_deadline:
                if not (was_holding or self._state in HOLDING):
                    self.failures += 1
                    logger.warning("lease granted too late to use (answer after the deadline); trying again")
                    return
                reason = "the renewal was answered after the deadline"
            else:
                reason = ""
            if not reason:
                self.generation = generation
                self.deadline = new_deadline
                self.consumer = granted.consumer or self.consumer
                self.renewals += 1
                self.failures = 0
                if self._state != LeaseState.HELD:
                    self._enter(LeaseState.HELD, "acquired" if not was_holding else "renewed")
                else:
                    self._changed(False)
                return
        self.fence_now(reason)

    def _start(self, granted: Grant, sent: float) -> float:
        """When the backend's promise started: the send time, or earlier if the grant says so."""
        if granted.age is None:
            return sent
        return min(sent, self.clock.now() - max(0.0, granted.age))

    def _on_refused(self, exc: LeaseRefused, was_holding: bool) -> None:
        holder, generation = self._shown(exc.holder), exc.generation
        with self._lock:
            if self._state in DONE:
                return
            self.held_by = holder
            if not (was_holding or self._state in HOLDING):
                self.failures = 0
                if holder is None or exc.holder_in_use:
                    self.reason = self._refusal(exc)
                    logger.warning("lease %s; waiting", self.reason)
                else:
                    self.reason = f"held by {holder} (generation {generation})"
                    logger.info("lease held by %s (generation %s); waiting", holder, generation)
                self._changed(False)
                return
        if holder is None or exc.holder_in_use:
            self.fence_now(f"lease lost: {self._refusal(exc)}")
        else:
            self.fence_now(f"lease lost: {exc} (holder {holder}, generation {generation})")

    def _refusal(self, exc: LeaseRefused) -> str:
        """A refusal that names no holder, said as it is; where the backend refuses this instance's holder
        id itself (another consumer holds a lease under it), what to do about it."""
        said = f"refused by the {self.backend.name} backend: {exc}"
        if not exc.holder_in_use:
            return said
        return (f"{said} (this instance's holder id, fingerprint {self.fingerprint}, is kept in "
                f"{holder_path(self.settings.status_file)}; if that file was copied from another system, "
                "remove it and restart the heartbeat to get a new holder id)")

    def _on_failure(self, exc: FtagentError) -> None:
        with self._lock:
            if self._state in DONE:
                return
            self.failures += 1
            if self._state in HOLDING:
                if self._state == LeaseState.HELD:
                    self._enter(LeaseState.DEGRADED, f"renewal failed: {exc}")
                else:
                    logger.warning("lease renewal failed again (%d): %s", self.failures, exc)
                    self._changed(False)
            else:
                logger.warning("lease acquisition failed: %s", exc)
                self.reason = f"acquisition failed: {exc}"
                self._changed(False)

    def _on_failover(self, answer: FailoverRequired) -> None:
        """A call was answered with a failover: validate it, claim the successor's lease, and only then
        install the successor's identity.  The claim renews the lease, so the call is not repeated; a
        refused or failed step is handled as the call's own outcome."""
        if self._swapper is None:
            self._on_failure(FailoverError(f"the server answered with a failover to {answer.to_uuid}, which this "
                                           "agent cannot follow", from_uuid=answer.from_uuid, to_uuid=answer.to_uuid))
            return
        try:
            checked = self._swapper.validate(answer)
            self.claim_successor(checked.from_uuid, checked.to_uuid, checked.consumer)
            self._swapper.install(checked)
        except LeaseLost as exc:
            self.fence_now(str(exc))  # a no-op when the refused claim fenced already
        except FtagentError as exc:
            self._on_failure(exc)  # nothing swapped; the next renewal gets the answer again

    def claim_successor(self, from_uuid: str, to_uuid: str, consumer: Mapping[str, Any]) -> None:
        """Claim a failover successor's lease as the same holder (a handover on the server) before
        the identity is swapped.

        A refusal means another instance is live: fence and raise :class:`LeaseLost` so that nothing
        is swapped.  Other failures raise too (nothing swapped; the next renewal retries).
        """
        with self._lock:
            if self._state in DONE:
                raise LeaseLost(f"not claiming {to_uuid}: the lease is {self._state.value}",
                                from_uuid=from_uuid, to_uuid=to_uuid)
            now = self.clock.now()
            if self._state in HOLDING and self.deadline is not None and now >= self.deadline:
                late = True
            else:
                late = False
                holding = self._state in HOLDING
                generation = self.generation if holding else None
                timeout = self._timeout(now)
        if late:
            self.check_deadline()
            raise LeaseLost(f"not claiming {to_uuid}: the lease deadline has passed", from_uuid=from_uuid,
                            to_uuid=to_uuid)
        dto = dict(consumer)
        dto.setdefault("uuid", to_uuid)
        logger.warning("failover %s -> %s: claiming the successor's lease as %s (generation %s)", from_uuid,
                       to_uuid, self.fingerprint, generation)
        try:
            granted = self.backend.handover(dto, self.holder, generation, timeout)
        except LeaseRefused as exc:
            shown = self._shown(exc.holder)
            reason = (f"failover claim of {to_uuid} refused: {exc} "
                      f"(holder {shown}, generation {exc.generation}); another instance is live")
            self.fence_now(reason)
            raise LeaseLost(reason, holder=shown, generation=exc.generation,
                            from_uuid=from_uuid, to_uuid=to_uuid) from exc
        except FtagentError as exc:
            raise FailoverError(f"failover claim of the successor's lease failed: {exc}", from_uuid=from_uuid,
                                to_uuid=to_uuid) from exc
        generation = granted.generation
        with self._lock:
            if self._state in DONE:
                raise LeaseLost(f"lease {self._state.value} during the failover claim", from_uuid=from_uuid,
                                to_uuid=to_uuid)
            if granted.holder != self.holder or generation is None:
                reason = f"failover claim of {to_uuid} answered for holder {self._shown(granted.holder)!r}"
            elif self.clock.now() >= self._start(granted, now) + self.lifetime:
                reason = "the failover claim was answered after the deadline"
            else:
                reason = ""
            if not reason:
                self.generation = generation
                self.deadline = max(self._start(granted, now) + self.lifetime, self.deadline or 0.0)
                self.consumer = to_uuid
                self.held_by = self.fingerprint
                self.renewals += 1
                self._enter(LeaseState.HELD, f"handover to successor {to_uuid} (generation {generation})")
                return
        self.fence_now(reason)
        raise LeaseLost(reason, from_uuid=from_uuid, to_uuid=to_uuid)

    def release(self) -> LeaseState:
        """Clean stop: release the lease if held; returns the final reported state."""
        with self._lock:
            if self._state in (LeaseState.FENCING, LeaseState.FENCED, LeaseState.RELEASED):
                return self.state
            holding = self._state in HOLDING
            consumer = self.consumer
            remaining = None if self.deadline is None else self.deadline - self.clock.now()
            self._enter(LeaseState.RELEASING, "stopping")
        if holding:
            timeout = min(self.request_timeout, 5.0)
            if remaining is not None and remaining > 0.1:
                timeout = min(timeout, remaining / 2)
            try:
                self.backend.release(consumer, self.holder, max(0.05, timeout))
                reason = "released"
            except FtagentError as exc:
                reason = (f"release failed ({exc}); the {self.backend.name} backend frees the lease when its "
                          "ttl runs out")
                logger.warning("lease %s", reason)
        else:
            reason = "stopped without holding the lease"
        with self._lock:
            self.deadline = None
            self.held_by = None if holding else self.held_by
            self._enter(LeaseState.RELEASED, reason)
        return self.state
