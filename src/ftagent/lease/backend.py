"""What the lease state machine needs from a lease backend (:class:`LeaseBackend`), and what a backend
module declares about itself (:class:`BackendSpec`).

The state machine (:mod:`ftagent.lease.keeper`), its timers and the fencing ladder are the same for
every backend; a backend only carries four calls to wherever the lease lives (ftmock's lease API,
an etcd cluster, a sanlock resource on shared storage) and answers each with a :class:`Grant`: who
holds the lease now and its generation, the fencing token that only ever grows.

Every call gets ``timeout``: the seconds it may take in total, already cut by the state machine to
half of what is left before its deadline.  A backend that cannot answer in time raises an
:class:`~ftagent.errors.FtagentError` (a failed call: DEGRADED while holding, retried); one that
gets a definite "no" (someone else holds the lease, the generation is stale, the lease expired)
raises :class:`LeaseRefused`, on which a holder fences at once.

The deadline rule: a grant or renewal *sent* at ``t`` keeps this instance the holder until
``t + ttl - margin``, where :attr:`LeaseBackend.ttl` is the time the backend promises that nobody
else can get the lease after it received the call (or after an earlier moment the backend names in
:attr:`Grant.age`).

Each backend module declares a module-level ``BACKEND``, a :class:`BackendSpec`: its name, its own
``[lease]`` keys and their parser, and how to open it.  :mod:`ftagent.lease.backends` collects them;
:mod:`ftagent.lease.settings` asks it.  Standard library only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol

from ftagent.errors import ConfigError, FtagentError

if TYPE_CHECKING:
    from ftagent.config import Config
    from ftagent.connection import Connection
    from ftagent.identity import IdentityStore
    from ftagent.lease.settings import LeaseSettings

__all__ = ["BackendSpec", "Grant", "LeaseBackend", "LeaseRefused", "Opener", "OptionsParser"]


@dataclass(frozen=True)
class Grant:
    """A backend's "yes": the lease's holder and generation after the call.

    ``consumer`` is the identity the backend keyed the lease on when it says so (the server backend
    echoes the consumer uuid); ``None`` keeps the state machine's current one.

    ``age`` is for a backend whose promise did not start when the call was sent but earlier (sanlock:
    at the daemon's last lockspace renewal): the seconds before its answer at which ``ttl`` started
    to run.  The state machine then counts the deadline from whichever is earlier.
    """

    holder: str | None
    generation: int | None
    consumer: str | None = None
    age: float | None = None


class LeaseRefused(FtagentError):
    """A backend's definite "no": another holder has the lease, or our generation is stale or expired.

    ``holder`` and ``generation`` describe the lease as the backend sees it (``None`` if unknown);
    ``holder`` names another holder in a form fit to show (its fingerprint, or what the backend knows
    it by), never by its holder id. ``expired`` is true when the refusal is because our own lease ran
    out; ``holder_in_use`` when the backend refuses this instance's holder id itself, because another
    consumer holds a lease under it (the server backend).
    """

    def __init__(self, message: str, *, holder: str | None = None, generation: int | None = None,
                 expired: bool = False, holder_in_use: bool = False) -> None:
        super().__init__(message)
        self.holder = holder
        self.generation = generation
        self.expired = expired
        self.holder_in_use = holder_in_use


class LeaseBackend(Protocol):
    """The four lease calls, plus the time the backend promises (see the module's docstring).

    ``consumer`` is this instance's current identity (its consumer uuid), which a failover changes;
    a backend that keys the lease on something else (the FT group's org and ``virt.uuid``) may ignore
    it.  ``holder`` is this instance's holder id (:func:`ftagent.lease.status.load_or_create_holder`).
    """

    @property
    def name(self) -> str:
        """The backend's name in ``[lease] backend``."""
        ...

    @property
    def ttl(self) -> float:
        """Seconds after a call reached the backend during which nobody else can be granted the lease."""
        ...

    def grant(self, consumer: str, holder: str, timeout: float) -> Grant:
        """Acquire the lease if nobody holds it (or ``holder`` already does)."""
        ...

    def renew(self, consumer: str, holder: str, generation: int, timeout: float) -> Grant:
        """Extend the lease held as ``holder`` at ``generation``; a stale generation is refused."""
        ...

    def handover(self, successor: Mapping[str, Any], holder: str, generation: int | None,
                 timeout: float) -> Grant:
        """Claim the lease for a failover's successor identity as the same holder.

        ``successor`` is the successor consumer from the failover answer (``uuid``, ``idCert``).
        Called after the failover answer was validated and before the identity is swapped (by the
        state machine when its own call got the answer, by a command that got it first); the
        identity is swapped only if this succeeds.  It renews the lease: the call that got the
        failover answer is not repeated.
        """
        ...

    def release(self, consumer: str, holder: str, timeout: float) -> None:
        """Give the lease up at once, so another instance can take it without waiting for ``ttl``."""
        ...

    def close(self) -> None:
        """Close connections (the state machine is done with the backend)."""
        ...


#: ``parse(raw, err, base)``: a backend's own ``[lease]`` keys of ``raw``, validated (the result is
#: ``LeaseSettings.backend_options``); ``err(key, message)`` makes the error naming file, section and
#: key; relative paths are relative to ``base``.
OptionsParser = Callable[[Mapping[str, str], Callable[[str, str], ConfigError], Optional[Path]], object]
#: ``open(config, settings, identity, connection)``: the backend, ready for the state machine.
#: ``connection``, when given, makes the connection to ``[server]`` as this identity (the heartbeat's).
Opener = Callable[["Config", "LeaseSettings", "IdentityStore", "Callable[[], Connection] | None"], LeaseBackend]


@dataclass(frozen=True)
class BackendSpec:
    """What a backend module declares about itself (its module-level ``BACKEND``).

    ``keys`` are its own ``[lease]`` keys (besides the shared ones), validated by ``parse``.
    ``follows_identity``: the lease is keyed on the consumer identity, so that a failover moves it
    to the successor (the heartbeat claims it when its own renewal gets the failover answer); the
    others key it on the FT group, which a failover leaves where it is.  ``own_ttl(options)``, for a
    backend whose lease time is its own rather than ``[lease] ttl``: ``(seconds, why)``.
    """

    name: str
    opener: Opener
    keys: tuple[str, ...] = ()
    parse: OptionsParser | None = None
    follows_identity: bool = False
    own_ttl: Callable[[Any], tuple[float, str]] | None = None
