"""A TLS proxy in front of the vCenter simulator that pages results as a real vCenter does.

govmomi's simulator ignores ``RetrieveOptions.maxObjects`` and ``WaitOptions.maxObjectUpdates``
and always answers with every object at once. A real vCenter cuts big results into pages: a
``token`` to pass to ``ContinueRetrievePropertiesEx``, or ``truncated`` update sets to be followed
by more ``WaitForUpdatesEx`` calls. This proxy forwards every request to the simulator and cuts its
real answers into such pages (the text of the simulator's own elements, untouched), so both
ftreport decoders can be run through the paging paths on real data.

It can also answer one chosen call with a SOAP fault recorded from the simulator (``inject``), or
answer every call of a method as a hostile vCenter would (``hostile``): slowly, too much, too deep.
The answers of ``hostile`` are made from the simulator's own (see :mod:`tests.ftreport.vimhostile`)
and streamed as they are made, so a flood of hundreds of MB costs the proxy no memory.
"""

from __future__ import annotations

import http.client
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_METHOD = re.compile(rb"<(?:\w+:)?Body[^>]*>\s*<(?:\w+:)?(\w+)")
_MAX_OBJECTS = re.compile(rb"<maxObjects[^>]*>(\d+)</maxObjects>")
_MAX_UPDATES = re.compile(rb"<maxObjectUpdates[^>]*>(\d+)</maxObjectUpdates>")
_TOKEN = re.compile(rb"<token[^>]*>([^<]*)</token>")
_THIS = re.compile(rb"<_this[^>]*>([^<]*)</_this>")
_VERSION = re.compile(rb"<version[^>]*>([^<]*)</version>")
_OBJECTS = re.compile(rb"<objects>.*?</objects>", re.S)
_OBJECT_SET = re.compile(rb"<objectSet>.*?</objectSet>", re.S)


@dataclass
class HostileAnswer:
    """What the proxy sends instead of a method's answer: the chunks ``body(real)`` gives, ``real``
    being the simulator's own answer (when ``forward``), each ``pace`` seconds after the previous;
    with ``drip_head``, the status line and headers too, one byte at a time. The answer has no
    length: it ends when the proxy closes the connection."""

    body: Callable[[bytes], Iterable[bytes]]
    pace: float = 0.0
    forward: bool = True
    drip_head: bool = False


_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\nConnection: close\r\n\r\n"


def _split(items: list[bytes], size: int) -> list[list[bytes]]:
    return [items[i:i + size] for i in range(0, len(items), size)] or [[]]


