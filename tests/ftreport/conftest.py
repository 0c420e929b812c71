"""Fixtures for ftreport: the FT-capable vCenter simulator over TLS with a test CA, config files,
and helpers to run `ftreport` as a user would (a subprocess) or in-process with a recording server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.kit.ca import TLSFiles, server_tls
from tests.kit.wait import wait_for_file, wait_until

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
VCSIM_USER = "administrator@vsphere.local"
VCSIM_PASSWORD = "s3cret-vc"


_built: set[Path] = set()


def vcsim_binary() -> Path:
    """The simulator named by FTVCSIM, (re)built when missing or built from other sources.

    build.sh compares a hash of the sources with the binary's stamp and returns at once when they
    match, so a stale binary (one built from another main.go) is never used."""
    path = Path(os.environ.get("FTVCSIM") or REPO / ".build" / "ftvcsim")
    if path not in _built:
        subprocess.run([str(REPO / "tools" / "vcsim" / "build.sh"), str(path)], check=True, timeout=600)
        _built.add(path)
    return path


@dataclass
class Vcsim:
    """One ftvcsim process: SDK over TLS plus the loopback control endpoint."""

    workdir: Path
    tls: TLSFiles
    args: list[str] = field(default_factory=list)
    listen: str = "127.0.0.1:0"
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    control: str = ""

    def start(self, timeout: float = 60.0) -> None:
        ready = self.workdir / "ready.json"
        if ready.exists():
            ready.unlink()
        tmp = self.workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "vcsim.log"
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [str(vcsim_binary()), "-listen", self.listen, "-cert", str(self.tls.cert_path),
                 "-key", str(self.tls.key_path), "-username", VCSIM_USER, "-password", VCSIM_PASSWORD,
                 "-ready-file", str(ready), *self.args],
                stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, TMPDIR=str(tmp)),
            )
        info = json.loads(wait_for_file(ready, self.process, timeout, "ftvcsim", log))
        self.url, self.control = info["url"], info["control"]
        # Keep the port across restarts, as a restarted vCenter keeps its address.
        self.listen = self.url.split("://", 1)[1].split("/", 1)[0]

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """A crash: no clean shutdown."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def _call(self, method: str, path: str) -> Any:
        req = urllib.request.Request(self.control + path, method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def state(self, all_objects: bool = False) -> dict[str, Any]:
        return dict(self._call("GET", "/state" + ("?all=1" if all_objects else "")))

    def failover(self, group: str = "0", *, secondary: str = "now") -> dict[str, Any]:
        """Fail the group's primary over to its backup; with ``secondary="later"`` no new backup is
        made (the group is left in ``needSecondary`` until :meth:`add_secondary`)."""
        return dict(self._call("POST", f"/failover?group={group}&secondary={secondary}"))

    def add_secondary(self, group: str = "0", state: str = "starting") -> dict[str, Any]:
        """A new secondary for a group that lost one (``group="*"``: for every such group)."""
        return dict(self._call("POST", f"/secondary?group={group}&state={state}"))

    def set_ft_state(self, group: str, state: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/ftstate?group={group}&state={state}"))

    def remove_secondary(self, group: str = "0") -> dict[str, Any]:
        return dict(self._call("POST", f"/secondary/remove?group={group}"))

    def ft_off(self, group: str = "0") -> dict[str, Any]:
        """Turn FT off: the secondaries are deleted, the primary runs on as a plain VM."""
        return dict(self._call("POST", f"/ft/off?group={group}"))

    def destroy(self, vm_or_group: str) -> dict[str, Any]:
        """Delete a VM (every instance of it, for an FT VM)."""
        return dict(self._call("POST", f"/destroy?vm={vm_or_group}"))

    def fail_host(self, host: str) -> list[str]:
        """Fail a host; returns the UUIDs of the FT groups that now need a secondary."""
        return list(self._call("POST", f"/host/fail?host={host}")["needSecondary"])

    def power(self, vm: str, state: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/power?vm={vm}&state={state}"))

    def move(self, vm: str, host: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/move?vm={vm}&host={host}"))

    def expire_sessions(self) -> list[str]:
        """End every current SDK session (as expiry would); returns the session keys ended.

        Clients keep their cookie; their next call gets a NotAuthenticated fault."""
        return list(self._call("POST", "/sessions/expire")["expired"])


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """The simulator's TLS: a CA and a certificate for loopback from it."""
    return server_tls(tmp_path_factory.mktemp("vcsim-ca"))


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A CA that did not sign the simulator's certificate."""
    return server_tls(tmp_path_factory.mktemp("other-ca"))


def _start_vcsim(workdir: Path, tls: TLSFiles, args: list[str]) -> Vcsim:
    sim = Vcsim(workdir=workdir, tls=tls, args=args)
    sim.start()
    return sim


@pytest.fixture(scope="session")
def vcsim_session(tmp_path_factory: pytest.TempPathFactory, test_ca: TLSFiles) -> Iterator[Vcsim]:
    """A shared, never modified simulator: 2 clusters x 3 hosts, 4 VMs per cluster, 2 FT pairs."""
    sim = _start_vcsim(tmp_path_factory.mktemp("vcsim-shared"), test_ca,
                       ["-cluster", "2", "-host", "3", "-vm", "4", "-standalone-host", "1", "-ft", "2"])
    yield sim
    sim.stop()


@pytest.fixture
def vcsim(tmp_path: Path, test_ca: TLSFiles) -> Iterator[Vcsim]:
    """A simulator of the test's own (tests that fail over, restart or change it)."""
    sim = _start_vcsim(tmp_path / "vcsim", test_ca, ["-cluster", "1", "-host", "4", "-vm", "6", "-ft", "1"])
    yield sim
    sim.stop()


def write_config(path: Path, sections: Mapping[str, Mapping[str, object]]) -> Path:
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k}={v}" for k, v in values.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def esx_section(sim: Vcsim, ca: Path | None = None, **extra: object) -> dict[str, object]:
    return {"type": "esx", "server": sim.url, "username": VCSIM_USER, "password": VCSIM_PASSWORD,
            "ca_cert": ca or sim.tls.ca_path, **extra}


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment in which ftreport reads only the files a test names: the system root is an empty
    directory, so that a host's own rhsm.conf and consumer certificate are never used."""
    env = dict(os.environ)
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    env.update(FTREPORT_CONFIG=str(tmp_path / "no-main.conf"), FTREPORT_CONFIG_DIR=str(tmp_path / "no-dir"),
               FTREPORT_STATE_DIR=str(tmp_path / "state"), FTREPORT_ROOT=str(root), PYTHONUNBUFFERED="1")
    for key in ("FTREPORT_CONFIG", "FTREPORT_CONFIG_DIR", "FTREPORT_STATE_DIR", "FTREPORT_ROOT"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    env.pop("NOTIFY_SOCKET", None)
    return env


def run_ftreport(args: list[str], env: Mapping[str, str], timeout: float = 120,
                 stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ftreport", *args], env=dict(env), capture_output=True,
                          text=True, timeout=timeout, input=stdin)


class Daemon:
    """`ftreport` running in daemon mode as a subprocess, stderr collected to a file."""

    def __init__(self, args: list[str], env: Mapping[str, str], log: Path) -> None:
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115
        self.process = subprocess.Popen([sys.executable, "-m", "ftreport", *args], env=dict(env),
                                        stdout=subprocess.DEVNULL, stderr=self._log)

    def text(self) -> str:
        return self.log_path.read_text()

    def wait_log(self, needle: str, timeout: float = 30, count: int = 1) -> str:
        """The log once it holds ``needle`` ``count`` times (fails at once if the daemon exits first)."""

        def logged() -> str:
            text = self.text()
            if text.count(needle) >= count:
                return text
            if self.process.poll() is not None:
                raise AssertionError(f"ftreport exited with {self.process.returncode} before logging "
                                     f"{needle!r} (x{count}); log:\n{self.text()}")
            return ""

        return wait_until(logged, timeout, lambda: f"{needle!r} (x{count}) in the log; log:\n{self.text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        self._log.close()
        return self.process.returncode


@pytest.fixture
def daemons() -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(args: list[str], env: Mapping[str, str], log: Path) -> Daemon:
        d = Daemon(args, env, log)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.process.poll() is None:
            d.process.kill()
            d.process.wait()


class RecordingConnection:
    """A stand-in for ftagent's Connection that plays the check-in protocol and records bodies."""

    def __init__(self, server: Any, recorder: Recorder) -> None:
        self.recorder = recorder

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None,
                data: Any = None, headers: Mapping[str, str] | None = None) -> Any:
        return self.recorder.handle(method, path, params or {}, data)

    def close(self) -> None:
        pass


@dataclass
class Recorder:
    """What a recording server received; `fail` can be set to an exception to raise instead."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    heartbeats: int = 0
    fail: Exception | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def factory(self, server: Any, timeout: float) -> RecordingConnection:
        return RecordingConnection(server, self)

    def handle(self, method: str, path: str, params: Mapping[str, Any], data: Any) -> Any:
        with self.lock:
            self.calls.append((method, path))
            if self.fail is not None:
                raise self.fail
            if method == "POST" and path.startswith("/hypervisors/"):
                self.bodies.append(json.loads(data))
                self.times.append(time.monotonic())
                return {"id": f"job{len(self.bodies)}", "state": "CREATED"}
            if method == "GET" and path.startswith("/jobs/"):
                return {"id": path.rsplit("/", 1)[1], "state": "FINISHED", "resultData": {"created": []}}
            if method == "PUT" and path.endswith("/heartbeat"):
                self.heartbeats += 1
                return {"id": "hb", "state": "FINISHED"}
            if method == "GET" and path == "/status":
                return {"version": "test"}
        raise AssertionError(f"unexpected {method} {path}")

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15) -> dict[str, Any]:
        """The latest report body that matches ``predicate``, once one has come."""

        def matching() -> dict[str, Any] | None:
            with self.lock:
                return next((body for body in reversed(self.bodies) if predicate(body)), None)

        return wait_until(matching, timeout, lambda: f"a matching report; got {len(self.bodies)} reports")


class SourceWatch:
    """A source's ``watch()`` in a thread: every snapshot it yields, or the error that ended it."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.stop = threading.Event()
        self.snapshots: list[Any] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for snapshot in self.source.watch(self.stop):
                self.snapshots.append(snapshot)
        except BaseException as exc:  # reported by the test
            self.error = exc

    @property
    def latest(self) -> dict[str, Any] | None:
        """The report body of the latest snapshot (``None`` before the first)."""
        from ftreport.model import report_body

        return report_body(self.snapshots[-1]) if self.snapshots else None

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def ft_guests(body: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """instanceUUID -> {hypervisor, role, instances, guestId} for FT guests of a report body."""
    out = {}
    for hv in body["hypervisors"]:
        for g in hv["guestIds"]:
            attrs = g["attributes"]
            if "instanceUUID" in attrs:
                out[attrs["instanceUUID"]] = {"hypervisor": hv["hypervisorId"]["hypervisorId"],
                                              "role": attrs["ftinfo.role"],
                                              "instances": attrs["ftinfo.instanceUUIDs"],
                                              "guestId": g["guestId"], "state": g["state"]}
    return out


def held_back_factory(name: str, release: threading.Event) -> Callable[..., Any]:
    """A source factory whose source ``name`` starts watching only once ``release`` is set (a
    vCenter still busy with its first retrieval); the others start at once."""
    from ftreport.sources import create_source

    def factory(cfg: Any, *, progress: Any) -> Any:
        source = create_source(cfg, progress=progress)
        if cfg.name == name:
            real = source.watch

            def watch(stop: threading.Event) -> Any:
                release.wait(60)
                return real(stop)

            source.watch = watch
        return source

    return factory
