"""A streaming decoder for the vSphere PropertyCollector calls ftreport makes on every collection.

pyvmomi turns every SOAP response into a graph of DataObjects before anyone sees a value; on a
vCenter with tens of thousands of VMs that decoding is most of ftreport's time and memory. This
module sends ``RetrievePropertiesEx``, ``ContinueRetrievePropertiesEx`` and ``WaitForUpdatesEx``
itself and folds the response, as it arrives from the socket in chunks, straight into the
per-object records of an inventory (moId -> {property path: value}), one ``<objects>`` /
``<objectSet>`` element at a time; neither the document nor a decoded object graph is ever held.
The chunks go through the scanner of the regular shape (``vimscan``) first; what it does not
fold goes, in order, to the XML parser (``vimparse``), which drops whatever ftreport does not
read as it streams. Values are decoded as pyvmomi would decode them (``vimrecords``). Each call
has a deadline and a size bound (``vimhttp``); a page larger than it asked for is an error.

SOAP faults become :class:`VimFault` carrying the fault's vSphere type name (``NotAuthenticated``,
``InvalidLogin``, ``RequestCanceled``...) so callers map them as they map pyvmomi's exceptions.
Session handling (login, logout, filters) stays with pyvmomi; this module only needs the session
cookie, the API version (SOAPAction) and the moIds of the collector and the view.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from .vimerrors import VimFault, VimLimitError, VimProtocolError
from .vimhttp import DEFAULT_MAX_ANSWER_SIZE, BoundedHTTPConnection, BoundedHTTPSConnection, Limits
from .vimparse import AnswerParser, page_too_big
from .vimrecords import Records
from .vimscan import RegularShapeScanner

__all__ = [
    "CHUNK_SIZE",
    "Records",
    "RetrievePage",
    "UpdatePage",
    "VimFault",
    "VimLimitError",
    "VimProtocolError",
    "VimSoapClient",
    "decode_retrieve",
    "decode_updates",
]

CHUNK_SIZE = 64 * 1024


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
    the parser (``vimparse``) never sees. ``max_objects``: the most objects the page may hold
    (the ``maxObjects`` or ``maxObjectUpdates`` the call asked for); more is an error.
    """

    def __init__(self, records: Records, touched: set[str] | None = None, *, scan: bool = True,
                 max_objects: int | None = None) -> None:
        self.parser = AnswerParser(records, touched)
        self.parser.max_objects = self.parser.objects_left = max_objects
        self.scanner = RegularShapeScanner(records, touched) if scan else None
        self._max = max_objects

    def feed(self, data: bytes) -> None:
        scanner = self.scanner
        if scanner is not None:
            data = scanner.feed(data)
            if self._max is not None:
                left = self._max - scanner.objects - scanner.updates
                if left < self.parser.objects + self.parser.updates:
                    raise page_too_big(self._max)
                self.parser.objects_left = left
            if not data:
                return
        self.parser.feed(data)

    def close(self) -> tuple[RetrievePage, UpdatePage]:
        """The end of the answer: what it said besides its objects (raises on a fault)."""
        scanner = self.scanner
        if scanner is not None:
            rest = scanner.flush()
            if rest:
                self.parser.feed(rest)
        self.parser.close()
        parser = self.parser
        objects = scanner.objects if scanner is not None else 0
        updates = scanner.updates if scanner is not None else 0
        return (RetrievePage(objects=parser.objects + objects, token=parser.token, scanned=objects),
                UpdatePage(received=parser.received, version=parser.version, truncated=parser.truncated,
                           updates=parser.updates + updates, scanned=updates))


def decode_retrieve(chunks: Iterable[bytes], records: Records, *, scan: bool = True,
                    max_objects: int | None = None) -> RetrievePage:
    """Fold a (Continue)RetrievePropertiesEx response into ``records``; raises VimFault on a fault,
    VimLimitError on a page of more than ``max_objects`` objects or another bound broken.

    ``scan=False``: the XML parser reads all of it, without the scanner of the regular shape."""
    decoder = _Decoder(records, scan=scan, max_objects=max_objects)
    for chunk in chunks:
        decoder.feed(chunk)
    return decoder.close()[0]


