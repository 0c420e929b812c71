"""The XML parser of PropertyCollector answers: what the scanner of the regular shape leaves.

expat reports each element as it starts and ends and each text as it arrives; this module keeps
only what ftreport reads (the ``<objects>``/``<objectSet>`` elements, a page's token, an update
set's version and ``truncated``, a fault's name and message) and folds each object into the
records as soon as it ends. Everything else is dropped as it streams: an element nobody reads
costs nothing once it has ended, however many of them come.

An answer is bounded as it is read, because it comes from a server, not from ftreport:

- an element nested deeper than :data:`MAX_DEPTH`, a text, tag or comment longer than
  :data:`MAX_TEXT`, and an object of more than :data:`MAX_OBJECT_ELEMENTS` elements are errors;
- a document type declaration is an error (SOAP forbids them), so no entity is ever declared,
  let alone expanded;
- ``max_objects``: more objects than the page asked for is an error.

Each breach raises :class:`~.vimerrors.VimLimitError`; a malformed answer :class:`VimProtocolError`;
a SOAP fault, once the answer has ended, :class:`VimFault`.
"""

from __future__ import annotations

import pyexpat
from typing import Any

from .vimerrors import VimFault, VimLimitError, VimProtocolError
from .vimrecords import Change, Records, apply_update, converter, is_array, item_type, store_object

__all__ = ["MAX_DEPTH", "MAX_OBJECT_ELEMENTS", "MAX_TEXT", "AnswerParser", "ElementBounds", "page_too_big"]

MAX_DEPTH = 64  # vCenter's deepest answer element is 9 levels down (a value's array item)
MAX_TEXT = 64 * 1024  # the longest text ftreport reads is a name (at most a few hundred bytes)
MAX_OBJECT_ELEMENTS = 10_000  # ftreport asks at most nine properties of an object
_PIECE = 64 * 1024  # what expat is given at once: a stalled token is noticed within this

_SOAP = "http://schemas.xmlsoap.org/soap/envelope/}"
_VIM = "urn:vim25}"
_XSI_TYPE = "http://www.w3.org/2001/XMLSchema-instance}type"

# What an element is, from its parent's kind and its tag.
(_OTHER, _IGNORED, _OBJECTS, _OBJECT_SET, _OBJ, _KIND, _PART, _NAME, _OP, _VAL, _ITEM, _RETURNVAL, _TOKEN,
 _VERSION, _TRUNCATED, _BODY, _FAULT, _FAULTSTRING, _DETAIL) = range(19)
_N_KINDS = 19

# Objects, results and faults are found wherever they are, outside an object.
_ANYWHERE = {_VIM + "objects": _OBJECTS, _VIM + "objectSet": _OBJECT_SET, _VIM + "returnval": _RETURNVAL,
             _SOAP + "Body": _BODY, _SOAP + "Fault": _FAULT}
_CHILDREN: list[dict[str, int]] = [{} for _ in range(_N_KINDS)]
_DEFAULT = [_IGNORED] * _N_KINDS
for _kind in (_OTHER, _BODY):
    _CHILDREN[_kind], _DEFAULT[_kind] = _ANYWHERE, _OTHER
_CHILDREN[_RETURNVAL] = {**_ANYWHERE, _VIM + "token": _TOKEN, _VIM + "version": _VERSION,
                         _VIM + "truncated": _TRUNCATED}
_DEFAULT[_RETURNVAL] = _OTHER
_CHILDREN[_OBJECTS] = {_VIM + "obj": _OBJ, _VIM + "propSet": _PART}
_CHILDREN[_OBJECT_SET] = {_VIM + "obj": _OBJ, _VIM + "kind": _KIND, _VIM + "changeSet": _PART}
_CHILDREN[_PART] = {_VIM + "name": _NAME, _VIM + "op": _OP, _VIM + "val": _VAL}
_DEFAULT[_VAL] = _ITEM  # an array's items, whatever their names
_CHILDREN[_FAULT] = {"faultstring": _FAULTSTRING, "detail": _DETAIL}
# Kinds whose text (up to their first child, as ElementTree's ``text``) is read.
_READS_TEXT = [k in (_OBJ, _KIND, _NAME, _OP, _VAL, _ITEM, _TOKEN, _VERSION, _TRUNCATED, _FAULTSTRING)
               for k in range(_N_KINDS)]


def page_too_big(max_objects: int) -> VimLimitError:
    return VimLimitError("page_size", f"the page has more than page_size = {max_objects} objects, "
                                      "the most vCenter was asked for")


