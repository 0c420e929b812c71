"""HTTP connections to vCenter whose every call has a deadline and a size bound.

``http.client`` (and pyvmomi, which uses it) applies a connection's ``timeout`` to each socket
operation: a server that sends one byte a second never trips it, and nothing limits how much it
sends. The connections of this module bound each call instead:

- a deadline, set when the request starts (or when a connection is opened for it) and checked
  before every read: each read waits at most for what is left, so a call ends, answered or not,
  ``timeout`` seconds after it started (plus ``grace``, the time the call asks vCenter to wait,
  for ``WaitForUpdatesEx``);
- a count of the bytes read, headers included, against ``Limits.max_size``: for one call, or for
  a run of calls (the pages of one retrieval) when the owner resets the count itself;
- with ``Limits.guard``, the body is also read by :class:`~.vimparse.ElementBounds`, for the
  bounds on one element (depth, text, no DTD): for answers that pyvmomi parses itself, with an
  XML parser that expands entities and knows no such bounds.

Both connection classes take the keyword arguments pyvmomi's SOAP stub gives its own (pyvmomi
8.0.0.1 passes ``"host:port"``, later releases ``host=`` and ``port=``), so they are installed
as the stub's ``scheme`` and bound pyvmomi's calls too. A breach raises :class:`VimLimitError`.
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

from .vimerrors import VimLimitError
from .vimparse import ElementBounds

__all__ = [
    "DEFAULT_MAX_ANSWER_SIZE",
    "BoundedHTTPConnection",
    "BoundedHTTPSConnection",
    "Limits",
    "connection_factory",
    "format_size",
]

#: The default of an esx source's ``max_answer_size``: 45,000 VMs take about 35 MiB in vCenter's
#: shape; the bound is there against a server that never stops, not to meet by an inventory.
DEFAULT_MAX_ANSWER_SIZE = 512 << 20


def format_size(size: int) -> str:
    """``512 MiB``, ``64 KiB``, or a number of bytes."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


@dataclass
class Limits:
    """The bounds of the calls made through the connections that share this object.

    ``used`` counts the bytes read; with ``per_call`` it restarts at every request, otherwise its
    owner restarts it (:meth:`restart`) where a run of calls that counts as one answer begins.
    ``size_name`` is how an error names ``max_size`` (a configuration key, or a description).
    ``guard``: check the bounds of one element in the body as it is read (for pyvmomi's parser).
    """

    timeout: float
    max_size: int
    size_name: str = "max_answer_size"
    per_call: bool = True
    guard: bool = False
    grace: float = 0.0
    used: int = 0

    def restart(self) -> None:
        self.used = 0

    def late(self) -> VimLimitError:
        extra = f" + {self.grace:g} s of the wait asked of vCenter" if self.grace else ""
        return VimLimitError("timeout", f"no complete answer within timeout = {self.timeout:g} s{extra}")

    def too_big(self) -> VimLimitError:
        return VimLimitError(self.size_name, f"the answer is larger than {self.size_name} = "
                                             f"{format_size(self.max_size)}")


class _AnswerReader(io.RawIOBase):
    """The socket's reads, each given what is left of the call's time and counted."""

    def __init__(self, raw: Any, sock: socket.socket, connection: _Bounded) -> None:
        super().__init__()
        self._raw = raw  # the socket's own SocketIO: it keeps the socket open until closed
        self._sock = sock
        self._connection = connection

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        connection = self._connection
        limits = connection.limits
        left = connection.deadline - time.monotonic()
        if left <= 0:
            raise limits.late()
        if limits.used > limits.max_size:
            raise limits.too_big()
        self._sock.settimeout(left)
        try:
            n: int = self._raw.readinto(buffer)
        except socket.timeout:  # TimeoutError from Python 3.10
            raise limits.late() from None
        limits.used += n
        if limits.used > limits.max_size:
            raise limits.too_big()
        return n

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _BoundedSocket:
    """The connected socket as http.client sees it: its responses are read through
    :class:`_AnswerReader`; everything else is the socket's own."""

    def __init__(self, sock: socket.socket, connection: _Bounded) -> None:
        self._sock = sock
        self._connection = connection

    def makefile(self, mode: str = "rb", *_args: Any, **_kwargs: Any) -> io.BufferedReader:
        raw = self._sock.makefile("rb", buffering=0)
        return io.BufferedReader(_AnswerReader(raw, self._sock, self._connection))

    def sendall(self, data: Any) -> None:
        left = self._connection.deadline - time.monotonic()
        if left <= 0:
            raise self._connection.limits.late()
        self._sock.settimeout(left)  # for sendall, the whole call's timeout (Python 3.5+)
        try:
            self._sock.sendall(data)
        except socket.timeout:
            raise self._connection.limits.late() from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _GuardedResponse(http.client.HTTPResponse):
    """A response whose body, as it is read, goes through :class:`ElementBounds` too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = ElementBounds()

    def read(self, amt: int | None = None) -> bytes:
        data = super().read(amt)
        if data:
            self._guard.feed(data)
        return data


class _Bounded(http.client.HTTPConnection):
    """What both connection classes add to http.client's: the call's deadline and byte count."""

    limits: Limits
    deadline: float = 0.0
    _opened_for_call = False

    def putrequest(self, method: str, url: str, skip_host: bool = False,
                   skip_accept_encoding: bool = False) -> None:
        if self._opened_for_call:  # connect() (pyvmomi 9 connects first) started this call's clock
            self._opened_for_call = False
        else:
            self.deadline = time.monotonic() + self.limits.timeout + self.limits.grace
        if self.limits.per_call:
            self.limits.restart()
        if self.limits.guard:
            self.response_class = _GuardedResponse
        super().putrequest(method, url, skip_host=skip_host, skip_accept_encoding=skip_accept_encoding)

    def connect(self) -> None:
        now = time.monotonic()
        if self.deadline <= now:  # opened ahead of a request: the call starts now
            self.deadline = now + self.limits.timeout + self.limits.grace
            self._opened_for_call = True
        self.timeout = self.deadline - now  # the TCP connection and the TLS handshake
        try:
            super().connect()
        except socket.timeout:
            raise self.limits.late() from None
        self.sock = _BoundedSocket(self.sock, self)


class BoundedHTTPConnection(_Bounded):
    """Plain HTTP (``http://`` servers, as virt-who allows)."""

    def __init__(self, host: str, port: int | None = None, *, limits: Limits, **kwargs: Any) -> None:
        kwargs.pop("context", None)
        super().__init__(host, port, timeout=limits.timeout)
        self.limits = limits


class BoundedHTTPSConnection(_Bounded, http.client.HTTPSConnection):
    """HTTPS, verified with the given SSL context."""

    def __init__(self, host: str, port: int | None = None, *, limits: Limits,
                 context: ssl.SSLContext | None = None, **_kwargs: Any) -> None:
        http.client.HTTPSConnection.__init__(self, host, port, timeout=limits.timeout, context=context)
        self.limits = limits


def connection_factory(limits: Limits, ssl_context: ssl.SSLContext | None) -> Any:
    """A ``scheme`` for pyvmomi's SOAP stub: its connections, bounded by ``limits``.

    ``ssl_context`` None: plain HTTP."""

    def new(host: str, port: int | None = None, **_kwargs: Any) -> http.client.HTTPConnection:
        if ssl_context is None:
            return BoundedHTTPConnection(host, port, limits=limits)
        return BoundedHTTPSConnection(host, port, limits=limits, context=ssl_context)

    return new
