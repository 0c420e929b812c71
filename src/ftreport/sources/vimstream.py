"""A streaming decoder for the vSphere PropertyCollector calls ftreport makes on every collection.

pyvmomi turns every SOAP response into a graph of DataObjects before anyone sees a value; on a
vCenter with tens of thousands of VMs that decoding is most of ftreport's time and memory. This
module sends ``RetrievePropertiesEx``, ``ContinueRetrievePropertiesEx`` and ``WaitForUpdatesEx``
itself and folds the response, as it arrives from the socket in chunks, straight into the
per-object records of an inventory (moId -> {property path: value}), one ``<objects>`` /
``<objectSet>`` element at a time; neither the document nor a decoded object graph is ever held.
The chunks go through the scanner of the regular shape (``vimscan``) first; what it does not
fold goes, in order, to ElementTree's pull parser. Values are decoded as pyvmomi would decode
them (``vimrecords``).

SOAP faults become :class:`VimFault` carrying the fault's vSphere type name (``NotAuthenticated``,
``InvalidLogin``, ``RequestCanceled``...) so callers map them as they map pyvmomi's exceptions.
Session handling (login, logout, filters) stays with pyvmomi; this module only needs the session
cookie, the API version (SOAPAction) and the moIds of the collector and the view.
"""

from __future__ import annotations

import http.client
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from .vimrecords import Change, Records, apply_update, is_array, item_type, scalar, store_object
from .vimscan import RegularShapeScanner

__all__ = [
    "CHUNK_SIZE",
    "Records",
    "RetrievePage",
    "UpdatePage",
    "VimFault",
    "VimProtocolError",
    "VimSoapClient",
    "decode_retrieve",
    "decode_updates",
]

CHUNK_SIZE = 64 * 1024

_SOAP = "{http://schemas.xmlsoap.org/soap/envelope/}"
_VIM = "{urn:vim25}"
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"

_T_OBJECTS = _VIM + "objects"
_T_OBJECT_SET = _VIM + "objectSet"
_T_OBJ = _VIM + "obj"
_T_PROP_SET = _VIM + "propSet"
_T_CHANGE_SET = _VIM + "changeSet"
_T_NAME = _VIM + "name"
_T_VAL = _VIM + "val"
_T_OP = _VIM + "op"
_T_KIND = _VIM + "kind"
_T_TOKEN = _VIM + "token"
_T_VERSION = _VIM + "version"
_T_TRUNCATED = _VIM + "truncated"
_T_RETURNVAL = _VIM + "returnval"
_T_FILTER_SET = _VIM + "filterSet"
_T_FAULT = _SOAP + "Fault"
_T_BODY = _SOAP + "Body"

class VimFault(Exception):
    """A SOAP fault from vCenter: ``fault`` is the vSphere fault type (``NotAuthenticated``...)."""

    def __init__(self, fault: str, message: str) -> None:
        self.fault = fault
        self.message = message
        super().__init__(f"{fault}: {message}" if message else fault)


class VimProtocolError(Exception):
    """A response that is not the SOAP document the call promises (HTML error page, cut short...)."""


def _value(val: ET.Element) -> Any:
    xsi_type = val.get(_XSI_TYPE)
    if is_array(xsi_type):
        # ArrayOfString, ArrayOfInt, ArrayOfManagedObjectReference...: one child per item.
        return [scalar(item.text, item.get(_XSI_TYPE) or item_type(item.tag.rpartition("}")[2])) for item in val]
    return scalar(val.text, xsi_type)


def _fault(elem: ET.Element) -> VimFault:
    message = (elem.findtext("faultstring") or "").strip()
    detail = elem.find("detail")
    name = "SystemError"
    if detail is not None and len(detail):
        first = detail[0]
        name = first.get(_XSI_TYPE) or first.tag.rpartition("}")[2]
        name = name.rpartition(":")[2]
        if name.endswith("Fault") and first.get(_XSI_TYPE) is None:
            name = name[: -len("Fault")]
    return VimFault(name, message)


def _parts(elem: ET.Element) -> tuple[str | None, str | None, ET.Element | None]:
    """(name, op, val) of a ``propSet`` or ``changeSet`` element (op: changeSet only)."""
    name = op = val = None
    for part in elem:
        tag = part.tag
        if tag == _T_NAME:
            name = part.text
        elif tag == _T_VAL:
            val = part
        elif tag == _T_OP:
            op = part.text
    return name, op, val


@dataclass
class RetrievePage:
    """What one RetrievePropertiesEx / ContinueRetrievePropertiesEx page said besides its objects."""

    objects: int = 0
    token: str | None = None
    scanned: int = 0  # of the objects, those the scanner of the regular shape folded


@dataclass
class UpdatePage:
    """What one WaitForUpdatesEx answer said besides its changes (``None`` result: nothing changed)."""

    received: bool = False
    version: str = ""
    truncated: bool = False
    updates: int = 0
    scanned: int = 0  # of the updates, those the scanner of the regular shape folded