class _BoundedExpat:
    """expat with the bounds that hold whatever the document: no DTD, no text or tag longer than
    :data:`MAX_TEXT`. Subclasses handle the elements (and bound their depth)."""

    def __init__(self, *, namespaces: bool) -> None:
        parser = self._parser = pyexpat.ParserCreate(namespace_separator="}" if namespaces else None)
        parser.buffer_text = True
        parser.buffer_size = _PIECE
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._data
        parser.CommentHandler = self._other_event
        parser.ProcessingInstructionHandler = self._other_event
        parser.StartDoctypeDeclHandler = self._doctype
        parser.EntityDeclHandler = self._doctype
        parser.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_NEVER)
        self._events = 0  # elements started, comments, processing instructions
        self._run = 0  # length of the text being read
        self._stalled = 0  # bytes given to expat since anything was reported

    def _start(self, tag: str, attrs: dict[str, str]) -> None:
        raise NotImplementedError

    def _end(self, tag: str) -> None:
        raise NotImplementedError

    def _depth(self) -> int:
        raise NotImplementedError

    def feed(self, data: bytes) -> None:
        if len(data) <= _PIECE:
            self._feed(data)
            return
        view = memoryview(data)
        for at in range(0, len(data), _PIECE):
            self._feed(view[at:at + _PIECE])

    def _feed(self, piece: Any) -> None:
        mark = (self._events, self._depth(), self._run)
        try:
            self._parser.Parse(piece, False)
        except pyexpat.ExpatError as exc:
            raise VimProtocolError(f"malformed SOAP response: {exc}") from None
        if (self._events, self._depth(), self._run) != mark:
            self._stalled = 0
            return
        # Nothing reported: expat is holding one tag, comment or declaration that is not over.
        self._stalled += len(piece)
        if self._stalled > MAX_TEXT:
            raise VimLimitError("text", f"a tag or comment is longer than {MAX_TEXT // 1024} KiB")

    def _doctype(self, *_args: Any) -> None:
        raise VimLimitError("DTD", "the answer has a document type declaration, which SOAP forbids "
                                   "(its entities are never expanded)")

    def _other_event(self, *_args: Any) -> None:
        self._events += 1

    def _data(self, data: str) -> None:
        run = self._run + len(data)
        if run > MAX_TEXT:
            raise VimLimitError("text", f"a text is longer than {MAX_TEXT // 1024} KiB")
        self._run = run


def _too_deep() -> VimLimitError:
    return VimLimitError("depth", f"an element is nested deeper than {MAX_DEPTH} levels")


class ElementBounds(_BoundedExpat):
    """The bounds of one element (depth, text, tag) and no DTD, for an answer another parser
    reads (pyvmomi's): fed the same bytes, it raises where that parser should not go on."""

    def __init__(self) -> None:
        super().__init__(namespaces=False)
        self._level = 0

    def _depth(self) -> int:
        return self._level

    def _start(self, tag: str, attrs: dict[str, str]) -> None:
        self._level += 1
        if self._level > MAX_DEPTH:
            raise _too_deep()
        self._events += 1
        self._run = 0

    def _end(self, tag: str) -> None:
        self._level -= 1
        self._run = 0


