"""The lease backends, side by side, and :func:`open_backend` which picks one by ``[lease] backend``.

Each backend is one module here implementing :class:`ftagent.lease.backend.LeaseBackend`:

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
  (SIGUSR1), which runs the fencing ladder.

Adding one: a module here (standard library at import time, so ``ftagent status`` stays cheap), its
name in :data:`BACKENDS`, its ``[lease]`` keys in :data:`BACKEND_KEYS` and a parser in
:func:`parse_backend_options` (the result is ``LeaseSettings.backend_options``), a branch in
:func:`open_backend`, and its keys in ``man/ftagent.conf.5`` and ``docs/heartbeat.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ftagent.config import Config
    from ftagent.connection import Connection
    from ftagent.errors import ConfigError
    from ftagent.identity import IdentityStore
    from ftagent.lease.backend import LeaseBackend
    from ftagent.lease.settings import LeaseSettings

__all__ = ["BACKENDS", "BACKEND_KEYS", "DEFAULT_BACKEND", "FOLLOWS_IDENTITY", "open_backend",
           "parse_backend_options"]

#: The values ``[lease] backend`` accepts.
BACKENDS = ("server", "etcd", "sanlock")
DEFAULT_BACKEND = "server"
#: The ``[lease]`` keys each backend adds (kept in sync with the backends' own ``KEYS``).
BACKEND_KEYS: dict[str, tuple[str, ...]] = {
    "server": (),
    "etcd": ("etcd_endpoints", "etcd_prefix", "etcd_ca_cert", "etcd_cert", "etcd_key", "etcd_username",
             "etcd_password"),
    # Validated into LeaseSettings.sanlock_* by ftagent.lease.settings.
    "sanlock": ("sanlock_path", "sanlock_lockspace", "sanlock_host_id", "sanlock_io_timeout"),
}

#: Backends whose lease is keyed on the consumer identity, so that a failover moves it to the
#: successor (the daemon claims it when its own renewal gets the failover answer).  The others key it
#: on the FT group (org and ``virt.uuid``): a failover leaves the lease where it is.
FOLLOWS_IDENTITY = frozenset({"server"})


def parse_backend_options(backend: str, raw: Mapping[str, str], err: Callable[[str, str], ConfigError],
                          base: Path | None) -> object | None:
    """The backend's own ``[lease]`` keys, validated (``None`` for a backend without any)."""
    if backend == "etcd":
        from ftagent.lease.backends.etcd import parse_etcd_settings

        return parse_etcd_settings(raw, err, base)
    return None


def open_backend(config: Config, settings: LeaseSettings, identity: IdentityStore, *,
                 connection: Callable[[], Connection] | None = None) -> LeaseBackend:
    """The backend ``settings.backend`` names, ready for the state machine.

    ``connection`` makes the connection to ``[server]`` as this identity, for a backend that uses
    it (the heartbeat shares its own); without it such a backend makes its own.
    """
    from ftagent.errors import ConfigError

    if settings.backend == "server":
        from ftagent.lease.backends.server import open_server_backend

        return open_server_backend(config, settings, identity, connection=connection)
    if settings.backend == "etcd":
        from ftagent.lease.backends.etcd import open_etcd_backend

        return open_etcd_backend(config, settings, identity)
    if settings.backend == "sanlock":
        from ftagent.lease.backends.sanlock import open_sanlock_backend

        return open_sanlock_backend(config, settings)
    raise ConfigError(f"unknown lease backend {settings.backend!r}", section="lease", key="backend")
