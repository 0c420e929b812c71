"""A real etcd cluster for the tests: three ``etcd`` members (Debian's ``etcd-server``) on loopback,
and the FT lease's history in it.

Each member has its own data directory and free client and peer ports; members can be killed and
started again (same data directory), so the fault tests can take quorum away and give it back.
Compaction is off (etcd's default), so a watch from revision 1 replays the whole history of a key:
:func:`history` and :class:`KeyWatch` read it through the JSON gateway with ``requests``.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.kit.guest import Guest
from tests.kit.lease import fingerprint
from tests.kit.wait import wait_until

__all__ = ["PREFIX", "EtcdCluster", "Event", "KeyWatch", "Period", "b64", "check_history", "etcd", "etcd_binary",
           "etcd_cluster", "free_ports", "history", "key_of", "periods", "unb64"]


def etcd_binary() -> str:
    path = shutil.which("etcd") or "/usr/bin/etcd"
    if not Path(path).exists():
        raise RuntimeError("etcd is not installed: scripts/install-deps.sh all installs Debian's etcd-server")
    return path


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, so no member outlives a killed run."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str | None) -> str:
    return base64.b64decode(text or "").decode()


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class EtcdCluster:
    """Three members on loopback; :meth:`start` them, :meth:`kill` and :meth:`restart` one, :meth:`stop` all."""

    root: Path
    size: int = 3
    members: list[Member] = field(default_factory=list)
    #: Client TLS: (CA file, server cert file, server key file); clients must show a certificate.
    tls: tuple[Path, Path, Path] | None = None

    def __post_init__(self) -> None:
        ports = free_ports(2 * self.size)
        for i in range(self.size):
            name = f"m{i}"
            self.members.append(Member(name, ports[2 * i], ports[2 * i + 1], self.root / name,
                                       self.root / f"{name}.log", scheme="https" if self.tls else "http"))
        # What the fixtures' own requests use: the CA, and a client certificate when TLS is on.
        self.verify: bool | str = str(self.tls[0]) if self.tls else True
        self.cert: tuple[str, str] | None = (str(self.tls[1]), str(self.tls[2])) if self.tls else None
        self.auth_token: str | None = None
        self.token = f"ftagent-test-{self.root.name}-{ports[0]}"

    @property
    def endpoints(self) -> str:
        return ",".join(m.url for m in self.members)

    def _launch(self, m: Member) -> None:
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        tls = []
        if self.tls:
            ca, cert, key = self.tls
            tls = ["--cert-file", str(cert), "--key-file", str(key), "--trusted-ca-file", str(ca),
                   "--client-cert-auth"]
        log = open(m.log, "ab")  # noqa: SIM115
        m.proc = subprocess.Popen(
            [etcd_binary(), "--name", m.name, "--data-dir", str(m.data_dir),
             "--listen-client-urls", m.url, "--advertise-client-urls", m.url,
             "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
             "--initial-cluster", initial, "--initial-cluster-token", self.token,
             "--initial-cluster-state", "new", "--heartbeat-interval", "100", "--election-timeout", "1000",
             "--auto-compaction-retention", "0", "--logger", "zap", "--log-level", "warn", *tls],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        log.close()

    def start(self, timeout: float = 30) -> EtcdCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        for m in self.members:
            self._launch(m)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until every running member answers and the cluster has a leader that accepts writes."""
        def healthy() -> bool:
            try:
                if all(self.status(m) is not None for m in self.members if m.alive()) and self.leader() is not None:
                    self.post(self.any_alive(), "kv/put", {"key": b64("/health"), "value": b64("ok")})
                    return True
            except requests.RequestException:
                pass
            return False

        wait_until(healthy, timeout, f"a healthy etcd cluster (logs in {self.root})", step=0.1)

    def any_alive(self, exclude: tuple[Member, ...] = ()) -> Member:
        return next(m for m in self.members if m.alive() and m not in exclude)

    def post(self, m: Member, path: str, body: dict[str, Any], timeout: float = 2) -> dict[str, Any]:
        """``POST /v3/{path}`` on member ``m`` as the cluster's administrator; the answer (raises on an error)."""
        headers = {"Authorization": self.auth_token} if self.auth_token else {}
        r = requests.post(f"{m.url}/v3/{path}", json=body, timeout=timeout, verify=self.verify, cert=self.cert,
                          headers=headers)
        r.raise_for_status()
        return dict(r.json())

    def enable_auth(self, user: str, password: str, prefix: str) -> None:
        """etcd's authentication on: ``root``, and ``user`` allowed to read and write under ``prefix``."""
        m = self.any_alive()
        self.post(m, "auth/user/add", {"name": "root", "password": "root-pw"})
        self.post(m, "auth/role/add", {"name": "root"})
        self.post(m, "auth/user/grant", {"user": "root", "role": "root"})
        self.post(m, "auth/user/add", {"name": user, "password": password})
        self.post(m, "auth/role/add", {"name": "ftagent"})
        self.post(m, "auth/role/grant", {"name": "ftagent", "perm": {
            "permType": "READWRITE", "key": b64(prefix), "range_end": b64(prefix[:-1] + chr(ord(prefix[-1]) + 1))}})
        self.post(m, "auth/user/grant", {"user": user, "role": "ftagent"})
        self.post(m, "auth/enable", {})
        self.auth_token = self.post(m, "auth/authenticate", {"name": "root", "password": "root-pw"})["token"]

    def status(self, m: Member) -> dict[str, Any] | None:
        try:
            return self.post(m, "maintenance/status", {}, timeout=1)
        except requests.RequestException:
            return None

    def leader(self) -> Member | None:
        """The member that is leader, as the running members see it (``None`` without quorum)."""
        for m in self.members:
            if not m.alive():
                continue
            st = self.status(m)
            if st and st.get("leader") and st.get("leader") != "0":
                for x in self.members:
                    xs = self.status(x) if x.alive() else None
                    if xs and xs["header"]["member_id"] == st["leader"]:
                        return x
        return None

    def kill(self, m: Member) -> None:
        """SIGKILL a member (its data directory stays for :meth:`restart`)."""
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait(timeout=10)

    def restart(self, m: Member) -> None:
        if not m.alive():
            self._launch(m)

    def heal(self, timeout: float = 30) -> None:
        """Every member running again, and a leader."""
        for m in self.members:
            self.restart(m)
        self.wait_healthy(timeout)

    def stop(self) -> None:
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.terminate()
        for m in self.members:
            if m.proc is not None:
                try:
                    m.proc.wait(timeout=3)  # a member without quorum may take long to stop cleanly
                except subprocess.TimeoutExpired:
                    m.proc.kill()
                    m.proc.wait()


