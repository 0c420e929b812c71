"""The one exception tree of ftreport.

Every error ftreport raises on purpose derives from :class:`FtreportError`, so callers (and the
CLI) can tell ftreport's own failures from programming errors.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FtreportError",
    "PasswordError",
    "SendError",
    "SourceAuthError",
    "SourceError",
    "SourceTLSError",
]


class FtreportError(Exception):
    """Base of every error ftreport raises deliberately."""


class ConfigError(FtreportError):
    """A configuration problem, located by file, section and key where known."""

    def __init__(self, message: str, *, file: str | None = None, section: str | None = None,
                 key: str | None = None) -> None:
        self.file = file
        self.section = section
        self.key = key
        self.reason = message
        where = []
        if file:
            where.append(str(file))
        if section:
            where.append(f"[{section}]")
        if key:
            where.append(key)
        super().__init__(f"{': '.join([' '.join(where), message]) if where else message}")


class PasswordError(FtreportError):
    """A password could not be encrypted or decrypted (missing or wrong key, corrupted data)."""


class SourceError(FtreportError):
    """A source could not collect its hosts and guests."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        self.reason = message
        super().__init__(f"{source}: {message}")


class SourceAuthError(SourceError):
    """The source rejected the configured credentials."""


class SourceTLSError(SourceError):
    """The source's TLS certificate could not be verified."""


class SendError(FtreportError):
    """A report could not be delivered to (or was rejected by) the entitlement server."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)
