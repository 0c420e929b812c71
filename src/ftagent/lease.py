"""The FT group lease on the agent side: settings, state machine, holder id and status file.

States (after CloudStack's Host HA and sanlock)::

    DISABLED                       kill switch (``enabled = false``): observe and report only
    ACQUIRING -> HELD <-> DEGRADED  renewals failing, still before the deadline
    HELD|DEGRADED -> FENCING -> FENCED   lost (409), or past the deadline; FENCED is terminal
    HELD|DEGRADED -> RELEASING -> RELEASED   clean stop

The deadline is ``send time of the last successful renewal + ttl - margin`` on the clock of
:mod:`ftagent.clock` (``CLOCK_BOOTTIME``).  The server's lease runs at least ``ttl`` from the moment
it received that renewal, which is after we sent it, so we stop acting as the holder at least
``margin`` seconds before the server could grant the lease to anyone else.

With the kill switch on, the same protocol runs (claims, renewals, release), but where an enabled
agent would fence this one logs what it would have done and goes on; the reported state is
``DISABLED`` and ``observed`` holds the state the enabled machine would be in.

This module imports only the standard library (plus ftagent's errors and atomic writes), so
``ftagent status`` can read the status file cheaply.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ftagent.clock import Clock, SystemClock, boot_id
from ftagent.errors import ConfigError, Conflict, FailoverError, FtagentError

if TYPE_CHECKING:
    from ftagent.config import Config
    from ftagent.fencing import FenceReport

__all__ = [
    "DEFAULT_STATUS_FILE",
    "LeaseKeeper",
    "LeaseLost",
    "LeaseSettings",
    "LeaseState",
    "LeaseTransport",
    "holder_path",
    "load_or_create_holder",
    "parse_lease_settings",
    "read_status",
    "status_summary",
    "write_status",
]

logger = logging.getLogger(__name__)

DEFAULT_STATUS_FILE = Path("/var/lib/ftagent/lease.json")
MAX_TTL = 3600.0


class LeaseState(enum.StrEnum):
    """The heartbeat's states."""

    DISABLED = "DISABLED"
    ACQUIRING = "ACQUIRING"
    HELD = "HELD"
    DEGRADED = "DEGRADED"
    FENCING = "FENCING"
    FENCED = "FENCED"
    RELEASING = "RELEASING"
    RELEASED = "RELEASED"


_HOLDING = frozenset({LeaseState.HELD, LeaseState.DEGRADED})
_DONE = frozenset({LeaseState.FENCING, LeaseState.FENCED, LeaseState.RELEASING, LeaseState.RELEASED})


class LeaseLost(FailoverError):
    """Another instance holds the lease (409): this instance must not act as the holder.

    Raised by the failover claim hook so that no identity is swapped.
    """

    def __init__(self, message: str, *, holder: str | None = None, generation: int | None = None,
                 from_uuid: str | None = None, to_uuid: str | None = None) -> None:
        super().__init__(message, from_uuid=from_uuid, to_uuid=to_uuid)
        self.holder = holder
        self.generation = generation


# -- settings ------------------------------------------------------------------------------------

_KEYS = {
    "enabled", "renew_interval", "ttl", "margin", "fence_command", "fence_units", "fence_signal",
    "fence_timeout", "status_file",
}


@dataclass(frozen=True)
class LeaseSettings:
    """``[lease]``, validated.  Defaults follow sanlock's ratios (renew every ttl/4, fence at 3/4)."""

    enabled: bool = True
    renew_interval: float = 5.0
    ttl: float = 20.0
    margin: float = 5.0
    fence_command: str | None = None
    fence_units: tuple[str, ...] = ()
    fence_signal: str | None = None
    fence_timeout: float = 2.0
    status_file: Path = DEFAULT_STATUS_FILE

    @property
    def lifetime(self) -> float:
        """Seconds from a renewal's send time to the local deadline (``ttl - margin``)."""
        return self.ttl - self.margin


