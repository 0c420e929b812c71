"""The lease backends, side by side: the registry of what each one declares, and :func:`open_backend`.

Each backend is one module here implementing :class:`ftagent.lease.backend.LeaseBackend` and
declaring itself in a module-level ``BACKEND`` (:class:`~ftagent.lease.backend.BackendSpec`): its
name, its own ``[lease]`` keys with their parser, and its opener.  :func:`backend_spec` finds them
through :data:`MODULES`; ``[lease]`` validation (:mod:`ftagent.lease.settings`) and the heartbeat ask
it, and know no backend.

- ``server``  (:mod:`.server`, the default): ftmock's lease API, ``POST``/``DELETE
  /consumers/{uuid}/lease`` over the agent's mutual-TLS identity.  Generation = the server's
  counter; a renewal answered with a failover raises it to the state machine, which follows it and
  claims the successor's lease with :meth:`~ftagent.lease.backend.LeaseBackend.handover`.
- ``etcd`` (:mod:`.etcd`): one key per FT group ``{prefix}/{org}/{virt.uuid}`` in an etcd v3
  cluster, over etcd's JSON gateway; grant = a transaction "create the key if absent, on a fresh
  etcd lease of ``ttl``", renew = keep-alive (refused when the key's create revision is not
  ``generation``), release = revoke, handover = the same key, so the current
  :class:`~ftagent.lease.backend.Grant` (only the consumer identity changes).  Generation = the key's
  create revision; ``ttl`` = the configured ttl.  It ignores ``consumer`` and takes the group's org
  and ``virt.uuid`` at construction.  Keys ``etcd_*``.
- ``sanlock`` (:mod:`.sanlock`): the group's resource (named by ``virt.uuid``) in a lockspace on a
  shared lease file, through the local sanlock daemon; generation = the lease version ``lver``;
  ``ttl`` = sanlock's host_dead bound for the lockspace's io timeout, counted from the daemon's last
  renewal (:attr:`~ftagent.lease.backend.Grant.age`); the daemon's kill path signals the heartbeat
  (SIGUSR1), which runs the fencing ladder.  Keys ``sanlock_*``.

Adding one: a module here whose top-level imports stay light (``ftagent status`` loads the configured
backend's module to validate its keys), declaring its ``BACKEND``; its name and module in
:data:`MODULES` below; its keys in ``man/ftagent.conf.5`` and ``docs/heartbeat.md``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from ftagent.errors import ConfigError
from ftagent.lease.backend import BackendSpec

if TYPE_CHECKING:
    from ftagent.config import Config
    from ftagent.connection import Connection
    from ftagent.identity import IdentityStore
    from ftagent.lease.backend import LeaseBackend
    from ftagent.lease.settings import LeaseSettings

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "MODULES", "all_backends", "backend_spec", "open_backend"]

#: Every backend by name: the module that declares it in its ``BACKEND``.  The modules are imported
#: when asked for, not here: ``ftagent status`` validates ``[lease]`` with the configured backend's
#: module alone, and the three would cost it about 12 ms (``python -X importtime``).
MODULES = {
    "server": "ftagent.lease.backends.server",
    "etcd": "ftagent.lease.backends.etcd",
    "sanlock": "ftagent.lease.backends.sanlock",
}
#: The values ``[lease] backend`` accepts.
BACKENDS = tuple(MODULES)
DEFAULT_BACKEND = "server"


def backend_spec(name: str) -> BackendSpec:
    """What the backend ``name`` declares; a :class:`ConfigError` for an unknown one."""
    module = MODULES.get(name)
    if module is None:
        raise ConfigError(f"unknown lease backend {name!r} (known: {', '.join(BACKENDS)})", section="lease",
                          key="backend")
    spec = importlib.import_module(module).BACKEND
    assert isinstance(spec, BackendSpec) and spec.name == name, module
    return spec


def all_backends() -> list[BackendSpec]:
    """What every backend declares (imports every backend module)."""
    return [backend_spec(name) for name in BACKENDS]


def open_backend(config: Config, settings: LeaseSettings, identity: IdentityStore, *,
                 connection: Callable[[], Connection] | None = None) -> LeaseBackend:
    """The backend ``settings.backend`` names, ready for the state machine.

    ``connection`` makes the connection to ``[server]`` as this identity, for a backend that uses
    it (the heartbeat shares its own); without it such a backend makes its own.
    """
    return backend_spec(settings.backend).opener(config, settings, identity, connection)
