"""The successor-lease claim for one-shot commands (`ftagent checkin` and the others).

When a guest uses the FT lease (a `[lease]` section), a failover may only be applied by the instance
that wins the successor's lease, so that two instances holding the same old identity never both
become the successor. The heartbeat daemon does this on its own renewals. A one-shot command that
meets the failover answer first decides by what the status file says of the daemon
(:class:`CommandLeaseClaim`):

- a running daemon on a backend whose lease belongs to the FT group (etcd, sanlock): the successor
  may be taken on at once if, and only if, that daemon holds the lease now;
- a running daemon on a backend whose lease follows the identity (the server): the daemon gets the
  failover answer at its next renewal and applies it; the command waits for the identity to change
  (at most one renewal period and margin);
- no daemon running: the command claims the successor's lease itself as this instance's holder (the
  id kept beside the status file) and records it in the status file.

A refusal means another instance is live: the swap is refused and nothing changes on disk; fencing
stays the daemon's job.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ftagent.errors import FailoverError, FtagentError
from ftagent.lease.backend import Grant, LeaseRefused
from ftagent.lease.backends import backend_spec, open_backend
from ftagent.lease.clock import SystemClock, boot_id
from ftagent.lease.settings import LeaseSettings, parse_lease_settings
from ftagent.lease.states import LeaseLost, LeaseState
from ftagent.lease.status import (
    holder_fingerprint,
    load_or_create_holder,
    read_status,
    shown_holder,
    status_summary,
    write_status,
)
from ftagent.rhsmidentity import identity_store

if TYPE_CHECKING:
    from ftagent.config import Config

__all__ = ["CommandLeaseClaim", "command_lease_claim"]

logger = logging.getLogger(__name__)


class CommandLeaseClaim:
    """A one-shot command's :data:`~ftagent.failover.LeaseClaim` (see the module's docstring)."""

    def __init__(self, config: Config, settings: LeaseSettings, *, sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.settings = settings
        self.identity = identity_store(config)
        self.sleep = sleep
        self.monotonic = monotonic

    def __call__(self, from_uuid: str, to_uuid: str, consumer: Mapping[str, Any]) -> None:
        summary = status_summary(self.settings)
        if not summary.get("running"):
            self._claim(from_uuid, to_uuid, consumer)
        elif backend_spec(self.settings.backend).follows_identity:
            self._wait_for_daemon(from_uuid, to_uuid)
        else:
            self._daemon_holds(summary, from_uuid, to_uuid)

    def _daemon_holds(self, summary: Mapping[str, Any], from_uuid: str, to_uuid: str) -> None:
        """The lease belongs to the FT group and the running daemon keeps it whatever the identity."""
        state = summary.get("observed") if summary.get("state") == LeaseState.DISABLED.value else summary.get("state")
        left = summary.get("deadline_in")
        if state in (LeaseState.HELD.value, LeaseState.DEGRADED.value) and isinstance(left, (int, float)) and left > 0:
            logger.info("failover %s -> %s: the heartbeat agent holds the FT group's lease (%s backend)",
                        from_uuid, to_uuid, self.settings.backend)
            return
        raise LeaseLost(f"failover to {to_uuid} refused: this instance does not hold the FT group's lease "
                        f"(heartbeat state {state}, held by {summary.get('held_by')})",
                        holder=summary.get("held_by"), from_uuid=from_uuid, to_uuid=to_uuid)

    def _wait_for_daemon(self, from_uuid: str, to_uuid: str) -> None:
        """The daemon renews every renew_interval; the failover answer reaches it then, and it claims and swaps."""
        deadline = self.monotonic() + self.settings.renew_interval + self.settings.margin
        logger.info("failover %s -> %s: the heartbeat agent applies it; waiting", from_uuid, to_uuid)
        while self.monotonic() < deadline:
            state = status_summary(self.settings).get("state")
            if state in (LeaseState.FENCING.value, LeaseState.FENCED.value):
                raise LeaseLost(f"failover to {to_uuid} refused: the heartbeat agent fenced this instance",
                                from_uuid=from_uuid, to_uuid=to_uuid)
            try:
                if self.identity.load().uuid == to_uuid:
                    return
            except FtagentError:
                pass  # mid-swap: look again
            self.sleep(0.1)
        raise FailoverError(f"the heartbeat agent did not apply the failover to {to_uuid} in time; "
                            "run the command again", from_uuid=from_uuid, to_uuid=to_uuid)

    def _claim(self, from_uuid: str, to_uuid: str, consumer: Mapping[str, Any]) -> None:
        """No daemon: claim the successor's lease as this instance's holder, and say so in the status file."""
        holder = load_or_create_holder(self.settings.status_file)
        logger.warning("failover %s -> %s: claiming the successor's lease as holder %s", from_uuid, to_uuid,
                       holder_fingerprint(holder))
        clock = SystemClock()
        sent = clock.now()
        try:
            backend = open_backend(self.config, self.settings, self.identity)
            with contextlib.closing(backend):
                granted = backend.handover({**consumer, "uuid": to_uuid}, holder, None, self.config.server.timeout)
        except LeaseRefused as exc:
            shown = shown_holder(exc.holder, holder)
            why = (f"the successor's lease is held by {shown}; another instance is live, so" if shown is not None
                   else f"the {self.settings.backend} backend refused the claim ({exc}), so")
            raise LeaseLost(
                f"failover to {to_uuid} refused: {why} this instance keeps its old identity (the heartbeat agent "
                "fences it)", holder=shown, generation=exc.generation, from_uuid=from_uuid, to_uuid=to_uuid) from exc
        except FtagentError as exc:
            raise FailoverError(f"could not claim the successor's lease: {exc}", from_uuid=from_uuid,
                                to_uuid=to_uuid) from exc
        self._record(granted, holder, to_uuid, sent + backend.ttl - self.settings.margin, clock)

    def _record(self, granted: Grant, holder: str, to_uuid: str, deadline: float, clock: SystemClock) -> None:
        """Keep the status file true: this holder now holds the successor's lease (see `ftagent status`)."""
        data = read_status(self.settings.status_file) or {}
        data.pop("holder", None)  # written by an earlier version: the id itself, which the file must not show
        data.update({"state": LeaseState.HELD.value, "holder_fingerprint": holder_fingerprint(holder),
                     "held_by": shown_holder(granted.holder or holder, holder),
                     "generation": granted.generation, "consumer": to_uuid, "deadline": deadline,
                     "boot_id": boot_id(), "clock": clock.name, "mode": "once",
                     "reason": f"failover claim of {to_uuid} by a command"})
        try:
            write_status(self.settings.status_file, data, durable=True)
        except OSError as exc:
            logger.error("cannot write the lease status: %s", exc)


def command_lease_claim(config: Config, *, sleep: Callable[[float], None] = time.sleep,
                        monotonic: Callable[[], float] = time.monotonic) -> CommandLeaseClaim | None:
    """The ``lease_claim`` hook for a command, or ``None`` when this guest does not use the lease."""
    if not config.lease:
        return None
    return CommandLeaseClaim(config, parse_lease_settings(config), sleep=sleep, monotonic=monotonic)
