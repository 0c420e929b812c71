"""The heartbeat's states, and :class:`LeaseLost` (another instance holds the lease)."""

from __future__ import annotations

import enum

from ftagent.errors import FailoverError

__all__ = ["DONE", "HOLDING", "LeaseLost", "LeaseState"]


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
    #: Never entered by the heartbeat: ``ftagent status``'s verdict on a status file that claims
    #: the lease but is older than its deadline (no heartbeat renews it any more).
    STALE = "STALE"


HOLDING = frozenset({LeaseState.HELD, LeaseState.DEGRADED})
DONE = frozenset({LeaseState.FENCING, LeaseState.FENCED, LeaseState.RELEASING, LeaseState.RELEASED})


class LeaseLost(FailoverError):
    """Another instance holds the lease (409): this instance must not act as the holder.

    Raised by the failover claim hook so that no identity is swapped.
    """

    def __init__(self, message: str, *, holder: str | None = None, generation: int | None = None,
                 from_uuid: str | None = None, to_uuid: str | None = None) -> None:
        super().__init__(message, from_uuid=from_uuid, to_uuid=to_uuid)
        self.holder = holder
        self.generation = generation
