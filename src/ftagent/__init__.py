"""Guest agent library: identity, entitlements, failover handling and the FT lease.

The public names are exported lazily (PEP 562), so ``import ftagent`` stays cheap and
``from ftagent import Connection`` imports the network stack only when asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Agent": "ftagent.agent",
    "CheckinResult": "ftagent.agent",
    "Config": "ftagent.config",
    "load_config": "ftagent.config",
    "Connection": "ftagent.connection",
    "EntitlementStore": "ftagent.entitlements",
    "RefreshResult": "ftagent.entitlements",
    "Identity": "ftagent.identity",
    "IdentityStore": "ftagent.identity",
    "IdentitySwapper": "ftagent.failover",
    "validate_failover": "ftagent.failover",
    "SystemPaths": "ftagent.facts",
    "collect_facts": "ftagent.facts",
    "FileLock": "ftagent.lock",
    # the exception tree
    "FtagentError": "ftagent.errors",
    "ConfigError": "ftagent.errors",
    "IdentityError": "ftagent.errors",
    "NotRegistered": "ftagent.errors",
    "InvalidUsage": "ftagent.errors",
    "LockTimeout": "ftagent.errors",
    "ConnectionFailed": "ftagent.errors",
    "TLSError": "ftagent.errors",
    "FailoverError": "ftagent.errors",
    "FailoverRequired": "ftagent.errors",
    "RemoteError": "ftagent.errors",
    "BadRequest": "ftagent.errors",
    "Unauthorized": "ftagent.errors",
    "Forbidden": "ftagent.errors",
    "NotFound": "ftagent.errors",
    "Conflict": "ftagent.errors",
    "Gone": "ftagent.errors",
    "RateLimited": "ftagent.errors",
    "ServerError": "ftagent.errors",
    "ServiceUnavailable": "ftagent.errors",
}

__all__ = [
    "Agent",
    "BadRequest",
    "CheckinResult",
    "Config",
    "ConfigError",
    "Conflict",
    "Connection",
    "ConnectionFailed",
    "EntitlementStore",
    "FailoverError",
    "FailoverRequired",
    "FileLock",
    "Forbidden",
    "FtagentError",
    "Gone",
    "Identity",
    "IdentityError",
    "IdentityStore",
    "IdentitySwapper",
    "InvalidUsage",
    "LockTimeout",
    "NotFound",
    "NotRegistered",
    "RateLimited",
    "RefreshResult",
    "RemoteError",
    "ServerError",
    "ServiceUnavailable",
    "SystemPaths",
    "TLSError",
    "Unauthorized",
    "__version__",
    "collect_facts",
    "load_config",
    "validate_failover",
]

if TYPE_CHECKING:
    from ftagent.agent import Agent, CheckinResult
    from ftagent.config import Config, load_config
    from ftagent.connection import Connection
    from ftagent.entitlements import EntitlementStore, RefreshResult
    from ftagent.errors import (
        BadRequest,
        ConfigError,
        Conflict,
        ConnectionFailed,
        FailoverError,
        FailoverRequired,
        Forbidden,
        FtagentError,
        Gone,
        IdentityError,
        InvalidUsage,
        LockTimeout,
        NotFound,
        NotRegistered,
        RateLimited,
        RemoteError,
        ServerError,
        ServiceUnavailable,
        TLSError,
        Unauthorized,
    )
    from ftagent.facts import SystemPaths, collect_facts
    from ftagent.failover import IdentitySwapper, validate_failover
    from ftagent.identity import Identity, IdentityStore
    from ftagent.lock import FileLock


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ftagent' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
