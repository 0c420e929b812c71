"""A seeded fuzz run over every route of ftmock: never a 5xx, never a traceback, never a FAILED job.

Requests are generated from the server's own route table, as every kind of caller (admin, org admin
and reporter users, a user without an org, consumers of this and another org over mutual TLS,
anonymous, broken credentials), with real and hostile path values, query parameters, headers and bodies (valid bodies with one part
mutated, random JSON, deep nesting, huge numbers, lone surrogates, other encodings, raw bytes), and
a share of hand-broken HTTP framing over raw TLS sockets.

``FTMOCK_FUZZ_CASES`` (default 5000) sets how many requests; ``FTMOCK_FUZZ_SEED`` (default 10) the
seed. A failure prints the seed and the case, so a run can be repeated exactly.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import requests

from tests.conftest import FtmockServer
from tests.ftmock.conftest import Client, admin_client, checkin, hypervisor, make_key_and_csr, register
from tests.ftmock.test_failover import REPORT1, ft_guest
from tests.kit.ftmock import finished_job
from tests.kit.orgs import make_pool, new_org

CASES = int(os.environ.get("FTMOCK_FUZZ_CASES", "5000"))
SEED = int(os.environ.get("FTMOCK_FUZZ_SEED", "10"))


def route_templates(server: FtmockServer) -> list[tuple[str, str]]:
    """(method, path template) of every route, read from the server's own route table."""
    code = ("import json, sys, tempfile; from pathlib import Path; from ftmock.api import Api; "
            "from ftmock.ca import CertificateAuthority; from ftmock.store import Database; "
            "d = Path(tempfile.mkdtemp()); api = Api(Database(d / 'db'), CertificateAuthority.load_or_create(d)); "
            "print(json.dumps([(m, r.pattern) for m, r, _ in api.routes]))")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    routes = []
    for method, pattern in json.loads(out):
        template = re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", r"{\1}", pattern[1:].replace("/?$", ""))
        routes.append((method, template or "/"))
    return routes


class World:
    """Real objects to aim at, refreshed as the fuzzer deletes them."""

    def __init__(self, server: FtmockServer, tmp: Path) -> None:
        self.server, self.tmp = server, tmp
        self.org = new_org(server)
        self.other_org = new_org(server)
        self.pool = make_pool(server, self.org, "FUZZ", attributes={"virt_limit": "4"})
        checkin(server, self.org, REPORT1)
        self.consumers = [register(server, tmp, self.org, name=f"fuzz-{i}", facts={"virt.uuid": f"fuzz-vm-{i}"})
                          for i in range(2)]
        self.stranger = register(server, tmp, self.other_org, name="stranger")
        admin = admin_client(server)
        ent = admin.post(f"/consumers/{self.consumers[0].uuid}/entitlements?pool={self.pool}").json()
        self.ents = [e["id"] for e in ent] if isinstance(ent, list) else []
        self.jobs = [checkin(server, self.org, {"hypervisors": [hypervisor("fuzz-host", ["g1"])]})["id"]]
        self.uuids = [c["uuid"] for c in admin.get(f"/owners/{self.org}/consumers").json()]
        self.principals: dict[str, Any] = {}
        self.refresh_principals()

    def refresh_principals(self) -> None:
        s = self.server
        alive = [c for c in self.consumers
                 if admin_client(s).get(f"/consumers/{c.uuid}").status_code == 200]
        if len(alive) < len(self.consumers):
            n = random.randrange(10**6)
            alive.append(register(s, self.tmp, self.org, name=f"fuzz-new-{n}", facts={"virt.uuid": f"fuzz-vm-{n}"}))
            self.uuids.append(alive[-1].uuid)
        self.consumers = alive
        nobody = f"nobody-{self.org}"
        self.principals = {
            "admin": ("basic", s.admin_auth),
            "org-less user": ("basic", (nobody, "pw")),
            "org admin": ("basic", (f"orgadmin-{self.org}", "pw")),
            "org reporter": ("basic", (f"reporter-{self.org}", "pw")),
            "consumer": ("cert", (self.consumers[0].cert_path, self.consumers[0].key_path)),
            "other consumer": ("cert", (self.stranger.cert_path, self.stranger.key_path)),
            "anonymous": ("none", None),
            "wrong password": ("basic", ("admin", "wrong")),
            "bad header": ("header", "Basic !!!notbase64"),
            "repr header": ("header", "Basic b'" + base64.b64encode(b"admin:x").decode() + "'"),
        }


