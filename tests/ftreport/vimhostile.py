"""Hostile vCenter answers for the paging proxy (``PagingProxy.hostile``), made from the
simulator's own answer to the same call: the same answer sent one byte a second, or with a flood
of elements nobody asked for, nested a million deep, with a host name of 50 MB, a page of a
million objects, or a document type declaration with entities. Each is a generator, so the proxy
streams it as it is made and stops making it when the client gives up."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from .vimproxy import HostileAnswer

__all__ = ["big_page", "deep", "drip", "entities", "flood", "huge_text"]

_CHUNK = 64 * 1024
_FIRST_OBJECT = re.compile(rb"<objects>|<objectSet>")
_BODY_END = re.compile(rb"</[A-Za-z0-9_]+:Body>")
_TEXT = re.compile(rb">([^<\s][^<]*)<")
_NAME_VALUE = re.compile(rb"<name>name</name><val[^>]*>([^<]*)</val>")
_MOID = re.compile(rb'(<obj type="[^"]*">)([^<]*)(</obj>)')


def _repeat(unit: bytes, size: int) -> Iterator[bytes]:
    """``size`` bytes (rounded to whole units) of ``unit`` repeated, in chunks of about 64 KiB."""
    chunk = unit * max(1, _CHUNK // len(unit))
    for _ in range(max(1, size // len(chunk))):
        yield chunk


def drip(pace: float = 1.0, *, head: bool = False, forward: bool = True) -> HostileAnswer:
    """The real answer, one byte every ``pace`` seconds (``head``: the status line and headers too)."""

    def body(real: bytes) -> Iterator[bytes]:
        return (real[i:i + 1] for i in range(len(real)))

    return HostileAnswer(body, pace=pace, drip_head=head, forward=forward)


def flood(size: int) -> HostileAnswer:
    """``size`` bytes of elements vCenter never sends (inside the result, after its first object),
    then the rest of the real answer."""
    unit = b"<unknownProperty><a>1</a><b>2</b></unknownProperty>"

    def body(real: bytes) -> Iterator[bytes]:
        end = real.index(b"</objects>") + len(b"</objects>")
        yield real[:end]
        yield from _repeat(unit, size)
        yield real[end:]

    return HostileAnswer(body)


def deep(levels: int) -> HostileAnswer:
    """The real answer's opening, then ``levels`` nested elements (7 MB for a million)."""

    def body(real: bytes) -> Iterator[bytes]:
        match = _FIRST_OBJECT.search(real) or _BODY_END.search(real)  # (a wait with nothing new)
        assert match is not None, "not a SOAP answer"
        yield real[:match.start()]
        for _ in range(0, levels, 10_000):
            yield b"<a>" * 10_000

    return HostileAnswer(body)


def huge_text(size: int) -> HostileAnswer:
    """The real answer with its first ``name`` (a host's or a cluster's) ``size`` bytes long."""

    def body(real: bytes) -> Iterator[bytes]:
        match = _NAME_VALUE.search(real)
        assert match is not None, "no name in the answer"
        yield real[:match.start(1)]
        yield from _repeat(b"h", size)
        yield real[match.end(1):]

    return HostileAnswer(body)


def big_page(objects: int) -> HostileAnswer:
    """One page of ``objects`` objects (the real ones again and again, under new moIds), whatever
    ``maxObjects`` asked for."""

    def body(real: bytes) -> Iterator[bytes]:
        first, last = real.index(b"<objects>"), real.rindex(b"</objects>") + len(b"</objects>")
        items = re.findall(rb"<objects>.*?</objects>", real[first:last], re.S)
        yield real[:first]
        sent = 0
        copy = 0
        while sent < objects:
            batch = []
            for item in items[:objects - sent]:
                batch.append(_MOID.sub(lambda m, n=copy: m.group(1) + m.group(2) + b"-%d" % n + m.group(3), item))
            sent += len(batch)
            copy += 1
            yield b"".join(batch)
        yield real[last:]

    return HostileAnswer(body)


def entities(kind: str) -> HostileAnswer:
    """The real answer behind a document type declaration whose entity becomes the first name (or
    the first text of an answer without names): ``laughs`` (a billion "lol"s from a few hundred bytes) or ``external`` (a local file)."""
    if kind == "laughs":
        decls = ['<!ENTITY lol0 "lol">'] + [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
        doctype, ref = f"<!DOCTYPE soapenv:Envelope [{''.join(decls)}]>", b"&lol9;"
    else:
        doctype, ref = '<!DOCTYPE soapenv:Envelope [<!ENTITY x SYSTEM "file:///etc/passwd">]>', b"&x;"

    def body(real: bytes) -> Iterable[bytes]:
        declaration = real.index(b"?>") + 2 if real.startswith(b"<?xml") else 0
        match = _NAME_VALUE.search(real) or _TEXT.search(real, declaration)  # a name, else the first text
        assert match is not None, "no text in the answer"
        return [real[:declaration], doctype.encode(), real[declaration:match.start(1)], ref, real[match.end(1):]]

    return HostileAnswer(body)