@dataclass(frozen=True)
class Event:
    """One change of a key in etcd's history: ``PUT`` or ``DELETE`` at ``revision``, seen at ``seen`` (wall)."""

    type: str
    revision: int
    create_revision: int
    value: str
    lease: int
    seen: float


def _events(message: dict[str, Any], key: str, seen: float) -> list[Event]:
    out = []
    for ev in message.get("result", {}).get("events", []) or []:
        kv = ev.get("kv", {})
        if unb64(kv.get("key")) != key:
            continue
        out.append(Event(ev.get("type", "PUT"), int(kv.get("mod_revision", 0)), int(kv.get("create_revision", 0)),
                         unb64(kv.get("value")), int(kv.get("lease", 0)), seen))
    return out


class KeyWatch:
    """A live watch of one key from revision 1, stamping each event with the wall time it arrived.

    Connected to one member (``url``): keep that member running while it watches.  :meth:`sync` waits
    until every change up to now has arrived (a sentinel key beside the watched one is written and
    awaited), so the history read afterwards is complete.
    """

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.sentinel = key + "/~sync"
        self.events: list[Event] = []
        self._synced: set[str] = set()
        self._lock = threading.Condition()
        self._resp = requests.post(f"{url}/v3/watch", stream=True, timeout=(2, None), json={"create_request": {
            "key": b64(key), "range_end": b64(key + "0"),  # the key and key/... ("0" follows "/")
            "start_revision": 1}})
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for line in self._resp.iter_lines(chunk_size=1):
                if not line:
                    continue
                seen = time.time()
                message = json.loads(line)
                with self._lock:
                    self.events.extend(_events(message, self.key, seen))
                    for ev in message.get("result", {}).get("events", []) or []:
                        k = unb64(ev.get("kv", {}).get("key"))
                        if k == self.sentinel:
                            self._synced.add(unb64(ev["kv"].get("value")))
                    self._lock.notify_all()
        except (requests.RequestException, ValueError, AttributeError):
            pass

    def sync(self, timeout: float = 20) -> list[Event]:
        token = f"{time.time()}"
        deadline = time.monotonic() + timeout

        def sent() -> bool:
            try:
                requests.post(f"{self.url}/v3/kv/put", json={"key": b64(self.sentinel), "value": b64(token)},
                              timeout=2).raise_for_status()
            except requests.RequestException:
                return False
            return True

        wait_until(sent, timeout, f"the sentinel written through {self.url}", step=0.2)
        with self._lock:
            if not self._lock.wait_for(lambda: token in self._synced, max(0.1, deadline - time.monotonic())):
                raise AssertionError("the watch did not deliver the sentinel")
            return list(self.events)

    def close(self) -> None:
        # Closing the response while the reader thread is blocked in it would wait for that read:
        # shut the socket down first, so the read ends at once.
        conn = getattr(self._resp.raw, "connection", None) or getattr(self._resp.raw, "_connection", None)
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)
        self._resp.close()


