"""The errors of the esx source's own SOAP code (``vimhttp``, ``vimparse``, ``vimstream``).

The esx source turns each into a :class:`ftreport.errors.SourceError` naming the source, the
vCenter and what it was doing, as it does with pyvmomi's exceptions.
"""

from __future__ import annotations

__all__ = ["VimFault", "VimLimitError", "VimProtocolError"]


class VimFault(Exception):
    """A SOAP fault from vCenter: ``fault`` is the vSphere fault type (``NotAuthenticated``...)."""

    def __init__(self, fault: str, message: str) -> None:
        self.fault = fault
        self.message = message
        super().__init__(f"{fault}: {message}" if message else fault)


class VimProtocolError(Exception):
    """A response that is not the SOAP document the call promises (HTML error page, cut short...)."""


class VimLimitError(Exception):
    """vCenter's answer broke one of the bounds put on it (time, size, depth...); ``limit`` names
    the bound (a configuration key where there is one) and the message says what happened."""

    def __init__(self, limit: str, message: str) -> None:
        self.limit = limit
        super().__init__(message)
