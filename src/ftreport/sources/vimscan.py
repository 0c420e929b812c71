"""A scanner for the regular shape in which vCenter writes PropertyCollector answers.

vCenter (and govmomi's simulator) write every ``<objects>`` of a RetrievePropertiesEx answer and
every ``<objectSet>`` of a WaitForUpdatesEx answer the same way: no whitespace, no comments, no
entity references, one ``xsi:type`` per value. An XML parser spends most of its time on such an
answer building elements that are thrown away at once; matching that one shape with compiled
patterns and folding the captured texts straight into the records costs less than half as much.

The scanner is a fast path, never a second parser. It only takes complete elements that match
the shape exactly, and only where it knows the context: the answer's opening up to the first
element must match a strict pattern too (the envelope, its namespace declarations, the response
element in ``urn:vim25``, no comment or processing instruction), which tells it the namespaces in
scope. Everything else (the opening, the end of the answer, faults, and the rest of the answer
from the first element that differs in any way) goes, in order, to the XML parser, which
therefore sees a well-formed document: the same answer without the elements already folded. A
server that writes differently is decoded exactly as before, only not faster.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .vimparse import MAX_TEXT
from .vimrecords import Change, Records, apply_update, converter, is_array, item_type, store_object

__all__ = ["RegularShapeScanner"]

# Texts without markup, entity or character reference, carriage return (XML turns \r\n into \n)
# or a character XML forbids: what they decode to is their UTF-8 bytes, nothing else. The byte
# 0xEF leads the UTF-8 of U+F000-U+FFFF, among them U+FFFE and U+FFFF, which XML forbids too; a
# text with any of them is left to the parser rather than looked for character by character.
_TEXT = rb"[^<>&\r\x00-\x08\x0b\x0c\x0e-\x1f\xef]*"
_ATTR = rb'[^"<>&\x00-\x1f\xef]*'  # no tab or newline either: XML turns them into spaces in attributes
_ATTR1 = rb'[^"<>&\x00-\x1f\xef]+'
_NAME = rb"[A-Za-z_][A-Za-z0-9_.\-]*"
_WS = rb"[ \t\n\r]*"
_XSI = b"http://www.w3.org/2001/XMLSchema-instance"

# A value: xsi:type declared on the element itself (govmomi) or with a prefix of the envelope
# (vCenter); a ManagedObjectReference's own type attribute; a text, or the items of an array.
_VAL = (rb'(?:(?P<val><val)(?: xmlns:(?!xml(?:ns)?=)(?P<lp>' + _NAME + rb')="' + re.escape(_XSI)
        + rb'" (?P=lp)| (?P<ep>' + _NAME + rb')):type="(?P<type>' + _ATTR1 + rb')"(?: type="' + _ATTR + rb'")?>'
        rb"(?:(?P<text>" + _TEXT + rb")|(?P<items>(?:<(?P<it>" + _NAME + rb')(?: type="' + _ATTR + rb'")?>'
        + _TEXT + rb"</(?P=it)>)+))</val>)?")
_PROP_SET = rb"<propSet><name>(?P<name>" + _TEXT + rb")</name>(?P<op>)" + _VAL + rb"</propSet>"
_CHANGE_SET = (rb"<changeSet><name>(?P<name>" + _TEXT + rb")</name><op>(?P<op>" + _TEXT + rb")</op>" + _VAL
               + rb"</changeSet>")
_OBJ = rb'<obj type="(?P<objtype>' + _ATTR + rb')">(?P<moid>' + _TEXT + rb")</obj>"

# An element is its head, then its parts one after the other, then its end tag: matched part by
# part from where the last one ended, so nothing between them goes unchecked.
_OBJECTS_HEAD = re.compile(_WS + rb"<objects>" + _OBJ)
_OBJECT_SET_HEAD = re.compile(_WS + rb"<objectSet><kind>(?P<kind>" + _TEXT + rb")</kind>" + _OBJ)
_PROP = re.compile(_PROP_SET)
_CHANGE = re.compile(_CHANGE_SET)
_ITEM = re.compile(rb"<(" + _NAME + rb')(?: type="' + _ATTR + rb'")?>(' + _TEXT + rb")</\1>")

# The answer's opening up to its first object: the XML declaration (UTF-8), the envelope with
# namespace declarations only, the body, the response element and the token of a page, or, for
# an update set, its version and the one filter of ftreport's own collector.
_OPENING = re.compile(
    rb'(?:<\?xml version="1\.0"(?: encoding="[Uu][Tt][Ff]-8")?(?: standalone="(?:yes|no)")? ?\?>)?' + _WS
    + rb"<(?P<env>" + _NAME + rb"):Envelope(?P<decls>(?:[ \t\n\r]+xmlns(?::" + _NAME + rb')?="' + _ATTR + rb'")*)'
    + _WS + rb">" + _WS + rb"<(?P=env):Body>" + _WS
    + rb'<(?P<response>RetrievePropertiesExResponse|ContinueRetrievePropertiesExResponse|WaitForUpdatesExResponse)'
    rb' xmlns="urn:vim25">' + _WS + rb"<returnval>" + _WS
    + rb"(?:<token>" + _TEXT + rb"</token>" + _WS + rb")?"  # a RetrieveResult's token comes before its objects
    + rb"(?P<filter><version>" + _TEXT + rb"</version>" + _WS + rb"<filterSet>" + _WS + rb'<filter type="'
    + _ATTR + rb'">' + _TEXT + rb"</filter>" + _WS + rb")?")
_DECL = re.compile(rb'xmlns:(' + _NAME + rb')="(' + _ATTR + rb')"')


_OPENING_LIMIT = 16 * 1024  # an opening longer than this is not the regular shape
# Nor is an object longer than the longest text the parser accepts: it is left to the parser,
# which holds texts to that bound (the scanner's patterns would take a text of any length).
_ELEMENT_LIMIT = MAX_TEXT
_PROBE = 16  # held-back bytes searched again with a new chunk: a marker may straddle the two

_OPENING_STATE, _REGULAR, _PARSER = 0, 1, 2


class _Deviation(Exception):
    """A matched element whose content the scanner will not decode (left to the XML parser)."""


class RegularShapeScanner:
    """Takes the answer's chunks in order; folds the elements of the regular shape into the
    records and returns the bytes the XML parser must see instead.

    ``objects`` and ``updates`` count the ``<objects>`` and ``<objectSet>`` elements it folded.
    """

    def __init__(self, records: Records, touched: set[str] | None = None) -> None:
        self.records = records
        self.touched = touched
        self.objects = 0
        self.updates = 0
        self._state = _OPENING_STATE
        # What is held back (the opening, or an element) until the chunk that can complete it:
        # its pieces, their length, and the marker whose arrival completes it. A new chunk is
        # searched for the marker only (with the last bytes held), never what was held, so an
        # element that comes in many small chunks costs its length once, not once per chunk.
        self._held: list[bytes] = []
        self._held_len = 0
        self._tail = b""
        self._start = b"<objects>"
        self._end = b"</objects>"
        self._xsi_prefixes: frozenset[bytes] = frozenset()
        self._names: dict[bytes, str] = {}
        self._decoders: dict[bytes, Callable[[bytes, bytes], Any]] = {}

    def feed(self, data: bytes) -> bytes:
        """The bytes of ``data`` (and of what was held back before) that go to the XML parser."""
        if self._state == _PARSER:
            return data
        if self._held:
            probe = self._tail + data
            if self._state == _OPENING_STATE:
                complete = b"<objects>" in probe or b"<objectSet>" in probe
                limit = _OPENING_LIMIT
            else:
                complete = self._end in probe
                limit = _ELEMENT_LIMIT
            self._held.append(data)
            self._held_len += len(data)
            if not complete and self._held_len < limit:
                self._tail = probe[-_PROBE:]
                return b""
            buf = b"".join(self._held)
            self._held, self._held_len, self._tail = [], 0, b""
            if not complete:  # too long to be the regular shape
                return self._to_parser(buf, 0)
        else:
            buf = data
        if self._state == _OPENING_STATE:
            return self._opening(buf)
        return self._scan(buf, 0, b"")

    def flush(self) -> bytes:
        """The end of the answer: whatever was held back goes to the parser."""
        rest = b"".join(self._held)
        self._held, self._held_len, self._tail = [], 0, b""
        self._state = _PARSER
        return rest

    def _hold(self, part: bytes) -> None:
        self._held, self._held_len, self._tail = [part], len(part), part[-_PROBE:]

    def _to_parser(self, buf: bytes, pos: int, before: bytes = b"") -> bytes:
        self._state = _PARSER
        return before + buf[pos:]

    def _opening(self, buf: bytes) -> bytes:
        first = [i for i in (buf.find(b"<objects>"), buf.find(b"<objectSet>")) if i >= 0]
        if not first:
            if len(buf) < _OPENING_LIMIT:
                self._hold(buf)
                return b""
            return self._to_parser(buf, 0)
        start = min(first)
        m = _OPENING.match(buf, 0, start)
        if m is None or m.end() != start:
            return self._to_parser(buf, 0)
        updates = m.group("response") == b"WaitForUpdatesExResponse"
        if updates != (m.group("filter") is not None):
            return self._to_parser(buf, 0)
        if updates:
            self._start, self._end = b"<objectSet>", b"</objectSet>"
        bound: dict[bytes, bytes] = {}
        for prefix, uri in _DECL.findall(m.group("decls")):
            bound[prefix] = uri
        self._xsi_prefixes = frozenset(p for p, uri in bound.items() if uri == _XSI)
        self._state = _REGULAR
        return self._scan(buf, start, buf[:start])

    def _scan(self, buf: bytes, pos: int, out: bytes) -> bytes:
        updates = self._start == b"<objectSet>"
        head = (_OBJECT_SET_HEAD if updates else _OBJECTS_HEAD).match
        part = (_CHANGE if updates else _PROP).match
        fold = self._fold_update if updates else self._fold_object
        end = self._end
        last_end = buf.rfind(end)  # no element after it is complete yet: none is matched in vain
        while pos < last_end:
            h = head(buf, pos)
            if h is None:
                break
            at = h.end()
            parts = []
            m = part(buf, at)
            while m is not None:
                parts.append(m.groups(b""))
                at = m.end()
                m = part(buf, at)
            if not buf.startswith(end, at) or at - pos > _ELEMENT_LIMIT:
                break
            try:
                fold(h, parts)
            except (_Deviation, ValueError):  # UnicodeDecodeError too
                return self._to_parser(buf, pos, out)
            pos = at + len(end)
        rest = buf[pos:pos + len(self._start) + 4].lstrip(b" \t\n\r")
        incomplete = (self._start.startswith(rest) or rest.startswith(self._start)) and buf.find(end, pos) < 0
        if incomplete and len(buf) - pos < _ELEMENT_LIMIT:
            self._hold(buf[pos:])
            return out
        return self._to_parser(buf, pos, out)

    # -- one element ---------------------------------------------------------------------------

    def _name(self, data: bytes) -> str:
        name = self._names.get(data)
        if name is None:
            name = self._names[data] = data.decode()
        return name

    def _decoder(self, raw: bytes) -> Callable[[bytes, bytes], Any]:
        """What decodes the text or the array items of a value whose ``xsi:type`` is ``raw``."""
        decode = self._decoders.get(raw)
        if decode is not None:
            return decode
        xsi_type = raw.decode() if raw else None
        convert = converter(xsi_type)
        if is_array(xsi_type):
            def decode(_text: bytes, items: bytes) -> Any:
                return [converter(item_type(tag.decode()))(t.decode() or None) for tag, t in _ITEM.findall(items)]
        else:
            def decode(text: bytes, items: bytes) -> Any:
                # With children but no array type, its own text (before the first child) is empty.
                return convert(None if items else text.decode() or None)
        self._decoders[raw] = decode
        return decode

    def _value(self, prefix: bytes, raw: bytes, text: bytes, items: bytes) -> Any:
        if prefix and prefix not in self._xsi_prefixes:
            raise _Deviation("a type attribute that is not xsi:type")
        return (self._decoders.get(raw) or self._decoder(raw))(text, items)

    def _fold_object(self, head: re.Match[bytes], parts: list[tuple[bytes, ...]]) -> None:
        props: dict[str, Any] = {}
        names, value = self._names, self._value
        for name, _op, val, _lp, prefix, raw, text, items, _it in parts:
            if name:
                props[names.get(name) or self._name(name)] = value(prefix, raw, text, items) if val else None
        obj_type, moid = head.group("objtype", "moid")
        store_object(self.records, obj_type.decode(), moid.decode(), props)
        self.objects += 1

    def _fold_update(self, head: re.Match[bytes], parts: list[tuple[bytes, ...]]) -> None:
        changes: list[Change] = []
        names, value = self._names, self._value
        for name, op, val, _lp, prefix, raw, text, items, _it in parts:
            if name:
                changes.append((names.get(name) or self._name(name), op.decode() or None,
                                value(prefix, raw, text, items) if val else None))
        obj_type, moid, kind = head.group("objtype", "moid", "kind")
        apply_update(self.records, self.touched, obj_type.decode(), moid.decode(), kind.decode() or None, changes)
        self.updates += 1