def _number(raw: Mapping[str, str], key: str, default: float, err: Callable[[str, str], ConfigError]) -> float:
    value = raw.get(key, "").strip()
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise err(key, f"invalid number {value!r}") from None
    if not number > 0 or number != number or number == float("inf"):
        raise err(key, f"invalid value {value!r}: must be a positive number of seconds")
    return number


def parse_lease_settings(config: Config | None = None, raw: Mapping[str, str] | None = None,
                         *, file: str | None = None, base: Path | None = None) -> LeaseSettings:
    """Validate ``[lease]`` of ``config`` (or a raw mapping); errors name file, section and key."""
    if raw is None:
        raw = config.lease if config is not None else {}
    if config is not None and config.path is not None:
        file = file or str(config.path)
        base = base or config.path.resolve().parent
    where = file or "the configuration"

    def err(key: str, message: str) -> ConfigError:
        return ConfigError(message, file=where, section="lease", key=key)

    for key in raw:
        if key not in _KEYS:
            logger.warning("%s: [lease] unknown key %s ignored", where, key)
    enabled_raw = raw.get("enabled", "yes").strip().lower()
    if enabled_raw in ("1", "yes", "true", "on"):
        enabled = True
    elif enabled_raw in ("0", "no", "false", "off"):
        enabled = False
    else:
        raise err("enabled", f"invalid boolean {raw.get('enabled')!r} (use yes/no, true/false, 1/0)")
    defaults = LeaseSettings()
    renew = _number(raw, "renew_interval", defaults.renew_interval, err)
    ttl = _number(raw, "ttl", defaults.ttl, err)
    margin = _number(raw, "margin", defaults.margin, err)
    fence_timeout = _number(raw, "fence_timeout", defaults.fence_timeout, err)
    if not 1 <= ttl <= MAX_TTL:
        raise err("ttl", f"ttl {ttl:g} out of range: the server accepts 1 to {MAX_TTL:g} seconds")
    if margin >= ttl - renew:
        raise err("margin", f"margin {margin:g} must be below ttl - renew_interval ({ttl - renew:g}), "
                            "or no renewal could ever land before the deadline")
    if 2 * renew > ttl - margin:
        raise err("renew_interval", f"renew_interval {renew:g} is too long for ttl {ttl:g} and margin "
                                    f"{margin:g}: at least two renewals must fit before the deadline "
                                    f"(renew_interval <= (ttl - margin) / 2 = {(ttl - margin) / 2:g})")
    if fence_timeout > margin:
        logger.warning("%s: [lease] fence_timeout %g exceeds margin %g: a slow fence hook may still run "
                       "when the server can grant the lease to another instance", where, fence_timeout, margin)
    command = raw.get("fence_command", "").strip() or None
    if command is not None:
        import shlex

        try:
            if not shlex.split(command):
                command = None
        except ValueError as exc:
            raise err("fence_command", f"cannot split command: {exc}") from None
    units = tuple(u for u in raw.get("fence_units", "").replace(",", " ").split() if u)
    signal_text = raw.get("fence_signal", "").strip() or None
    if signal_text is not None:
        from ftagent.fencing import parse_signal_spec

        try:
            parse_signal_spec(signal_text)
        except ValueError as exc:
            raise err("fence_signal", str(exc)) from None
    status_raw = raw.get("status_file", "").strip()
    status = defaults.status_file
    if status_raw:
        status = Path(os.path.expandvars(os.path.expanduser(status_raw)))
        if not status.is_absolute():
            status = (base or Path.cwd()) / status
    return LeaseSettings(enabled=enabled, renew_interval=renew, ttl=ttl, margin=margin,
                         fence_command=command, fence_units=units, fence_signal=signal_text,
                         fence_timeout=fence_timeout, status_file=status)


# -- holder id and status file -------------------------------------------------------------------