@dataclass
class PagingProxy:
    """Listens on 127.0.0.1 (TLS with the simulator's own certificate) and forwards to ``upstream``."""

    upstream: str  # the simulator's SDK URL
    cert: Path
    key: Path
    ca: Path
    pages: list[tuple[str, int]] = field(default_factory=list)  # (method, objects in the page) sent
    url: str = ""
    _server: ThreadingHTTPServer | None = None
    _tokens: dict[bytes, list[bytes]] = field(default_factory=dict)
    _updates: dict[bytes, tuple[bytes, list[bytes]]] = field(default_factory=dict)
    _faults: dict[str, bytes] = field(default_factory=dict)
    _hostile: dict[str, HostileAnswer] = field(default_factory=dict)
    arrived: dict[str, float] = field(default_factory=dict)  # method -> when its last hostile call came
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _serial: int = 0

    def __enter__(self) -> PagingProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, method: str, fault_file: Path) -> None:
        """Answer the next ``method`` call with this recorded SOAP fault (HTTP 500)."""
        with self._lock:
            self._faults[method] = fault_file.read_bytes()

    def hostile(self, method: str, answer: HostileAnswer | None) -> None:
        """Answer every ``method`` call (``GET``: the API version list) so; None: normally again."""
        with self._lock:
            if answer is None:
                self._hostile.pop(method, None)
            else:
                self._hostile[method] = answer

    def start(self) -> None:
        proxy = self
        hostport = self.upstream.split("://", 1)[1].split("/", 1)[0]
        host, port = hostport.rsplit(":", 1)
        client_ctx = ssl.create_default_context(cafile=str(self.ca))

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self, body: bytes | None) -> tuple[int, list[tuple[str, str]], bytes]:
                conn = http.client.HTTPSConnection(host, int(port), context=client_ctx, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() in ("cookie", "soapaction", "content-type")}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    keep = [(k, v) for k, v in resp.getheaders() if k.lower() in ("content-type", "set-cookie")]
                    return resp.status, keep, data
                finally:
                    conn.close()

            def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, method: str, answer: HostileAnswer, body: bytes | None) -> None:
                with proxy._lock:
                    proxy.arrived[method] = time.monotonic()
                real = self._forward(body)[2] if answer.forward else b""
                self.close_connection = True
                try:
                    for chunk in ((bytes([b]) for b in _HEAD) if answer.drip_head else (_HEAD,)):
                        self.wfile.write(chunk)
                        if answer.drip_head:
                            time.sleep(answer.pace)  # a real duration: the drip the deadline is tested on
                    for chunk in answer.body(real):
                        self.wfile.write(chunk)
                        if answer.pace:
                            time.sleep(answer.pace)  # a real duration: the drip the deadline is tested on
                except OSError:  # the client gave up (as it should): stop making the answer
                    pass

            def do_GET(self) -> None:
                with proxy._lock:
                    answer = proxy._hostile.get("GET")
                if answer is not None:
                    self._stream("GET", answer, None)
                    return
                self._reply(*self._forward(None))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                match = _METHOD.search(body)
                method = match.group(1).decode() if match else ""
                with proxy._lock:
                    fault = proxy._faults.pop(method, None)
                    hostile = proxy._hostile.get(method)
                if hostile is not None:
                    self._stream(method, hostile, body)
                    return
                if fault is not None:
                    self._reply(500, [("Content-Type", "text/xml; charset=utf-8")], fault)
                    return
                xml = [("Content-Type", "text/xml; charset=utf-8")]
                if method == "ContinueRetrievePropertiesEx":
                    token = _TOKEN.search(body)
                    self._reply(200, xml, proxy._next_retrieve(token.group(1) if token else b""))
                    return
                if method == "WaitForUpdatesEx":
                    this = _THIS.search(body)
                    version = _VERSION.search(body)
                    page = proxy._next_update(this.group(1) if this else b"", version.group(1) if version else b"")
                    if page is not None:
                        self._reply(200, xml, page)
                        return
                status, headers, data = self._forward(body)
                if status == 200 and method == "RetrievePropertiesEx":
                    limit = _MAX_OBJECTS.search(body)
                    if limit:
                        data = proxy._page_retrieve(data, int(limit.group(1)))
                elif status == 200 and method == "WaitForUpdatesEx":
                    limit = _MAX_UPDATES.search(body)
                    this = _THIS.search(body)
                    if limit and this:
                        data = proxy._page_updates(this.group(1), data, int(limit.group(1)))
                self._reply(status, headers, data)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True, name="vimproxy").start()
        self.url = f"https://127.0.0.1:{server.server_address[1]}/sdk"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- RetrievePropertiesEx: objects in pages of maxObjects, continued by token -------------

    def _page_retrieve(self, data: bytes, size: int) -> bytes:
        items = _OBJECTS.findall(data)
        first, last = data.find(b"<objects>"), data.rfind(b"</objects>") + len(b"</objects>")
        if first < 0:
            return data
        head, tail = data[:first], data[last:]
        pages = _split(items, size)
        with self._lock:
            serials = [self._serial + 1 + n for n in range(len(pages) - 1)]
            self._serial += len(pages) - 1
        docs = []
        for n, page in enumerate(pages):
            token = b"<token>%d</token>" % serials[n] if n < len(serials) else b""
            h = head if n == 0 else head.replace(b"<RetrievePropertiesExResponse", b"<ContinueRetrievePropertiesExResponse")
            t = tail if n == 0 else tail.replace(b"</RetrievePropertiesExResponse>",
                                                 b"</ContinueRetrievePropertiesExResponse>")
            docs.append(h + token + b"".join(page) + t)
        with self._lock:
            for n, serial in enumerate(serials):
                self._tokens[b"%d" % serial] = [docs[n + 1]]
            self.pages.append(("RetrievePropertiesEx", len(pages[0])))
        return docs[0]

    def _next_retrieve(self, token: bytes) -> bytes:
        with self._lock:
            doc = self._tokens.pop(token, [b""])[0]
            self.pages.append(("ContinueRetrievePropertiesEx", len(_OBJECTS.findall(doc))))
        return doc

    # -- WaitForUpdatesEx: update sets of maxObjectUpdates, truncated until the last ----------

    def _page_updates(self, collector: bytes, data: bytes, size: int) -> bytes:
        items = _OBJECT_SET.findall(data)
        if len(items) <= size:
            with self._lock:
                self.pages.append(("WaitForUpdatesEx", len(items)))
            return data
        first, last = data.find(b"<objectSet>"), data.rfind(b"</objectSet>") + len(b"</objectSet>")
        head, tail = data[:first], data[last:]
        version = _VERSION.search(head)
        real = version.group(1) if version else b""
        pages = _split(items, size)
        docs: list[bytes] = []
        for n, page in enumerate(pages):
            if n + 1 < len(pages):
                marker = b"proxy-%d-%d" % (id(self), n)
                h = head.replace(b"<version>" + real + b"</version>", b"<version>" + marker + b"</version>")
                t = tail.replace(b"</filterSet>", b"</filterSet><truncated>true</truncated>", 1)
                docs.append(h + b"".join(page) + t)
            else:
                docs.append(head + b"".join(page) + tail)
        with self._lock:
            self._updates[collector] = (b"proxy-%d-0" % id(self), docs[1:])
            self.pages.append(("WaitForUpdatesEx", size))
        return docs[0]

    def _next_update(self, collector: bytes, version: bytes) -> bytes | None:
        with self._lock:
            pending = self._updates.get(collector)
            if pending is None or pending[0] != version or not pending[1]:
                return None
            doc, rest = pending[1][0], pending[1][1:]
            n = int(version.rsplit(b"-", 1)[1]) + 1
            if rest:
                self._updates[collector] = (b"proxy-%d-%d" % (id(self), n), rest)
            else:
                del self._updates[collector]
            self.pages.append(("WaitForUpdatesEx", len(_OBJECT_SET.findall(doc))))
            return doc


def iter_pages(proxy: PagingProxy, method: str) -> Iterator[int]:
    """Object counts of the pages of ``method`` the proxy sent, in order."""
    return (n for m, n in proxy.pages if m == method)
