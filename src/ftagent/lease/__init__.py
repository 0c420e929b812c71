"""The FT group lease on the agent side: ``ftagent heartbeat`` and everything it is made of.

What stays the same whatever holds the lease, and what varies, side by side:

- :mod:`.settings`   ``[lease]`` validated (timing, fencing ladder, status file, ``backend``);
- :mod:`.states`     the states and :class:`LeaseLost`;
- :mod:`.keeper`     the state machine (:class:`LeaseKeeper`): deadline, DEGRADED, FENCING, handover;
- :mod:`.clock`      ``CLOCK_BOOTTIME``, which every timer uses;
- :mod:`.fencing`    the fencing ladder (hook command, systemd units, signal);
- :mod:`.status`     the holder id and the status file that ``ftagent status`` reads;
- :mod:`.heartbeat`  the daemon and ``--once``: loop, guard thread, watchdog;
- :mod:`.guard`      one heartbeat per guest: the exclusive lock a second daemon is refused by;
- :mod:`.claim`      a one-shot command's claim of a failover successor's lease;
- :mod:`.backend`    :class:`LeaseBackend`, the small protocol the state machine talks through, and
                     :class:`~.backend.BackendSpec`, what each backend module declares;
- :mod:`.backends`   one module per backend (``server``, ``etcd``, ``sanlock``) and their registry,
                     chosen by ``[lease] backend``.

Importing this package loads the standard library only, so ``ftagent status`` stays cheap.
"""

from __future__ import annotations

from ftagent.lease.backend import Grant, LeaseBackend, LeaseRefused
from ftagent.lease.keeper import LeaseKeeper
from ftagent.lease.settings import DEFAULT_STATUS_FILE, MAX_TTL, LeaseSettings, parse_lease_settings
from ftagent.lease.states import LeaseLost, LeaseState
from ftagent.lease.status import holder_path, load_or_create_holder, read_status, status_summary, write_status

__all__ = [
    "DEFAULT_STATUS_FILE",
    "MAX_TTL",
    "Grant",
    "LeaseBackend",
    "LeaseKeeper",
    "LeaseLost",
    "LeaseRefused",
    "LeaseSettings",
    "LeaseState",
    "holder_path",
    "load_or_create_holder",
    "parse_lease_settings",
    "read_status",
    "status_summary",
    "write_status",
]