def holder_path(status_file: Path) -> Path:
    """Where the holder id is kept: beside the status file (``lease.json`` -> ``lease.holder``)."""
    return status_file.with_suffix(".holder") if status_file.suffix else status_file.with_name(
        status_file.name + ".holder")


def load_or_create_holder(status_file: Path) -> str:
    """This instance's holder id, created once (race-free) and reused by every later run."""
    path = holder_path(status_file)
    with contextlib.suppress(FileNotFoundError):
        value = path.read_text().strip()
        if value:
            return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = f"{socket.gethostname()[:64]}:{secrets.token_hex(8)}"
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    from ftagent.atomic import fsync_dir

    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, (value + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another run created it first: theirs wins
        fsync_dir(path.parent)
    except FileExistsError:
        value = path.read_text().strip() or value
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return value


def write_status(path: Path, data: Mapping[str, Any], *, durable: bool) -> None:
    """Replace the status file atomically (and durably on state changes)."""
    payload = (json.dumps(data, sort_keys=True, indent=1) + "\n").encode()
    if durable:
        from ftagent.atomic import write_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, payload, mode=0o644)
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(payload)
    os.replace(tmp, path)


def read_status(path: Path) -> dict[str, Any] | None:
    """The status file's content, or ``None`` when there is none (or it is unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status_summary(settings: LeaseSettings, clock: Clock | None = None) -> dict[str, Any]:
    """The ``lease`` object of ``ftagent status --json``: state, generation, holder and more.

    ``holder`` is this instance's holder id, ``held_by`` the holder the server last reported,
    ``deadline_in`` the seconds left before this instance fences (recomputed now, same boot only),
    ``running`` whether the heartbeat process that wrote the file is alive.
    """
    data = read_status(settings.status_file)
    holder: str | None = None
    with contextlib.suppress(OSError):
        holder = holder_path(settings.status_file).read_text().strip() or None
    if data is None:
        return {"state": LeaseState.DISABLED.value if not settings.enabled else None, "generation": None,
                "holder": holder, "held_by": None, "running": False, "enabled": settings.enabled,
                "status_file": str(settings.status_file)}
    out = {key: data.get(key) for key in (
        "state", "observed", "generation", "holder", "held_by", "consumer", "renewals", "reason", "updated",
        "enabled", "mode")}
    out["status_file"] = str(settings.status_file)
    same_boot = data.get("boot_id") is not None and data.get("boot_id") == boot_id()
    deadline = data.get("deadline")
    clk = clock or SystemClock()
    if same_boot and isinstance(deadline, int | float):
        out["deadline_in"] = round(deadline - clk.now(), 3)
    else:
        out["deadline_in"] = None
    out["running"] = same_boot and data.get("mode") == "daemon" and _pid_alive(data.get("pid"))
    if data.get("fence"):
        out["fence"] = data["fence"]
    return out


# -- the transport the state machine talks through -----------------------------------------------

class LeaseTransport(Protocol):
    """The lease calls; :mod:`ftagent.heartbeat` implements them over HTTPS."""

    def claim(self, consumer: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """``POST /consumers/{consumer}/lease`` with ``body`` (which may be updated during a failover)."""
        ...

    def claim_successor(self, successor: Mapping[str, Any], body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """The same, authenticated as the successor consumer (its certificate, the local key)."""
        ...

    def release(self, consumer: str, holder: str, timeout: float) -> None:
        """``DELETE /consumers/{consumer}/lease?holder=...``."""
        ...


Fencer = Callable[[str], "FenceReport | None"]


@dataclass
class _Snapshot:
    state: LeaseState
    observed: LeaseState | None
    generation: int | None
    deadline: float | None
    held_by: str | None
    consumer: str
    renewals: int
    reason: str | None
    fence: dict[str, Any] | None = field(default=None)


class LeaseKeeper:
    """The state machine.  Thread-safe: the heartbeat loop calls :meth:`step`, a guard thread
    calls :meth:`check_deadline`, and the connection's failover handler calls :meth:`claim_successor`.

    ``fence(reason)`` runs the fencing ladder; ``on_change(keeper, durable)`` persists the status.
    Network I/O is never done while holding the lock.
    """

    def __init__(
        self,
        settings: LeaseSettings,
        transport: LeaseTransport,
        *,
        holder: str,
        consumer: str,
        clock: Clock,
        fence: Fencer,
        on_change: Callable[[LeaseKeeper, bool], None] | None = None,
        request_timeout: float = 30.0,
        generation: int | None = None,
        deadline: float | None = None,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.holder = holder
        self.consumer = consumer
        self.clock = clock
        self._fence = fence
        self._on_change = on_change
        self.request_timeout = request_timeout
        self.enabled = settings.enabled
        self._lock = threading.RLock()
        self._state = LeaseState.ACQUIRING
        self.generation: int | None = None
        self.deadline: float | None = None
        self.held_by: str | None = None
        self.renewals = 0
        self.failures = 0
        self.reason: str | None = None
        self.fence_report: dict[str, Any] | None = None
        self.suppressed: list[str] = []
        self._pending: dict[str, Any] | None = None
        self._handover_generation: int | None = None
        if generation is not None and deadline is not None and deadline > clock.now():
            # Carried over from an earlier run (``--once``): still ours until the deadline.
            self._state, self.generation, self.deadline, self.held_by = LeaseState.HELD, generation, deadline, holder

    # -- views ------------------------------------------------------------------------------

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
            return (self._state in _HOLDING and self.deadline is not None and self.clock.now() < self.deadline)

    def remaining(self) -> float | None:
        """Seconds to the deadline (``None`` when not holding)."""
        with self._lock:
            if self._state not in _HOLDING or self.deadline is None:
                return None
            return self.deadline - self.clock.now()

    def snapshot(self) -> dict[str, Any]:
        """The status-file view (``deadline`` on the clock of :mod:`ftagent.clock`)."""
        with self._lock:
            now = self.clock.now()
            return {
                "state": self.state.value,
                "observed": self._state.value if not self.enabled else None,
                "enabled": self.enabled,
                "holder": self.holder,
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
                "ttl": self.settings.ttl,
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
                       reason, self.holder, self.generation)
            self._changed(True)

    def fence_now(self, reason: str) -> bool:
        """Stop acting as the holder: run the ladder once; ``False`` if already fencing/done."""
        with self._lock:
            if self._state in _DONE:
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
            if self._state not in _HOLDING or self.deadline is None or self.clock.now() < self.deadline:
                return False
            late = self.clock.now() - self.deadline
        return self.fence_now(f"lease deadline passed {late:.2f} s ago without a successful renewal")

    def _timeout(self, now: float) -> float:
        """Per-request timeout: connect and read each get half of what is left before the deadline."""
        timeout = self.request_timeout
        if self._state in _HOLDING and self.deadline is not None:
            timeout = min(timeout, (self.deadline - now) / 2)
        else:
            timeout = min(timeout, self.settings.lifetime / 2)
        return max(0.05, timeout)

    def step(self) -> LeaseState:
        """One acquisition or renewal attempt; returns the reported state afterwards."""
        with self._lock:
            if self._state in _DONE:
                return self.state
            now = self.clock.now()
            expired = self._state in _HOLDING and self.deadline is not None and now >= self.deadline
            holding = self._state in _HOLDING
            body: dict[str, Any] = {"holder": self.holder, "generation": self.generation if holding else None,
                                    "ttl": self.settings.ttl}
            if not expired:
                self._pending = body
                self._handover_generation = None
            consumer = self.consumer
            timeout = self._timeout(now)
        if expired:
            self.check_deadline()
            return self.state
        try:
            info = self.transport.claim(consumer, body, timeout)
        except LeaseLost as exc:
            self.fence_now(str(exc))
        except Conflict as exc:
            self._on_conflict(exc, holding)
        except FtagentError as exc:
            self._on_failure(exc)
        else:
            self._on_granted(info, now, holding)
        finally:
            with self._lock:
                self._pending = None
        return self.state

    def _on_granted(self, info: Mapping[str, Any], sent: float, was_holding: bool) -> None:
        with self._lock:
            if self._state in _DONE:
                return
            generation = info.get("generation")
            holder = info.get("holder")
            new_deadline = sent + self.settings.lifetime
            if self.deadline is not None and self._handover_generation is not None:
                new_deadline = max(new_deadline, self.deadline)
            self.held_by = holder if isinstance(holder, str) else None
            if holder != self.holder or not isinstance(generation, int):
                reason = f"the server granted the lease to {holder!r}, not to us"
            elif was_holding and self._state in _HOLDING and generation != self.generation:
                reason = f"the lease generation changed from {self.generation} to {generation} unexpectedly"
            elif self.clock.now() >= new_deadline:
                if not (was_holding or self._state in _HOLDING):
                    self.failures += 1
                    logger.warning("lease granted too late to use (answer after the deadline); trying again")
                    return
                reason = "the renewal was answered after the deadline"
            else:
                reason = ""
            if not reason:
                self.generation = generation
                self.deadline = new_deadline
                self.consumer = str(info.get("consumer") or self.consumer)
                self.renewals += 1
                self.failures = 0
                if self._state != LeaseState.HELD:
                    self._enter(LeaseState.HELD, "acquired" if not was_holding else "renewed")
                else:
                    self._changed(False)
                return
        self.fence_now(reason)

    def _on_conflict(self, exc: Conflict, was_holding: bool) -> None:
        body = exc.body if isinstance(exc.body, dict) else {}
        holder = body.get("holder") if isinstance(body.get("holder"), str) else None
        generation = body.get("generation") if isinstance(body.get("generation"), int) else None
        with self._lock:
            if self._state in _DONE:
                return
            self.held_by = holder
            if (self._handover_generation is not None and holder == self.holder
                    and generation == self._handover_generation and not body.get("expired")):
                # The connection retried our renewal after a failover with the old token: the
                # handover claim already renewed the lease, so this refusal is our own doing.
                self.renewals += 1
                self._changed(False)
                return
            if not (was_holding or self._state in _HOLDING):
                self.failures = 0
                self.reason = f"held by {holder} (generation {generation})"
                logger.info("lease held by %s (generation %s); waiting", holder, generation)
                self._changed(False)
                return
        self.fence_now(f"lease lost: {exc.display_message or exc} (holder {holder}, generation {generation})")

    def _on_failure(self, exc: FtagentError) -> None:
        with self._lock:
            if self._state in _DONE:
                return
            self.failures += 1
            if self._state in _HOLDING:
                if self._state == LeaseState.HELD:
                    self._enter(LeaseState.DEGRADED, f"renewal failed: {exc}")
                else:
                    logger.warning("lease renewal failed again (%d): %s", self.failures, exc)
                    self._changed(False)
            else:
                logger.warning("lease acquisition failed: %s", exc)
                self.reason = f"acquisition failed: {exc}"
                self._changed(False)

    def claim_successor(self, from_uuid: str, to_uuid: str, consumer: Mapping[str, Any]) -> None:
        """The ``lease_claim`` hook of :class:`ftagent.failover.IdentitySwapper`.

        Claims the successor's lease as the same holder (a handover on the server) before the
        identity is swapped.  A 409 means another instance is live: fence and raise
        :class:`LeaseLost` so that nothing is swapped.  Other failures raise too (nothing swapped;
        the next renewal retries).
        """
        with self._lock:
            if self._state in _DONE:
                raise LeaseLost(f"not claiming {to_uuid}: the lease is {self._state.value}",
                                from_uuid=from_uuid, to_uuid=to_uuid)
            now = self.clock.now()
            if self._state in _HOLDING and self.deadline is not None and now >= self.deadline:
                late = True
            else:
                late = False
                holding = self._state in _HOLDING
                body: dict[str, Any] = {"holder": self.holder, "generation": self.generation if holding else None,
                                        "ttl": self.settings.ttl}
                timeout = self._timeout(now)
        if late:
            self.check_deadline()
            raise LeaseLost(f"not claiming {to_uuid}: the lease deadline has passed", from_uuid=from_uuid,
                            to_uuid=to_uuid)
        dto = dict(consumer)
        dto.setdefault("uuid", to_uuid)
        logger.warning("failover %s -> %s: claiming the successor's lease as %s (generation %s)", from_uuid,
                       to_uuid, self.holder, body["generation"])
        try:
            info = self.transport.claim_successor(dto, body, timeout)
        except Conflict as exc:
            info_body = exc.body if isinstance(exc.body, dict) else {}
            holder, generation = info_body.get("holder"), info_body.get("generation")
            reason = (f"failover claim of {to_uuid} refused: {exc.display_message or exc} "
                      f"(holder {holder}, generation {generation}); another instance is live")
            self.fence_now(reason)
            raise LeaseLost(reason, holder=holder if isinstance(holder, str) else None,
                            generation=generation if isinstance(generation, int) else None,
                            from_uuid=from_uuid, to_uuid=to_uuid) from exc
        except FtagentError as exc:
            raise FailoverError(f"failover claim of the successor's lease failed: {exc}", from_uuid=from_uuid,
                                to_uuid=to_uuid) from exc
        generation = info.get("generation")
        with self._lock:
            if self._state in _DONE:
                raise LeaseLost(f"lease {self._state.value} during the failover claim", from_uuid=from_uuid,
                                to_uuid=to_uuid)
            if info.get("holder") != self.holder or not isinstance(generation, int):
                reason = f"failover claim of {to_uuid} answered for holder {info.get('holder')!r}"
            elif self.clock.now() >= now + self.settings.lifetime:
                reason = "the failover claim was answered after the deadline"
            else:
                reason = ""
            if not reason:
                self.generation = generation
                self.deadline = max(now + self.settings.lifetime, self.deadline or 0.0)
                self.consumer = to_uuid
                self.held_by = self.holder
                self.renewals += 1
                self._handover_generation = generation
                if self._pending is not None:
                    self._pending["generation"] = generation  # the connection retries with this body
                self._enter(LeaseState.HELD, f"handover to successor {to_uuid} (generation {generation})")
                return
        self.fence_now(reason)
        raise LeaseLost(reason, from_uuid=from_uuid, to_uuid=to_uuid)

    def release(self) -> LeaseState:
        """Clean stop: release the lease if held; returns the final reported state."""
        with self._lock:
            if self._state in (LeaseState.FENCING, LeaseState.FENCED, LeaseState.RELEASED):
                return self.state
            holding = self._state in _HOLDING
            consumer = self.consumer
            remaining = None if self.deadline is None else self.deadline - self.clock.now()
            self._enter(LeaseState.RELEASING, "stopping")
        if holding:
            timeout = min(self.request_timeout, 5.0)
            if remaining is not None and remaining > 0.1:
                timeout = min(timeout, remaining / 2)
            try:
                self.transport.release(consumer, self.holder, max(0.05, timeout))
                reason = "released"
            except FtagentError as exc:
                reason = f"release failed ({exc}); the server frees the lease when its ttl runs out"
                logger.warning("lease %s", reason)
        else:
            reason = "stopped without holding the lease"
        with self._lock:
            self.deadline = None
            self.held_by = None if holding else self.held_by
            self._enter(LeaseState.RELEASED, reason)
        return self.state
