"""The heartbeat's states, and :class:`LeaseLost` (another instance holds the lease)."""

from __future__ import annotations

import enum

from ftagent.errors import FailoverError

__all__ = ["DONE", "HOLDING", "LeaseLost", "LeaseState"]


class LeaseState(str, enum.Enum):
    """The heartbeat's states (a ``str`` enum that prints as its value, like 3.11's ``StrEnum``)."""

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

    def __str__(self) -> str:
        return self.value

    # Python 3.12 formats a mixed-in enum with Enum.__str__; keep f-strings printing the value.
    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


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
