"""``ftagent heartbeat``: the lease heartbeat daemon (and ``--once``).

The loop renews the FT group's lease every ``renew_interval`` seconds through the configured
backend (:mod:`ftagent.lease.backends`; by default ftmock's lease API over one mutual-TLS
connection), with no transparent retries and a timeout on every call shorter than what is left
before the deadline.  While renewals fail (DEGRADED) it tries again every ``retry_interval``
(jittered) until the deadline, so that a server back in time is used.  A guard thread checks the deadline twice a second
on ``CLOCK_BOOTTIME`` and fences even when the loop is stuck in a request; it also sends
``WATCHDOG=1`` to systemd while the lease is valid (and while merely acquiring, when there is
nothing to protect), never once fencing has started.

A renewal answered with a failover comes back to the state machine, which follows it with the
:class:`ftagent.failover.IdentitySwapper` it is given (on the server connection): the answer is
validated, the successor's lease claimed (:meth:`ftagent.lease.keeper.LeaseKeeper.claim_successor`,
the backend's handover), and only then the identity swapped and the successor's entitlement
certificates fetched; a refused claim fences.

SIGUSR1 means "the lease is lost, fence now": the sanlock backend's kill path (its daemon runs
``kill -USR1 <pid>`` when this host loses the lockspace) and any outside watchdog use it; the guard
thread then runs the fencing ladder if this instance holds the lease, and the backend closes, so a
backend whose lease belongs to the process (sanlock) gives it up.

Exit statuses: ``--once`` returns :data:`EXIT_HOLDER` (0) when this instance holds the lease
afterwards and :data:`EXIT_NOT_HOLDER` (3) when it does not (another instance holds it, or it was
fenced); the daemon returns 0 after a clean release and 3 after fencing.  Server errors in
``--once`` without holding raise :class:`~ftagent.errors.ConnectionFailed` (exit 69).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import select
import signal
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ftagent.connection import Connection, server_connection
from ftagent.errors import ConnectionFailed
from ftagent.facts import collect_facts
from ftagent.failover import IdentitySwapper
from ftagent.lease.backends import open_backend
from ftagent.lease.clock import Clock, SystemClock, boot_id
from ftagent.lease.fencing import FenceLadder, FenceReport, Runner, parse_signal_spec, run_bounded
from ftagent.lease.keeper import LeaseKeeper
from ftagent.lease.settings import LeaseSettings, parse_lease_settings
from ftagent.lease.states import LeaseState
from ftagent.lease.status import load_or_create_holder, read_status, write_status
from ftagent.repos import entitlement_store
from ftagent.rhsmidentity import identity_store
from ftagent.sdnotify import Notifier, watchdog_interval

if TYPE_CHECKING:
    from ftagent.config import Config

__all__ = ["EXIT_HOLDER", "EXIT_NOT_HOLDER", "Heartbeat", "Stopper"]

logger = logging.getLogger(__name__)

EXIT_HOLDER = 0
EXIT_NOT_HOLDER = 3
GUARD_PERIOD = 0.5


class Stopper:
    """A stop flag that a signal handler can set safely and a loop can wait on (self-pipe)."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._flag = False
        self.signal: int | None = None

    def request(self, signum: int | None = None) -> None:
        """Ask the loops to stop (async-signal safe enough: no locks)."""
        if signum is not None:
            self.signal = signum
        self._flag = True
        with contextlib.suppress(OSError):
            os.write(self._write, b"x")

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None) -> bool:
        """Sleep up to ``timeout`` seconds (``None``: forever); True once a stop was requested."""
        if self._flag:
            return True
        with contextlib.suppress(InterruptedError):
            select.select([self._read], [], [], None if timeout is None else max(0.0, timeout))
        return self._flag

    def close(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


class Heartbeat:
    """One heartbeat agent: keeper, backend, fencing ladder, status file, watchdog."""

    def __init__(
        self,
        config: Config,
        settings: LeaseSettings | None = None,
        *,
        clock: Clock | None = None,
        runner: Runner | None = None,
        systemctl: str | None = None,
        notifier: Notifier | None = None,
        mode: str = "daemon",
    ) -> None:
        self.config = config
        self.settings = settings if settings is not None else parse_lease_settings(config)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.notifier = notifier if notifier is not None else Notifier()
        self.mode = mode
        self.identity = identity_store(config)
        self.entitlements = entitlement_store(config)  # a failover swap rewrites the repository file too
        self.boot_id = boot_id()
        self.fence_count = 0
        self._fences_written = 0
        self.lost: str | None = None  # set by SIGUSR1 (the sanlock kill path), acted on by the guard
        self.ladder = self._ladder(runner, systemctl)
        uuid = self.identity.load().uuid
        self.holder = load_or_create_holder(self.settings.status_file)
        generation, deadline = self._carried_over(uuid) if mode == "once" else (None, None)
        self._connection: Connection | None = None
        self.backend = open_backend(config, self.settings, self.identity, connection=self._server_connection)
        facts_dir = config.agent.facts_dir
        self.keeper = LeaseKeeper(
            self.settings,
            self.backend,
            holder=self.holder,
            consumer=uuid,
            clock=self.clock,
            fence=self._fence,
            on_change=self._write_status,
            swapper=IdentitySwapper(self.identity, self.entitlements, ca_cert=config.server.ca_cert,
                                    local_virt_uuid=lambda: collect_facts(facts_dir).get("virt.uuid"),
                                    connection=self._server_connection),
            request_timeout=config.server.timeout,
            generation=generation,
            deadline=deadline,
        )

    # -- construction -----------------------------------------------------------------------

    def _ladder(self, runner: Runner | None, systemctl: str | None) -> FenceLadder:
        s = self.settings
        return FenceLadder(
            command=s.fence_command,
            units=s.fence_units,
            signal_spec=parse_signal_spec(s.fence_signal) if s.fence_signal else None,
            step_timeout=s.fence_timeout,
            runner=runner or run_bounded,
            systemctl=systemctl or "systemctl",
        )

    def _server_connection(self) -> Connection:
        """The connection to ``[server]`` as this identity (on the light transport unless a proxy is
        set), made on first use: the server backend's, and the one a failover is followed on."""
        if self._connection is None:
            self._connection = server_connection(self.config, cert_file=self.identity.cert_path,
                                                 key_file=self.identity.key_path, retries=0, light=True)
        return self._connection

    def close(self) -> None:
        """Close the connections."""
        self.backend.close()
        if self._connection is not None:
            self._connection.close()

    def _carried_over(self, uuid: str) -> tuple[int | None, float | None]:
        """Generation and deadline of an earlier ``--once`` run of this holder, if still valid.

        Only for the same identity: after a failover applied by another command (which claimed the
        successor's lease as this holder), the recorded generation belongs to the predecessor.
        """
        data = read_status(self.settings.status_file) or {}
        if data.get("consumer") != uuid or self.settings.backend == "sanlock":
            # A sanlock lease belongs to the process that acquired it: nothing to carry over.
            return None, None
        state = data.get("observed") if data.get("state") == LeaseState.DISABLED else data.get("state")
        if (data.get("boot_id") == self.boot_id and self.boot_id is not None and state in ("HELD", "DEGRADED")
                and isinstance(data.get("generation"), int) and isinstance(data.get("deadline"), (int, float))
                and data.get("clock") == getattr(self.clock, "name", None)):
            return int(data["generation"]), float(data["deadline"])
        return None, None

    # -- status, fencing, watchdog ----------------------------------------------------------

    def _write_status(self, keeper: LeaseKeeper, durable: bool) -> None:
        data = keeper.snapshot()
        data.update({
            "pid": os.getpid(),
            "mode": self.mode,
            "boot_id": self.boot_id,
            "clock": getattr(self.clock, "name", None),
            "updated": datetime.datetime.fromtimestamp(self.clock.wall(), datetime.timezone.utc).isoformat(),
            "backend": self.backend.name,
        })
        timing = getattr(self.backend, "timing", None)
        if timing is not None:
            data["backend_timing"] = timing.as_dict()
        write_status(self.settings.status_file, data, durable=durable)
        if durable:
            self.notifier.notify(f"STATUS=lease {data['state']} generation {data['generation']}")
        if self.config.agent.metrics_file is not None:
            self._write_metrics(data)

    def _write_metrics(self, data: Mapping[str, Any]) -> None:
        """``[agent] metrics_file``: the lease for Prometheus (see :mod:`ftagent.metrics`)."""
        # Only with a metrics file: prometheus_client would add about 25 ms and 3 MB to every heartbeat.
        from prometheus_client import Counter, Gauge

        from ftagent.metrics import MetricsFile

        assert self.config.agent.metrics_file is not None
        mf = MetricsFile(self.config.agent.metrics_file, ("ftagent_lease_",))
        with mf.update() as registry:
            state = Gauge("ftagent_lease_state", "1 for the heartbeat's current lease state.", ["state"],
                          registry=registry)
            for value in LeaseState:
                if value != LeaseState.STALE:
                    state.labels(value.value).set(1 if data["state"] == value.value else 0)
            if data.get("generation") is not None:
                Gauge("ftagent_lease_generation", "The lease generation (fencing token) last granted.",
                      registry=registry).set(data["generation"])
            if data.get("deadline_in") is not None:
                Gauge("ftagent_lease_seconds_since_renewal",
                      "Seconds since the last successful renewal was sent.", registry=registry).set(
                    max(0.0, self.settings.lifetime - float(data["deadline_in"])))
            Gauge("ftagent_lease_updated_timestamp_seconds",
                  "When the heartbeat last wrote these metrics (stale if it died).", registry=registry).set(
                self.clock.wall())
            new = self.fence_count - self._fences_written
            Counter("ftagent_lease_fences", "Times this guest fenced.", registry=registry).inc(
                mf.previous("ftagent_lease_fences_total") + new)
            self._fences_written = self.fence_count

    def _fence(self, reason: str) -> FenceReport:
        self.fence_count += 1
        self.notifier.notify(f"STATUS=FENCING: {reason}")
        try:
            return self.ladder.fence(reason, holder_fingerprint=self.keeper.fingerprint,
                                     generation=self.keeper.generation)
        finally:
            # Once the ladder ran, a lease bound to this process (sanlock) is given up, so that its
            # daemon does not escalate to SIGKILL (which would let Restart= undo the fence).
            self.backend.close()

    def _pet(self) -> None:
        state = self.keeper.observed
        if not self.keeper.enabled:
            ok = state not in (LeaseState.RELEASING, LeaseState.RELEASED)
        elif state == LeaseState.ACQUIRING:
            ok = True
        else:
            ok = self.keeper.holds()
        if ok:
            self.notifier.notify("WATCHDOG=1")

    def _on_lost_signal(self, signum: int, _frame: Any) -> None:
        self.lost = f"signal {signal.Signals(signum).name}: the {self.backend.name} backend reports the lease lost"

    def _check_lost(self) -> None:
        reason, self.lost = self.lost, None
        if reason is None:
            return
        if self.keeper.observed in (LeaseState.HELD, LeaseState.DEGRADED):
            self.keeper.fence_now(reason)
            if not self.keeper.enabled:
                self.backend.close()  # kill switch: give the lease up anyway and start over as a candidate
        else:
            logger.warning("%s, but this instance does not hold it (%s)", reason, self.keeper.observed.value)

    def _guard(self, stopper: Stopper) -> None:
        while not stopper.is_set():
            try:
                self._check_lost()
                self.keeper.check_deadline()
                self._pet()
            except Exception:  # the guard must outlive any bug in a rung or a status write
                logger.exception("lease guard")
            remaining = self.keeper.remaining()
            period = GUARD_PERIOD if remaining is None else min(GUARD_PERIOD, max(0.01, remaining))
            if stopper.wait(period):
                return

    # -- running ----------------------------------------------------------------------------

    def once(self) -> int:
        """One acquisition or renewal; 0 if this instance holds the lease afterwards, else 3."""
        try:
            self.keeper.step()
            if self.keeper.holds():
                return EXIT_HOLDER
            if self.keeper.observed == LeaseState.ACQUIRING and self.keeper.failures and self.keeper.held_by is None:
                raise ConnectionFailed(f"could not reach the server to claim the lease: {self.keeper.reason}")
            return EXIT_NOT_HOLDER
        finally:
            self.close()

    def _check_watchdog(self, env: Mapping[str, str] | None = None) -> float | None:
        """Warn when systemd's watchdog would let a hung agent outlive its lease deadline."""
        timeout = watchdog_interval(env)
        if timeout is not None and timeout > self.settings.margin:
            # The agent pets the watchdog until ttl - margin; a hang is only caught in time if
            # the service manager acts within the margin.
            logger.warning("WatchdogSec (%g s) is longer than the lease margin (%g s): a hung agent could "
                           "outlive its lease; set WatchdogSec to at most the margin", timeout, self.settings.margin)
        return timeout

    def run(self, stopper: Stopper | None = None) -> int:
        """The daemon: renew until SIGTERM/SIGINT (or ``stopper``); release on a clean stop."""
        own = stopper is None
        stop = stopper if stopper is not None else Stopper()
        previous: dict[int, Any] = {}
        if own and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, lambda n, _f: stop.request(n))
            previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._on_lost_signal)
        if not self.keeper.enabled:
            logger.warning("lease kill switch on ([lease] enabled = false): observing only, never fencing")
            self.keeper._changed(True)
        logger.info("lease heartbeat as holder %s for consumer %s (%s backend): renew every %g s, ttl %g s, "
                    "margin %g s", self.keeper.fingerprint, self.keeper.consumer, self.backend.name,
                    self.settings.renew_interval, self.backend.ttl, self.settings.margin)
        self._check_watchdog()
        guard = threading.Thread(target=self._guard, args=(stop,), name="lease-guard", daemon=True)
        try:
            self.keeper.step()
            self.notifier.notify("READY=1")
            guard.start()
            while not stop.is_set():
                if self.keeper.observed in (LeaseState.FENCING, LeaseState.FENCED):
                    stop.wait(None)  # terminal until an operator restarts the agent
                    break
                if stop.wait(self.keeper.next_step_in()):
                    break
                self.keeper.step()
            self.notifier.notify("STOPPING=1")
            final = self.keeper.release()
        finally:
            stop.request()
            if guard.is_alive():
                guard.join(timeout=5)
            for number, handler in previous.items():
                signal.signal(number, handler)
            self.close()
            self.notifier.close()
            if own:
                stop.close()
        if stop.signal is not None:
            logger.info("stopped by signal %d", stop.signal)
        return EXIT_NOT_HOLDER if final in (LeaseState.FENCED, LeaseState.FENCING) else EXIT_HOLDER