def history(url: str, key: str) -> list[Event]:
    """The key's whole history (watch from revision 1), without arrival times."""
    watch = KeyWatch(url, key)
    try:
        return watch.sync()
    finally:
        watch.close()


# -- the FT lease in etcd -------------------------------------------------------------------------

#: Where the tests' guests keep their leases (``[lease] etcd_prefix``).
PREFIX = "/ftagent-test/leases"


def key_of(guest: Guest) -> str:
    """The etcd key of a registered guest's FT group lease."""
    from ftagent.identity import IdentityStore

    org = IdentityStore(guest.id_dir).load().org
    return f"{PREFIX}/{org}/{guest.virt_uuid.lower()}"


@dataclass(frozen=True)
class Period:
    holder: str  # the holder id the key is valued with
    generation: int
    start: float
    end: float | None  # wall time etcd's deletion was seen; None while the key exists

    @property
    def fingerprint(self) -> str:
        """The holder as ftagent shows it (its status names holders by fingerprint only)."""
        return fingerprint(self.holder)


def periods(events: list[Event]) -> list[Period]:
    """The key's holders in etcd's history, checked: a creation and a deletion in turn, never an overwrite."""
    out: list[Period] = []
    open_: Event | None = None
    for ev in events:
        if ev.type == "PUT":
            assert open_ is None, f"key overwritten while held: {open_} then {ev}"
            assert ev.create_revision == ev.revision, f"a put that did not create the key: {ev}"
            assert ev.lease, f"key created without an etcd lease: {ev}"
            open_ = ev
        else:
            assert open_ is not None, f"deletion without a holder: {ev}"
            out.append(Period(open_.value, open_.create_revision, open_.seen, ev.seen))
            open_ = None
    if open_ is not None:
        out.append(Period(open_.value, open_.create_revision, open_.seen, None))
    gens = [p.generation for p in out]
    assert gens == sorted(set(gens)), f"generations not increasing: {gens}"
    return out


def check_history(watch: KeyWatch, *fenced: Guest) -> list[Period]:
    """No two holders at once in etcd, and each fenced guest fenced before etcd deleted its key."""
    found = periods(watch.sync())
    for guest in fenced:
        holder = guest.status()["holder_fingerprint"]
        fence_time = guest.fences()[0][0]
        mine = [p for p in found if p.fingerprint == holder and p.start < fence_time]
        assert mine, f"{holder} fenced but never held the key: {found}"
        end = mine[-1].end
        assert end is None or fence_time < end, (
            f"{holder} fenced at {fence_time:.3f}, after etcd deleted its key at {end:.3f}")
    return found


# -- fixtures (registered in tests/ftagent/conftest.py) --------------------------------------------


@pytest.fixture(scope="package")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One 3-member cluster for the lease tests of the package."""
    c = EtcdCluster(tmp_path_factory.mktemp("etcd")).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def etcd(etcd_cluster: EtcdCluster) -> Iterator[EtcdCluster]:
    """The package's cluster with all its members running (a test that killed members gets them back)."""
    etcd_cluster.heal()
    yield etcd_cluster
    etcd_cluster.heal()
