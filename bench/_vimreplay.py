"""Stand-in vCenters for the many-vCenters benchmark: one simulator's answers, recorded, then
replayed by several servers at the pace the simulator answered them.

Ten govmomi simulators on this 2-core machine take 6-7 times as long to answer at once as one
alone: the servers, not the reporter, would be measured. Ten real vCenters run on their own
machines. So the answers of one simulator are recorded once (``Recording``, a TLS proxy that
notes each answer and how long the simulator took), and ``serve`` starts N servers that give
those same bytes after the same delay, costing next to no CPU while "thinking". Requests are
matched by method, path and body; anything not recorded gets a 500 (the bench then fails).

    python -m bench._vimreplay serve RECORDING CERT KEY N   # prints the N URLs as one JSON line
"""

from __future__ import annotations

import hashlib
import http.client
import json
import pickle
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_KEEP = ("content-type", "set-cookie")


def _key(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    seconds: float  # request sent -> whole answer read, at the simulator


def _server(handler: type[BaseHTTPRequestHandler], cert: Path, key: Path) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _reply(handler: BaseHTTPRequestHandler, answer: Answer) -> None:
    handler.send_response(answer.status)
    for k, v in answer.headers:
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(answer.body)))
    handler.end_headers()
    handler.wfile.write(answer.body)


@dataclass
class Recording:
    """A TLS proxy in front of ``upstream`` that records every answer; ``save`` writes them."""

    upstream: str
    cert: Path
    key: Path
    ca: Path
    answers: dict[str, Answer] = field(default_factory=dict)
    url: str = ""
    _server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        recording = self
        host, port = self.upstream.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
        client_ctx = ssl.create_default_context(cafile=str(self.ca))

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self, body: bytes) -> None:
                conn = http.client.HTTPSConnection(host, int(port), context=client_ctx, timeout=300)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() in ("cookie", "soapaction", "content-type")}
                    started = time.monotonic()
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    answer = Answer(resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() in _KEEP],
                                    data, time.monotonic() - started)
                finally:
                    conn.close()
                recording.answers[_key(self.command, self.path, body)] = answer
                _reply(self, answer)

            def do_GET(self) -> None:
                self._forward(b"")

            def do_POST(self) -> None:
                self._forward(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

        self._server = _server(Handler, self.cert, self.key)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}/sdk"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def save(self, path: Path) -> None:
        path.write_bytes(pickle.dumps(self.answers))


def serve(recording: Path, cert: Path, key: Path, count: int) -> list[ThreadingHTTPServer]:
    answers: dict[str, Answer] = pickle.loads(recording.read_bytes())

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as separate writes

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, body: bytes) -> None:
            answer = answers.get(_key(self.command, self.path, body))
            if answer is None:
                _reply(self, Answer(500, [("Content-Type", "text/plain")], b"not recorded", 0.0))
                return
            time.sleep(answer.seconds)  # the simulator's own time, without its CPU
            _reply(self, answer)

        def do_GET(self) -> None:
            self._answer(b"")

        def do_POST(self) -> None:
            self._answer(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

    return [_server(Handler, cert, key) for _ in range(count)]


def main() -> None:
    if len(sys.argv) != 6 or sys.argv[1] != "serve":
        sys.exit(__doc__)
    servers = serve(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]))
    print(json.dumps([f"https://127.0.0.1:{s.server_address[1]}/sdk" for s in servers]), flush=True)
    sys.stdin.read()  # until the bench closes our stdin


if __name__ == "__main__":
    main()