class _Decoder:
    """Folds one SOAP response, fed in chunks, into ``records``.

    The chunks go through the scanner of the regular shape first (``vimscan``): what it folds,
    the parser never sees. The rest is parsed with only end events asked for: a finished
    ``objects``/``objectSet`` element has all its children, is folded and then emptied. Start
    events would double the Python-level work for nothing. The emptied shells stay in their
    parent until it ends, which bounds them to one page (``maxObjects``/``maxObjectUpdates``).
    """

    def __init__(self, records: Records, touched: set[str] | None = None, *, scan: bool = True) -> None:
        self.records = records
        self.touched = touched
        self._parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("end",))
        self.scanner = RegularShapeScanner(records, touched) if scan else None
        self.fault: VimFault | None = None
        self.retrieve = RetrievePage()
        self.update = UpdatePage()
        self._seen_body = False

    def feed(self, data: bytes) -> None:
        if self.scanner is not None:
            data = self.scanner.feed(data)
            if not data:
                return
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        try:
            self._parser.feed(data)
            self._drain()  # the pull parser keeps a syntax error to raise it from here
        except ET.ParseError as exc:
            raise VimProtocolError(f"malformed SOAP response: {exc}") from exc

    def _drain(self) -> None:
        records = self.records
        # Only end events are asked for: every item is an Element.
        events: Iterator[tuple[str, ET.Element]] = self._parser.read_events()  # type: ignore[assignment]
        for _event, elem in events:
            tag = elem.tag
            if tag == _T_OBJECTS:
                self._fold_object_content(elem, records)
                self.retrieve.objects += 1
                elem.clear()
            elif tag == _T_OBJECT_SET:
                self._fold_object_update(elem, records, self.touched)
                self.update.updates += 1
                elem.clear()
            elif tag == _T_TOKEN:
                self.retrieve.token = elem.text or None
            elif tag == _T_VERSION:
                self.update.version = elem.text or ""
            elif tag == _T_TRUNCATED:
                self.update.truncated = elem.text in ("true", "1")
            elif tag == _T_RETURNVAL:
                self.update.received = True
                elem.clear()
            elif tag == _T_FILTER_SET:
                elem.clear()
            elif tag == _T_FAULT:
                self.fault = _fault(elem)
            elif tag == _T_BODY:
                self._seen_body = True

    @staticmethod
    def _fold_object_content(elem: ET.Element, records: Records) -> None:
        obj = None
        props: dict[str, Any] = {}
        for child in elem:  # obj, then propSet* (in the WSDL's order, not relied upon)
            tag = child.tag
            if tag == _T_PROP_SET:
                name, _op, val = _parts(child)
                if name is not None:
                    props[name] = None if val is None else _value(val)
            elif tag == _T_OBJ:
                obj = child
        if obj is not None:
            store_object(records, obj.get("type") or "", obj.text or "", props)

    @staticmethod
    def _fold_object_update(elem: ET.Element, records: Records, touched: set[str] | None) -> None:
        obj = kind = None
        changes: list[Change] = []
        for child in elem:  # kind, obj, changeSet* (in the WSDL's order, not relied upon)
            tag = child.tag
            if tag == _T_CHANGE_SET:
                name, op, val = _parts(child)
                if name is not None:
                    changes.append((name, op, None if val is None else _value(val)))
            elif tag == _T_OBJ:
                obj = child
            elif tag == _T_KIND:
                kind = child.text
        if obj is not None:
            apply_update(records, touched, obj.get("type") or "", obj.text or "", kind, changes)

    def close(self) -> None:
        if self.scanner is not None:
            rest = self.scanner.flush()
            if rest:
                self._parse(rest)
            self.retrieve.objects += self.scanner.objects
            self.retrieve.scanned = self.scanner.objects
            self.update.updates += self.scanner.updates
            self.update.scanned = self.scanner.updates
        try:
            self._parser.close()
            self._drain()
        except ET.ParseError as exc:
            raise VimProtocolError(f"SOAP response cut short or malformed: {exc}") from exc
        if self.fault is not None:
            raise self.fault
        if not self._seen_body:
            raise VimProtocolError("not a SOAP response")


def decode_retrieve(chunks: Iterable[bytes], records: Records, *, scan: bool = True) -> RetrievePage:
    """Fold a (Continue)RetrievePropertiesEx response into ``records``; raises VimFault on a fault.

    ``scan=False``: the XML parser reads all of it, without the scanner of the regular shape."""
    decoder = _Decoder(records, scan=scan)
    for chunk in chunks:
        decoder.feed(chunk)
    decoder.close()
    return decoder.retrieve


def decode_updates(chunks: Iterable[bytes], records: Records, touched: set[str] | None = None, *,
                   scan: bool = True) -> UpdatePage:
    """Fold a WaitForUpdatesEx response (an UpdateSet, or none) into ``records``; the moIds of the
    objects it changed are added to ``touched`` when given. ``scan`` as for :func:`decode_retrieve`."""
    decoder = _Decoder(records, touched, scan=scan)
    for chunk in chunks:
        decoder.feed(chunk)
    decoder.close()
    return decoder.update