def hostile_string(rng: random.Random) -> str:
    return rng.choice([
        "", " ", "x" * rng.choice([1, 255, 256, 5000]), "\ud800", "\udfff-tail", "é☃\U0001f600", "\x00",
        "../../etc/passwd", "%00", "a/b", "' OR 1=1 --", "<script>", "null", "-1", "1e309", str(2**64),
        "٣", "0x10", " 5 ", "true", "admin", "FUZZ", "unlimited",
    ])


def hostile_number(rng: random.Random) -> Any:
    return rng.choice([0, -1, 1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 10**20, 10**400, 1.5, 1e30, -0.0,
                       float("inf"), float("nan"), True, False])


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10 if depth < 6 else 6)
    if kind == 0:
        return None
    if kind in (1, 2):
        return hostile_string(rng)
    if kind in (3, 4):
        return hostile_number(rng)
    if kind == 5:
        return rng.choice([True, False])
    if kind in (6, 7):
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["name", "facts", "type", "installedProducts", "csr", "holder", "generation", "ttl", "key",
            "displayName", "id", "attributes", "productId", "quantity", "startDate", "endDate", "pools",
            "autoAttach", "hypervisors", "guestIds", "hypervisorId", "guestId", "state", "instanceUUID",
            "ftinfo.role", "ftinfo.instanceUUIDs", "providedProducts", "label", "serial"]
    return {rng.choice(keys) if rng.random() < 0.8 else hostile_string(rng): random_json(rng, depth + 1)
            for _ in range(rng.randrange(5))}


def valid_body(rng: random.Random, method: str, template: str, world: World) -> Any:
    """A body the route would accept, so that mutations reach deep into the handler."""
    if template == "/consumers":
        _, csr = make_key_and_csr()
        return {"name": "fz", "type": {"label": "system"}, "facts": {"virt.uuid": f"fz-{rng.randrange(99)}"},
                "installedProducts": [{"productId": "FUZZ", "productName": "F"}],
                **({"csr": csr} if rng.random() < 0.5 else {})}
    if template.endswith("/lease"):
        return {"holder": rng.choice(["h1", "h2"]), "generation": rng.choice([None, 1, 2]), "ttl": rng.choice([1, 20])}
    if template == "/owners":
        return {"key": f"fz{rng.randrange(10**9)}", "displayName": "F"}
    if template.endswith("/products"):
        counts = {key: rng.choice(["2", "²", "9" * 30, "x", ""]) for key in ("sockets", "cores", "ram")
                  if rng.random() < 0.5}
        return {"id": rng.choice(["FUZZ", f"P{rng.randrange(50)}"]), "name": "p",
                "attributes": {"virt_limit": rng.choice(["2", "unlimited"]), **counts}, "providedProducts": ["x"]}
    if template.endswith("/pools"):
        return {"productId": "FUZZ", "quantity": rng.randrange(-1, 20)}
    if template.endswith("/activation_keys"):
        return {"name": f"k{rng.randrange(10**9)}", "autoAttach": True, "pools": [{"poolId": world.pool, "quantity": 1}]}
    if template.startswith("/hypervisors"):
        guests = [ft_guest(f"I{rng.randrange(4)}", rng.randrange(3), ["I0", "I1"], guest=f"vm-{rng.randrange(3)}"),
                  {"guestId": f"plain-{rng.randrange(5)}", "state": rng.randrange(6)}]
        return {"hypervisors": [hypervisor(f"fz-host-{rng.randrange(3)}", guests)]}
    if method == "PUT":
        return {"name": "renamed", "facts": {"a": "b", "virt.uuid": "changed"},
                "installedProducts": [{"productId": "FUZZ"}]}
    return {}


