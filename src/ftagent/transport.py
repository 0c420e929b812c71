"""The seam under every call to the entitlement server: a :class:`Transport` sends one request and
returns an :class:`Answer` (status, headers, body), whatever the status.

Two implementations, one per need:

- :class:`ftagent.requests_transport.RequestsTransport` (``requests``): proxies, CA directories,
  retries with backoff and ``Retry-After``, compressed answers; every command uses it;
- :class:`ftagent.light_transport.LightTransport` (``http.client``): one keep-alive mutual-TLS
  connection and nothing else, for the heartbeat's renewals and etcd's gateway, because ``requests``
  and ``urllib3`` cost the long-running heartbeat about 15 MB of memory.

Both put a deadline on the whole answer and a bound on its size (:mod:`ftagent.answer_limits`) and
turn every failure into an error of :mod:`ftagent.errors` (``ConnectionFailed``, ``TLSError``,
``BadAnswer``...).  Neither looks at what a status means: :class:`ftagent.connection.Connection` does,
above this seam, and hands a failover answer to :mod:`ftagent.failover`.  Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Answer", "Transport"]


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, read in full (within the limits of :mod:`ftagent.answer_limits`).

    ``headers`` has lower-case names.
    """

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """A header's value (case-insensitive name), or ``None``."""
        return self.headers.get(name.lower())

    def json(self) -> Any:
        """The decoded JSON body; ``None`` when empty or not JSON (or nested deeper than the parser goes)."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            return None


class Transport(Protocol):
    """Sends requests to one server; ``target`` is the path and query below the server's base URL."""

    def send(self, method: str, target: str, *, body: bytes | None, headers: Mapping[str, str],
             timeout: float) -> Answer:
        """Send one request and read its answer within ``timeout`` seconds (each try, for a transport
        that retries); raise an :class:`~ftagent.errors.FtagentError` when no answer came."""
        ...

    def reset(self) -> None:
        """Drop open connections (and TLS state): the identity files changed."""
        ...

    def close(self) -> None:
        """Close open connections."""
        ...

    @property
    def connections_opened(self) -> int:
        """How many TCP/TLS connections were opened so far."""
        ...