def decode_updates(chunks: Iterable[bytes], records: Records, touched: set[str] | None = None, *,
                   scan: bool = True, max_objects: int | None = None) -> UpdatePage:
    """Fold a WaitForUpdatesEx response (an UpdateSet, or none) into ``records``; the moIds of the
    objects it changed are added to ``touched`` when given. ``scan`` and ``max_objects`` as for
    :func:`decode_retrieve`."""
    decoder = _Decoder(records, touched, scan=scan, max_objects=max_objects)
    for chunk in chunks:
        decoder.feed(chunk)
    return decoder.close()[1]


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
    Every call ends within ``timeout`` seconds (``WaitForUpdatesEx``: plus the wait it asks
    for), and what vCenter sends is counted against ``max_answer_size``: one retrieval's pages
    together, or one update set's truncated parts together, count as one answer. A page may hold
    no more objects than it asked for.
    """

    def __init__(self, *, host: str, port: int, path: str, ssl_context: ssl.SSLContext | None,
                 timeout: float, session_id: str, soap_action: str,
                 max_answer_size: int = DEFAULT_MAX_ANSWER_SIZE) -> None:
        self._path = path
        self._headers = {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": soap_action,
            "Cookie": f'vmware_soap_session="{session_id}"',
            "Accept-Encoding": "identity",
        }
        self.limits = Limits(timeout=timeout, max_size=max_answer_size, per_call=False)
        if ssl_context is None:
            self._new: Callable[[], http.client.HTTPConnection] = (
                lambda: BoundedHTTPConnection(host, port, limits=self.limits))
        else:
            self._new = lambda: BoundedHTTPSConnection(host, port, limits=self.limits, context=ssl_context)
        self._conn: http.client.HTTPConnection | None = None
        self._page_size: int | None = None  # asked of the retrieval being continued
        self._truncated = False  # the last update set was truncated: the next call continues it

    def call(self, body: str, fold: Callable[[Iterable[bytes]], Any], *, grace: float = 0.0) -> Any:
        """POST one SOAP request; ``fold`` consumes the response body as chunks. ``grace``: the
        seconds the request asks vCenter to wait, on top of the timeout."""
        data = _ENVELOPE.format(body=body).encode()
        conn = self._conn
        if conn is None:
            conn = self._conn = self._new()
        self.limits.grace = grace
        try:
            conn.request("POST", self._path, body=data, headers=self._headers)
            response = conn.getresponse()
            ctype = response.getheader("Content-Type", "")
            if "xml" not in ctype:  # not read: an error page could be of any size
                raise VimProtocolError(f"HTTP {response.status} {response.reason} ({ctype or 'no content type'})")
            result = fold(_chunks(response, CHUNK_SIZE))
            response.read()  # the (empty) rest, so the connection can be reused
            if response.will_close:
                self.close()
            return result
        except BaseException:
            self.close()  # a half-read response leaves the connection unusable
            raise
        finally:
            self.limits.grace = 0.0

    def retrieve(self, collector: str, view: str, properties: Sequence[tuple[str, Sequence[str]]],
                 records: Records, max_objects: int | None) -> RetrievePage:
        options = f"<options><maxObjects>{int(max_objects)}</maxObjects></options>" if max_objects else "<options/>"
        body = (f'<RetrievePropertiesEx xmlns="urn:vim25">{_moref("_this", "PropertyCollector", collector)}'
                f"{filter_spec_xml('specSet', view, properties)}{options}</RetrievePropertiesEx>")
        self.limits.restart()  # a new retrieval: its pages count as one answer
        self._page_size = max_objects
        page: RetrievePage = self.call(body, lambda chunks: decode_retrieve(chunks, records, max_objects=max_objects))
        return page

    def continue_retrieve(self, collector: str, token: str, records: Records) -> RetrievePage:
        body = (f'<ContinueRetrievePropertiesEx xmlns="urn:vim25">'
                f'{_moref("_this", "PropertyCollector", collector)}<token>{escape(token)}</token>'
                "</ContinueRetrievePropertiesEx>")
        size = self._page_size
        page: RetrievePage = self.call(body, lambda chunks: decode_retrieve(chunks, records, max_objects=size))
        return page

    def wait_for_updates(self, collector: str, version: str, records: Records, *, max_wait_seconds: int,
                         max_object_updates: int | None = None, touched: set[str] | None = None) -> UpdatePage:
        extra = f"<maxObjectUpdates>{int(max_object_updates)}</maxObjectUpdates>" if max_object_updates else ""
        body = (f'<WaitForUpdatesEx xmlns="urn:vim25">{_moref("_this", "PropertyCollector", collector)}'
                f"<version>{escape(version)}</version><options><maxWaitSeconds>{int(max_wait_seconds)}"
                f"</maxWaitSeconds>{extra}</options></WaitForUpdatesEx>")
        if not self._truncated:
            self.limits.restart()  # a new update set (its truncated parts count as one answer)
        page: UpdatePage = self.call(
            body, lambda chunks: decode_updates(chunks, records, touched, max_objects=max_object_updates),
            grace=max_wait_seconds)
        self._truncated = page.truncated
        return page

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