class AnswerParser(_BoundedExpat):
    """One answer, fed in chunks, folded into ``records``; what it said besides its objects is
    left in its attributes (``token``, ``version``, ``truncated``, ``received``, ``fault``...).

    ``objects_left``: how many more objects (``<objects>`` and ``<objectSet>`` together) the page
    may hold; its owner lowers it by what the scanner took. None: no limit.
    """

    def __init__(self, records: Records, touched: set[str] | None = None) -> None:
        super().__init__(namespaces=True)
        self.records = records
        self.touched = touched
        self.objects = 0  # <objects> folded
        self.updates = 0  # <objectSet> folded
        self.objects_left: int | None = None
        self.max_objects: int | None = None
        self.token: str | None = None
        self.version = ""
        self.truncated = False
        self.received = False  # a returnval ended
        self.seen_body = False
        self.fault: VimFault | None = None
        self._stack = [_OTHER]
        self._buf: str | None = None  # the text of the element being read, until its first child
        self._leaf_text: str | None = None  # the text of a text element that has a child
        self._val_text: str | None = None  # the text of a value with items
        self._in_object = False
        self._elements = 0  # of the object being read
        self._updates_object = False  # <objectSet> (else <objects>)
        self._obj: tuple[str, str] | None = None
        self._obj_attr = ""
        self._kind: str | None = None
        self._props: dict[str, Any] = {}
        self._changes: list[Change] = []
        self._name: str | None = None
        self._op: str | None = None
        self._val: Any = None
        self._has_val = False
        self._val_type: str | None = None
        self._val_array = False
        self._items: list[Any] = []
        self._item_type: str | None = None
        self._fault_message: str | None = None
        self._fault_name: str | None = None
        self._detail_seen = False
        self._detail_children = 0

    def _depth(self) -> int:
        return len(self._stack)

    def close(self) -> None:
        """The end of the answer: raises if it was cut short, or if it was a fault."""
        try:
            self._parser.Parse(b"", True)
        except pyexpat.ExpatError as exc:
            raise VimProtocolError(f"SOAP response cut short or malformed: {exc}") from None
        if self.fault is not None:
            raise self.fault
        if not self.seen_body:
            raise VimProtocolError("not a SOAP response")

    # -- expat's events --------------------------------------------------------------------

    def _start(self, tag: str, attrs: dict[str, str]) -> None:
        stack = self._stack
        if len(stack) > MAX_DEPTH:
            raise _too_deep()
        self._events += 1
        self._run = 0
        parent = stack[-1]
        if self._buf is not None:  # the parent's text ends at its first child
            if parent == _VAL:
                self._val_text = self._buf or None
            else:
                self._leaf_text = self._buf or None
            self._buf = None
        kind = _CHILDREN[parent].get(tag, _DEFAULT[parent])
        if self._in_object:
            self._elements += 1
            if self._elements > MAX_OBJECT_ELEMENTS:
                raise VimLimitError("object", f"an object has more than {MAX_OBJECT_ELEMENTS:,} elements")
            if kind == _PART:
                self._name = self._op = self._val = None
                self._has_val = False
            elif kind == _VAL:
                val_type = self._val_type = attrs.get(_XSI_TYPE)
                self._val_array = is_array(val_type)
                self._items = []
            elif kind == _ITEM:
                self._item_type = attrs.get(_XSI_TYPE) or item_type(tag.rpartition("}")[2])
            elif kind == _OBJ:
                self._obj_attr = attrs.get("type") or ""
        elif kind in (_OBJECTS, _OBJECT_SET):
            self._in_object = True
            self._elements = 0
            self._updates_object = kind == _OBJECT_SET
            self._obj = self._kind = None
            self._props, self._changes = {}, []
        elif kind == _FAULT:
            self._fault_message = self._fault_name = None
            self._detail_seen = False
        elif kind == _DETAIL:
            if self._detail_seen:
                kind = _IGNORED  # ElementTree's find("detail"): the first one
            self._detail_seen = True
            self._detail_children = 0
        elif parent == _DETAIL:
            self._detail_children += 1
            if self._detail_children == 1:
                self._fault_name = _fault_name(tag, attrs.get(_XSI_TYPE))
        stack.append(kind)
        if _READS_TEXT[kind]:
            self._buf = ""

    def _data(self, data: str) -> None:
        run = self._run + len(data)
        if run > MAX_TEXT:
            raise VimLimitError("text", f"a text is longer than {MAX_TEXT // 1024} KiB")
        self._run = run
        if self._buf is not None:
            self._buf += data

    def _end(self, _tag: str) -> None:
        kind = self._stack.pop()
        self._run = 0
        if not _READS_TEXT[kind]:
            if kind == _PART:
                if self._name is not None:
                    value = self._val if self._has_val else None
                    if self._updates_object:
                        self._changes.append((self._name, self._op, value))
                    else:
                        self._props[self._name] = value
            elif kind in (_OBJECTS, _OBJECT_SET):
                self._fold(kind)
            elif kind == _RETURNVAL:
                self.received = True
            elif kind == _BODY:
                self.seen_body = True
            elif kind == _FAULT:
                self.fault = VimFault(self._fault_name or "SystemError", (self._fault_message or "").strip())
            return
        buf = self._buf
        if buf is not None:
            text = buf or None
            self._buf = None
        else:
            text = self._val_text if kind == _VAL else self._leaf_text
        if kind == _NAME:
            self._name = text
        elif kind == _VAL:
            self._val = self._items if self._val_array else converter(self._val_type)(text)
            self._has_val = True
        elif kind == _ITEM:
            if self._val_array:
                self._items.append(converter(self._item_type)(text))
        elif kind == _OBJ:
            self._obj = (self._obj_attr, text or "")
        elif kind == _OP:
            self._op = text
        elif kind == _KIND:
            self._kind = text
        elif kind == _TOKEN:
            self.token = text
        elif kind == _VERSION:
            self.version = text or ""
        elif kind == _TRUNCATED:
            self.truncated = text in ("true", "1")
        elif kind == _FAULTSTRING and self._fault_message is None:  # ElementTree's findtext: the first one
            self._fault_message = text or ""

    def _fold(self, kind: int) -> None:
        self._in_object = False
        obj = self._obj
        if kind == _OBJECTS:
            self.objects += 1
            if obj is not None:
                store_object(self.records, obj[0], obj[1], self._props)
        else:
            self.updates += 1
            if obj is not None:
                apply_update(self.records, self.touched, obj[0], obj[1], self._kind, self._changes)
        self._props, self._changes = {}, []
        left = self.objects_left
        if left is not None and self.objects + self.updates > left:
            raise page_too_big(self.max_objects or 0)


def _fault_name(tag: str, xsi_type: str | None) -> str:
    """The vSphere fault type of a fault's detail: its ``xsi:type``, else its element's name
    without the ``Fault`` suffix (``NotAuthenticatedFault``)."""
    name = (xsi_type or tag.rpartition("}")[2]).rpartition(":")[2]
    if xsi_type is None and name.endswith("Fault"):
        name = name[: -len("Fault")]
    return name