def mutate(rng: random.Random, value: Any) -> Any:
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        out = dict(value)
        out[key] = mutate(rng, value[key]) if rng.random() < 0.5 else random_json(rng, 3)
        return out
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        return [*value[:i], mutate(rng, value[i]), *value[i + 1:]]
    return random_json(rng, 3)


def encode(rng: random.Random, value: Any) -> bytes:
    text = json.dumps(value, allow_nan=True)
    roll = rng.random()
    if roll < 0.05:
        return text.encode("utf-16")
    if roll < 0.08:
        return text.encode("utf-32")
    if roll < 0.11:
        return b"[" * rng.choice([50, 5000, 200000])
    if roll < 0.14:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    if roll < 0.17:
        return text[: rng.randrange(len(text) + 1)].encode("utf-8", "surrogatepass")
    return text.encode("utf-8", "surrogatepass")


def fill(rng: random.Random, template: str, world: World) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        real = {"uuid": world.uuids + [c.uuid for c in world.consumers], "owner": [world.org, world.other_org],
                "pool": [world.pool], "ent": world.ents or ["none"], "job": world.jobs,
                "user": [f"nobody-{world.org}", "admin", f"orgadmin-{world.org}", f"reporter-{world.org}"]}.get(name, ["x"])
        if rng.random() < 0.7:
            return rng.choice(real)
        return requests.utils.quote(hostile_string(rng).encode("utf-8", "surrogatepass"), safe="")

    return re.sub(r"\{(\w+)\}", value, template)


def query(rng: random.Random, world: World) -> dict[str, str]:
    keys = ["owner", "activation_keys", "pool", "quantity", "serials", "holder", "generation", "reporter_id",
            "consumer", "type"]
    out: dict[str, str] = {}
    for _ in range(rng.randrange(4)):
        key = rng.choice(keys)
        out[key] = rng.choice([world.org, world.pool, "1", "h1", str(10**30), "1,2,x", "-5",
                               hostile_string(rng).encode("utf-8", "surrogatepass").decode("latin-1")])
    return out


# Callers that get past authentication are the ones that reach the handlers: weigh them up.
WEIGHTS = {"admin": 6, "org admin": 4, "org reporter": 2, "consumer": 5, "org-less user": 3, "other consumer": 3}

RAW_REQUESTS = [
    b"GET /candlepin/status HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"GET /candlepin/status HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST /candlepin/owners HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /candlepin/status HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n",
    b"\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/1.1 extra\r\n\r\n", b"GET /candlepin/status HTTP/2.0\r\n\r\n",
    b"PATCH /candlepin/status HTTP/1.1\r\n\r\n", b"GET /candlepin/status HTTP/1.1\r\nBad Header\r\n\r\n",
    b"GET /candlepin/status HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
    b"GET /candlepin/status HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    b"GET /candlepin/status HTTP/1.1\r\nContent-Length: \xef\xbc\x91\r\n\r\n",
    b"GET /candlepin/\xff\xfe HTTP/1.1\r\n\r\n",
    b"GET http://evil/candlepin/status HTTP/1.1\r\n\r\n",
    b"GET * HTTP/1.1\r\n\r\n",
    b"GET /candlepin/status HTTP/1.1\r\n" + b"X: y\r\n" * 150 + b"\r\n",
]


def raw_case(server: FtmockServer, rng: random.Random) -> int | None:
    """A hand-broken request over a raw TLS socket; the status answered, or None if none came."""
    request = rng.choice(RAW_REQUESTS)
    ctx = ssl.create_default_context(cafile=str(server.ca_path))
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(request)
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (ssl.SSLError, OSError):
            pass
    if not data:
        return None
    return int(data.split(b" ", 2)[1])


def sessions(server: FtmockServer, world: World) -> dict[str, requests.Session]:
    out = {}
    for name, (kind, cred) in world.principals.items():
        s = requests.Session()
        s.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
        s.verify = str(server.ca_path)
        if kind == "basic":
            s.auth = cred
        elif kind == "cert":
            s.cert = cred
        elif kind == "header":
            s.headers["Authorization"] = cred
        out[name] = s
    return out


