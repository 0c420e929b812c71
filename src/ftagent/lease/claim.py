"""The successor-lease claim for one-shot commands (`ftagent checkin` and the others).

When a guest uses the FT lease (a `[lease]` section), a failover may only be applied by the instance
that wins the successor's lease, so that two instances holding the same old identity never both
become the successor. The heartbeat daemon does this on its own renewals. A one-shot command that
meets the failover answer first either lets a running heartbeat daemon apply it (waiting at most one renewal
period and margin for the identity to change) or, with no daemon running, claims the successor's
lease itself as this instance's holder (the id kept beside the status file). A 409 means another
instance is live: the swap is refused and nothing changes on disk; fencing stays the daemon's job.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ftagent.errors import FailoverError, FtagentError

if TYPE_CHECKING:
    from ftagent.config import Config
    from ftagent.failover import LeaseClaim
    from ftagent.lease.backend import Grant

__all__ = ["command_lease_claim"]

logger = logging.getLogger(__name__)


def command_lease_claim(config: Config, *, sleep: Callable[[float], None] = time.sleep,
                        monotonic: Callable[[], float] = time.monotonic) -> LeaseClaim | None:
    """The ``lease_claim`` hook for a command, or ``None`` when this guest does not use the lease."""
    if not config.lease:
        return None
    from ftagent.identity import IdentityStore
    from ftagent.lease.backend import LeaseRefused
    from ftagent.lease.backends import FOLLOWS_IDENTITY
    from ftagent.lease.settings import parse_lease_settings
    from ftagent.lease.states import LeaseLost, LeaseState
    from ftagent.lease.status import load_or_create_holder, status_summary

    settings = parse_lease_settings(config)
    identity = IdentityStore(config.agent.identity_dir)

    def claim(from_uuid: str, to_uuid: str, consumer: Mapping[str, Any]) -> None:
        summary = status_summary(settings)
        if summary.get("running") and settings.backend not in FOLLOWS_IDENTITY:
            _daemon_holds(summary, from_uuid, to_uuid)
            return
        if summary.get("running"):
            _wait_for_daemon(from_uuid, to_uuid)
            return
        holder = load_or_create_holder(settings.status_file)
        logger.warning("failover %s -> %s: claiming the successor's lease as %s", from_uuid, to_uuid, holder)
        from ftagent.lease.backends import open_backend
        from ftagent.lease.clock import SystemClock

        clock = SystemClock()
        sent = clock.now()
        try:
            backend = open_backend(config, settings, identity)
            with contextlib.closing(backend):
                granted = backend.handover({**consumer, "uuid": to_uuid}, holder, None, config.server.timeout)
        except LeaseRefused as exc:
            raise LeaseLost(
                f"failover to {to_uuid} refused: the successor's lease is held by {exc.holder}; another instance "
                "is live, so this one keeps its old identity (the heartbeat agent fences it)",
                holder=exc.holder, generation=exc.generation, from_uuid=from_uuid, to_uuid=to_uuid) from exc
        except FtagentError as exc:
            raise FailoverError(f"could not claim the successor's lease: {exc}", from_uuid=from_uuid,
                                to_uuid=to_uuid) from exc
        _record(granted, holder, to_uuid, sent + backend.ttl - settings.margin, clock)

    def _record(granted: Grant, holder: str, to_uuid: str, deadline: float, clock: Any) -> None:
        """Keep the status file true: this holder now holds the successor's lease (see `ftagent status`)."""
        from ftagent.lease.clock import boot_id
        from ftagent.lease.status import read_status, write_status

        data = read_status(settings.status_file) or {}
        data.update({"state": LeaseState.HELD.value, "holder": holder, "held_by": granted.holder or holder,
                     "generation": granted.generation, "consumer": to_uuid, "deadline": deadline,
                     "boot_id": boot_id(), "clock": getattr(clock, "name", None), "mode": "once",
                     "reason": f"failover claim of {to_uuid} by a command"})
        try:
            write_status(settings.status_file, data, durable=True)
        except OSError as exc:
            logger.error("cannot write the lease status: %s", exc)

    def _daemon_holds(summary: Mapping[str, Any], from_uuid: str, to_uuid: str) -> None:
        # The lease belongs to the FT group, and the running daemon keeps it whatever the identity:
        # the successor may be taken on at once if, and only if, that daemon holds it now.
        state = summary.get("observed") if summary.get("state") == LeaseState.DISABLED.value else summary.get("state")
        left = summary.get("deadline_in")
        if state in (LeaseState.HELD.value, LeaseState.DEGRADED.value) and isinstance(left, (int, float)) and left > 0:
            logger.info("failover %s -> %s: the heartbeat agent holds the FT group's lease (%s backend)",
                        from_uuid, to_uuid, settings.backend)
            return
        raise LeaseLost(f"failover to {to_uuid} refused: this instance does not hold the FT group's lease "
                        f"(heartbeat state {state}, held by {summary.get('held_by')})",
                        holder=summary.get("held_by"), from_uuid=from_uuid, to_uuid=to_uuid)

    def _wait_for_daemon(from_uuid: str, to_uuid: str) -> None:
        # The daemon renews every renew_interval; the failover answer reaches it then, and it claims and swaps.
        deadline = monotonic() + settings.renew_interval + settings.margin
        logger.info("failover %s -> %s: the heartbeat agent applies it; waiting", from_uuid, to_uuid)
        while monotonic() < deadline:
            state = status_summary(settings).get("state")
            if state in (LeaseState.FENCING.value, LeaseState.FENCED.value):
                raise LeaseLost(f"failover to {to_uuid} refused: the heartbeat agent fenced this instance",
                                from_uuid=from_uuid, to_uuid=to_uuid)
            try:
                if identity.load().uuid == to_uuid:
                    return
            except FtagentError:
                pass  # mid-swap: look again
            sleep(0.1)
        raise FailoverError(f"the heartbeat agent did not apply the failover to {to_uuid} in time; "
                            "run the command again", from_uuid=from_uuid, to_uuid=to_uuid)

    return claim