# -- requests -----------------------------------------------------------------------------------

_ENVELOPE = ('<?xml version="1.0" encoding="UTF-8"?>'
             '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
             'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
             'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
             '<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>')


def _moref(tag: str, kind: str, moid: str) -> str:
    return f'<{tag} type="{escape(kind)}">{escape(moid)}</{tag}>'


def filter_spec_xml(tag: str, view: str, properties: Sequence[tuple[str, Sequence[str]]]) -> str:
    """A PropertyFilterSpec: the given properties of every object in a ContainerView."""
    prop_sets = "".join(
        "<propSet><type>{}</type>{}</propSet>".format(
            escape(kind), "".join(f"<pathSet>{escape(p)}</pathSet>" for p in paths))
        for kind, paths in properties)
    return (f"<{tag}>{prop_sets}<objectSet>{_moref('obj', 'ContainerView', view)}<skip>true</skip>"
            '<selectSet xsi:type="TraversalSpec"><name>view</name><type>ContainerView</type>'
            f"<path>view</path><skip>false</skip></selectSet></objectSet></{tag}>")


def _chunks(response: http.client.HTTPResponse, size: int) -> Iterable[bytes]:
    while True:
        data = response.read1(size) if hasattr(response, "read1") else response.read(size)
        if not data:
            return
        yield data


class VimSoapClient:
    """Raw SOAP calls on an existing vCenter session (cookie and API version from pyvmomi's stub).

    One keep-alive connection, verified with the same SSL context the session was opened with.
    """

    def __init__(self, *, host: str, port: int, path: str, ssl_context: ssl.SSLContext | None,
                 timeout: float, session_id: str, soap_action: str,
                 connection: Callable[[], http.client.HTTPConnection] | None = None) -> None:
        self._path = path
        self._headers = {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": soap_action,
            "Cookie": f'vmware_soap_session="{session_id}"',
            "Accept-Encoding": "identity",
        }
        if connection is not None:
            self._new = connection
        elif ssl_context is None:
            self._new = lambda: http.client.HTTPConnection(host, port, timeout=timeout)
        else:
            self._new = lambda: http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl_context)
        self._conn: http.client.HTTPConnection | None = None

    def call(self, body: str, fold: Callable[[Iterable[bytes]], Any]) -> Any:
        """POST one SOAP request; ``fold`` consumes the response body as chunks."""
        data = _ENVELOPE.format(body=body).encode()
        conn = self._conn
        if conn is None:
            conn = self._conn = self._new()
        try:
            conn.request("POST", self._path, body=data, headers=self._headers)
            response = conn.getresponse()
            ctype = response.getheader("Content-Type", "")
            if "xml" not in ctype:
                response.read()
                raise VimProtocolError(f"HTTP {response.status} {response.reason} ({ctype or 'no content type'})")
            result = fold(_chunks(response, CHUNK_SIZE))
            response.read()  # the (empty) rest, so the connection can be reused
            if response.will_close:
                self.close()
            return result
        except BaseException:
            self.close()  # a half-read response leaves the connection unusable
            raise

    def retrieve(self, collector: str, view: str, properties: Sequence[tuple[str, Sequence[str]]],
                 records: Records, max_objects: int | None) -> RetrievePage:
        options = f"<options><maxObjects>{int(max_objects)}</maxObjects></options>" if max_objects else "<options/>"
        body = (f'<RetrievePropertiesEx xmlns="urn:vim25">{_moref("_this", "PropertyCollector", collector)}'
                f"{filter_spec_xml('specSet', view, properties)}{options}</RetrievePropertiesEx>")
        page: RetrievePage = self.call(body, lambda chunks: decode_retrieve(chunks, records))
        return page

    def continue_retrieve(self, collector: str, token: str, records: Records) -> RetrievePage:
        body = (f'<ContinueRetrievePropertiesEx xmlns="urn:vim25">'
                f'{_moref("_this", "PropertyCollector", collector)}<token>{escape(token)}</token>'
                "</ContinueRetrievePropertiesEx>")
        page: RetrievePage = self.call(body, lambda chunks: decode_retrieve(chunks, records))
        return page

    def wait_for_updates(self, collector: str, version: str, records: Records, *, max_wait_seconds: int,
                         max_object_updates: int | None = None, touched: set[str] | None = None) -> UpdatePage:
        extra = f"<maxObjectUpdates>{int(max_object_updates)}</maxObjectUpdates>" if max_object_updates else ""
        body = (f'<WaitForUpdatesEx xmlns="urn:vim25">{_moref("_this", "PropertyCollector", collector)}'
                f"<version>{escape(version)}</version><options><maxWaitSeconds>{int(max_wait_seconds)}"
                f"</maxWaitSeconds>{extra}</options></WaitForUpdatesEx>")
        page: UpdatePage = self.call(body, lambda chunks: decode_updates(chunks, records, touched))
        return page

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
