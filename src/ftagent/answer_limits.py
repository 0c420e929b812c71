"""Limits on what a server may send back: a deadline for a whole answer, a size, a compression ratio.

A per-read timeout does not bound a call: a server sending one byte just inside it keeps the call
(and whatever lock its caller holds) forever, and an endless or highly compressed body grows
memory without limit. Both transports of ftagent (``requests`` in :mod:`ftagent.requests_transport`,
``http.client`` in :mod:`ftagent.light_transport`) read answers through the pieces here:

* :class:`DeadlineHTTPResponse` is the ``http.client`` response class both use. Every socket read
  of the status line, the headers and the body gets a timeout of what is left before the answer's
  deadline (see :func:`answer_deadline`), so a trickle ends when the deadline passes, and reading
  stops after :data:`MAX_WIRE_BYTES` whoever reads (urllib3 draining a retried answer included);
* :func:`read_body` reads a body in chunks, refusing one over :data:`MAX_ANSWER_BYTES` or one that
  decompresses to more than :data:`MAX_COMPRESSION_RATIO` times its size on the wire.

Kept free of ``requests`` so the heartbeat's light path does not load it.
"""

from __future__ import annotations

import contextlib
import contextvars
import http.client
import io
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ftagent.errors import BadAnswer

__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_COMPRESSION_RATIO",
    "AnswerTooLarge",
    "DeadlineHTTPResponse",
    "answer_deadline",
    "read_body",
]

#: The largest answer accepted, decoded. The largest legitimate one is an entitlement list with its
#: certificates and keys (about 10 kB each): 32 MiB holds a few thousand.
MAX_ANSWER_BYTES = 32 * 1024 * 1024
#: A body may decompress to at most this many times its compressed size (JSON compresses ~10x).
MAX_COMPRESSION_RATIO = 100
#: Below this many decoded bytes the ratio is not checked (tiny bodies compress oddly well).
RATIO_FLOOR = 1024 * 1024
CHUNK = 16 * 1024

#: Bytes off the wire per answer (headers and body, before decoding) beyond which reading stops.
MAX_WIRE_BYTES = MAX_ANSWER_BYTES + 1024 * 1024

# (seconds each answer may take from its first read, absolute deadline of the whole call or None)
_limits: contextvars.ContextVar[tuple[float, float | None] | None] = contextvars.ContextVar(
    "ftagent_answer_limits", default=None)


class AnswerTooLarge(OSError):
    """Raised by a socket read once an answer passed :data:`MAX_WIRE_BYTES` on the wire."""


@contextlib.contextmanager
def answer_deadline(seconds: float, *, until: float | None = None) -> Iterator[None]:
    """Within the block, every answer must be complete ``seconds`` after it begins to be read, and
    before ``until`` (a ``time.monotonic`` value) when given: the whole call's deadline."""
    token = _limits.set((seconds, until))
    try:
        yield
    finally:
        _limits.reset(token)


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout("the answer did not arrive before the call's deadline")
    return left


class _DeadlineSocketReader(io.RawIOBase):
    """Socket reads whose timeout is what is left before a fixed deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._read > MAX_WIRE_BYTES:
            raise AnswerTooLarge(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
        self._sock.settimeout(_left(self._deadline))
        n = self._sock.recv_into(buffer)
        self._read += n
        return n


class DeadlineHTTPResponse(http.client.HTTPResponse):
    """An ``http.client`` response read under the deadline of :func:`answer_deadline`, if one is set."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        limits = _limits.get()
        if limits is not None:
            seconds, until = limits
            deadline = time.monotonic() + seconds
            if until is not None:
                deadline = min(deadline, until)
            self.fp.close()  # the plain socket file: replaced, the socket itself stays open
            self.fp = io.BufferedReader(_DeadlineSocketReader(sock, deadline))


def read_body(chunks: Iterable[bytes], wire_bytes: Callable[[], int], *, what: str,
              limit: int = MAX_ANSWER_BYTES, ratio: int = MAX_COMPRESSION_RATIO) -> bytes:
    """Join decoded ``chunks`` of a body; ``wire_bytes()`` tells how many bytes came off the wire.

    Raises :class:`~ftagent.errors.BadAnswer` for a body over ``limit`` or one expanding more than
    ``ratio`` times (a compression bomb), as soon as either shows, without reading further.
    """
    parts: list[bytes] = []
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise BadAnswer(f"{what}: the answer is larger than {limit} bytes; refused")
        if total > RATIO_FLOOR and total > ratio * max(wire_bytes(), 1):
            raise BadAnswer(f"{what}: the answer decompresses more than {ratio} times; refused")
        parts.append(chunk)
    return b"".join(parts)
