"""The one exception tree of ftagent.

Every error the library raises derives from :class:`FtagentError`.  Errors that come from a
server answer derive from :class:`RemoteError` and carry the HTTP status and the server's
``displayMessage``.  The CLI maps these classes to exit codes in one place (``ftagent.cli``).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "BadAnswer",
    "BadRequest",
    "ConfigError",
    "Conflict",
    "ConnectionFailed",
    "FailoverError",
    "FailoverRequired",
    "Forbidden",
    "FtagentError",
    "Gone",
    "IdentityError",
    "InvalidUsage",
    "LockTimeout",
    "NotFound",
    "NotRegistered",
    "PermissionDenied",
    "RateLimited",
    "RemoteError",
    "ServerError",
    "ServiceUnavailable",
    "TLSError",
    "Unauthorized",
    "error_for_status",
]


class FtagentError(Exception):
    """Base class of every error raised by ftagent."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(FtagentError):
    """The configuration is missing, unreadable or holds a bad value.

    ``file``, ``section`` and ``key`` name the offending place when known.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        section: str | None = None,
        key: str | None = None,
    ) -> None:
        where = ""
        if file is not None:
            where = file
            if section is not None:
                where += f": [{section}]"
                if key is not None:
                    where += f" {key}"
            where += ": "
        super().__init__(where + message)
        self.file = file
        self.section = section
        self.key = key


class InvalidUsage(FtagentError):
    """The caller asked for something that cannot be done as asked (CLI exit 64)."""


class IdentityError(FtagentError):
    """The local identity is missing a part, corrupt, mismatched or expired."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class NotRegistered(FtagentError):
    """There is no local identity: the system is not registered."""

    def __init__(self, message: str = "this system is not registered") -> None:
        super().__init__(message)


class PermissionDenied(FtagentError):
    """A local file ftagent needs cannot be read or written by this user (CLI exit 77)."""

    def __init__(self, path: str, action: str = "read") -> None:
        uid = os.geteuid()
        super().__init__(f"cannot {action} {path}: permission denied (running as uid {uid}); "
                         "run as root, or give this user access to it")
        self.path = path


class LockTimeout(FtagentError):
    """Another ftagent process held the lock for longer than we were willing to wait."""


class ConnectionFailed(FtagentError):
    """The server could not be reached: refused, unreachable, timed out, proxy failure."""


class BadAnswer(ConnectionFailed):
    """The server's answer was refused: too large, too slow as a whole, or a compression bomb."""


class TLSError(ConnectionFailed):
    """The TLS handshake failed: untrusted server certificate, host mismatch, rejected client cert."""


class FailoverError(FtagentError):
    """A failover answer could not be applied: it failed validation or the swap failed.

    When validation fails nothing on disk has been changed.
    """

    def __init__(self, message: str, *, from_uuid: str | None = None, to_uuid: str | None = None) -> None:
        super().__init__(message)
        self.from_uuid = from_uuid
        self.to_uuid = to_uuid


class RemoteError(FtagentError):
    """The server answered with an error status.

    ``status`` is the HTTP status, ``display_message`` the server's ``displayMessage`` (or
    ``None``), ``body`` the decoded JSON body (or ``None``), ``method`` and ``path`` the request,
    ``retry_after`` the server's ``Retry-After`` hint in seconds (or ``None``).
    """

    default_message = "the server refused the request"

    def __init__(
        self,
        status: int,
        display_message: str | None = None,
        *,
        body: Any = None,
        method: str = "",
        path: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.display_message = display_message
        self.body = body
        self.method = method
        self.path = path
        self.retry_after = retry_after
        self._from_body(body if isinstance(body, dict) else {})
        text = display_message or self.default_message
        super().__init__(f"{text} (HTTP {status}{' on ' + method + ' ' + path if method else ''})")

    def _from_body(self, body: dict[str, Any]) -> None:
        """Subclasses read what their status carries in the body (``deletedId``, ``failover``)."""


class BadRequest(RemoteError):
    """400 or 422: the server rejected the request's content."""

    default_message = "the server rejected the request as invalid"


class Unauthorized(RemoteError):
    """401: the credentials were refused."""

    default_message = "authentication failed"


class Forbidden(RemoteError):
    """403: authenticated, but not allowed to do this."""

    default_message = "access denied"


class NotFound(RemoteError):
    """404: no such object."""

    default_message = "not found"


class Conflict(RemoteError):
    """409: the request conflicts with the server's state (see ``body``)."""

    default_message = "conflict with the server's state"


class Gone(RemoteError):
    """410: the consumer was deleted on the server; ``deleted_id`` is its UUID."""

    default_message = "the consumer has been deleted on the server"
    deleted_id: str | None = None

    def _from_body(self, body: dict[str, Any]) -> None:
        if isinstance(body.get("deletedId"), str):
            self.deleted_id = body["deletedId"]


class RateLimited(RemoteError):
    """429: too many requests; ``retry_after`` is the server's hint in seconds (or ``None``)."""

    default_message = "too many requests"


class ServerError(RemoteError):
    """5xx: the server failed."""

    default_message = "the server failed to handle the request"


class ServiceUnavailable(ServerError):
    """503: the server is temporarily unavailable; ``retry_after`` in seconds (or ``None``)."""

    default_message = "the server is temporarily unavailable"


class FailoverRequired(RemoteError):
    """The server's failover answer (HTTP 308 with a ``failover`` body), not validated yet.

    A :class:`~ftagent.connection.Connection` raises it to its caller, which follows it or not
    (:mod:`ftagent.failover`).  ``failover`` is the body's ``failover`` object (``from``, ``to``,
    ``consumer``).
    """

    default_message = "this consumer has failed over to another consumer"
    failover: dict[str, Any]

    def _from_body(self, body: dict[str, Any]) -> None:
        failover = body.get("failover")
        self.failover = failover if isinstance(failover, dict) else {}

    @property
    def from_uuid(self) -> str | None:
        """The failed-over consumer the answer names (unchecked)."""
        value = self.failover.get("from")
        return value if isinstance(value, str) else None

    @property
    def to_uuid(self) -> str | None:
        """The successor consumer the answer names (unchecked)."""
        value = self.failover.get("to")
        return value if isinstance(value, str) else None


_BY_STATUS: dict[int, type[RemoteError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: BadRequest,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_for_status(
    status: int,
    body: Any = None,
    *,
    method: str = "",
    path: str = "",
    retry_after: float | None = None,
) -> RemoteError:
    """Build the named error for an HTTP error ``status`` and its decoded ``body``."""
    display = None
    if isinstance(body, dict):
        value = body.get("displayMessage")
        if isinstance(value, str) and value:
            display = value
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else RemoteError
    return cls(status, display, body=body, method=method, path=path, retry_after=retry_after)