def test_fuzz_every_route(tmp_path: Path) -> None:
    data = tmp_path / "fuzz"
    data.mkdir()
    server = FtmockServer(data_dir=data, extra_args=["--request-timeout", "2"])
    server.start()
    try:
        run_fuzz(server, tmp_path)
    finally:
        server.stop()
    log = (tmp_path / "fuzz.log").read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]
    assert "internal error" not in log


def run_fuzz(server: FtmockServer, tmp: Path) -> None:
    rng = random.Random(SEED)
    world = World(server, tmp)
    # An org-less user, as the store allows (issue 10, item 6).
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from ftmock.store import Database; "
            "from ftmock.auth import create_user, set_password; db = Database(Path(sys.argv[1]) / 'ftmock.db'); "
            "cm = db.transaction(); tx = cm.__enter__(); set_password(tx, sys.argv[2], 'pw', superadmin=False); "
            "create_user(tx, 'orgadmin-' + sys.argv[3], 'pw', sys.argv[3], 'admin'); "
            "create_user(tx, 'reporter-' + sys.argv[3], 'pw', sys.argv[3], 'reporter'); "
            "cm.__exit__(None, None, None); db.close()")
    subprocess.run([sys.executable, "-c", code, str(server.data_dir), f"nobody-{world.org}", world.org], check=True)
    routes = route_templates(server)
    assert len(routes) >= 36, routes
    sess = sessions(server, world)
    statuses: dict[int, int] = {}
    per_route: dict[tuple[str, str], int] = {}
    jobs: list[str] = []
    started = time.monotonic()
    for case in range(CASES):
        if case and case % 250 == 0:
            world.refresh_principals()
            sess = sessions(server, world)
        if rng.random() < 0.04:
            status = raw_case(server, rng)
            where = f"seed {SEED} case {case}: raw framing"
            assert status is None or status < 500, where
            continue
        method, template = rng.choice(routes)
        if rng.random() < 0.05:
            method = rng.choice(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"])
        path = fill(rng, template, world)
        roll = rng.random()
        body: bytes | None
        if method in ("GET", "HEAD") and roll < 0.8:
            body = None
        elif roll < 0.4:
            body = encode(rng, mutate(rng, valid_body(rng, method, template, world)))
        elif roll < 0.7:
            body = encode(rng, valid_body(rng, method, template, world))
        else:
            body = encode(rng, random_json(rng))
        headers = {"Content-Type": rng.choice(["application/json", "text/plain", "application/json; charset=utf-16"])}
        if rng.random() < 0.1:
            headers["X-Lease-Generation"] = rng.choice(["1", "x", str(10**25), "-1", ""])
        who = rng.choices(list(sess), weights=[WEIGHTS.get(name, 1) for name in sess])[0]
        try:
            r = sess[who].request(method, server.url + path, params=query(rng, world), data=body, headers=headers,
                                  timeout=30, allow_redirects=False)
        except requests.exceptions.ConnectionError as exc:
            raise AssertionError(f"seed {SEED} case {case}: {who} {method} {path}: connection failed: {exc}") from None
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        per_route[(method, template)] = per_route.get((method, template), 0) + 1
        where = f"seed {SEED} case {case}: {who} {method} {path} -> {r.status_code} {r.text[:300]}"
        assert r.status_code < 500, where
        if r.status_code >= 400 and method != "HEAD":
            assert isinstance(r.json().get("displayMessage"), str), where
        if r.status_code == 200 and template.startswith("/hypervisors/{owner}") and method == "POST":
            jobs.append(r.json()["id"])
    admin = admin_client(server)
    for job in jobs:
        state = finished_job(lambda job_id: admin.get(f"/jobs/{job_id}").json(), job, timeout=60)["state"]
        assert state == "FINISHED", f"job {job} of an accepted report FAILED"
    assert not [s for s in statuses if s >= 500]
    untouched = [r for r in routes if r not in per_route]
    assert not untouched or CASES < 500, f"routes never fuzzed: {untouched}"
    print(f"fuzz: {CASES} cases, seed {SEED}, {time.monotonic() - started:.1f} s, statuses {sorted(statuses.items())}, "
          f"{len(jobs)} reports accepted, 0 5xx")
    Client(server)  # the helper module stays importable for a rerun from a REPL
