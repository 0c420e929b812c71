"""The seam under every call to the entitlement server: a :class:`Transport` sends one request and
returns an :class:`Answer` (status, headers, body), whatever the status.

Two implementations, one per need:

- :class:`ftagent.requests_transport.RequestsTransport` (``requests``): proxies,
  retries with backoff and ``Retry-After``, compressed answers; every command uses it;
- :class:`ftagent.light_transport.LightTransport` (``http.client``): one keep-alive mutual-TLS
  connection and nothing else, for the heartbeat's renewals and etcd's gateway, because ``requests``
  and ``urllib3`` cost the long-running heartbeat about 15 MB of memory.

Both put a deadline on the whole answer and a bound on its size (:mod:`ftagent.answer_limits`),
trust a CA directory the same way (:func:`ca_directory_pem`: rhsm.conf's ``/etc/rhsm/ca/`` holds
plain ``*.pem`` files, without the hash links OpenSSL's own directory lookup needs) and turn every
failure into an error of :mod:`ftagent.errors` (``ConnectionFailed``, ``TLSError``, ``BadAnswer``...).
Neither looks at what a status means: :class:`ftagent.connection.Connection` does, above this seam,
and hands a failover answer to :mod:`ftagent.failover`.  Standard library only.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ftagent.errors import ConfigError

__all__ = ["PEM_CERT", "Answer", "Transport", "ca_directory_pem"]

logger = logging.getLogger(__name__)

#: One PEM certificate block.
PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\s.+?-----END CERTIFICATE-----", re.DOTALL)


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


def ca_directory_pem(directory: Path) -> str:
    """Every PEM certificate in the regular files of ``directory``, as one ``cadata`` text.

    OpenSSL's own directory lookup (``capath``) finds only certificates named by their subject hash
    (``c_rehash`` links); a CA directory such as rhsm.conf's ``ca_cert_dir`` has ``redhat-uep.pem`` and
    the like, so both transports read its files themselves. :class:`~ftagent.errors.ConfigError` when
    there is none.
    """
    blocks: list[bytes] = []
    for path in sorted(directory.iterdir()):
        try:
            if path.is_file():
                blocks.extend(PEM_CERT.findall(path.read_bytes()))
        except OSError as exc:
            logger.debug("skipping %s in CA directory: %s", path, exc)
    if not blocks:
        raise ConfigError(f"no CA certificates found in directory {directory}")
    return b"\n".join(blocks).decode("ascii")
