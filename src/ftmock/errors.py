"""ftmock's one exception tree.

:class:`ApiError` and its subclasses are answered to clients, each with an HTTP status and a
Candlepin-style JSON error body; the command line maps the whole tree to exit codes in one place
(``ftmock.cli.exit_code_for``)."""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

__all__ = [
    "ApiError",
    "BadRequest",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "FtmockError",
    "Gone",
    "NotFound",
    "PayloadTooLarge",
    "RequestTimeout",
    "Unauthorized",
    "Unavailable",
]


class FtmockError(Exception):
    """Base of every error ftmock raises on purpose."""


class ConfigError(FtmockError):
    """The data directory cannot be used as asked (missing database, not writable)."""


class Unavailable(FtmockError):
    """Something the server needs is taken or out of reach (its listen address)."""


class ApiError(FtmockError):
    """An error answered to the client as `{"displayMessage": ...}` with an HTTP status."""

    status = 500

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        # Candlepin names each request; the id lets an operator find it in the server's log.
        return {"displayMessage": self.message, "requestUuid": str(uuidlib.uuid4()), **self.extra}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class RequestTimeout(ApiError):
    status = 408


class Conflict(ApiError):
    status = 409


class Gone(ApiError):
    status = 410


class PayloadTooLarge(ApiError):
    status = 413
