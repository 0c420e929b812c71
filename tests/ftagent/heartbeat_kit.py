"""Helpers for the lease heartbeat tests: guests in temporary directories, agent processes, the log check."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FtmockServer
from tests.ftmock.conftest import admin_client

__all__ = [
    "Guest",
    "assert_no_overlap",
    "clone_guest",
    "lease_log",
    "make_guest",
    "overlaps",
    "wait_for",
]

ROOT = Path(__file__).resolve().parents[2]


_vm_numbers = itertools.count()


def unique_vm(prefix: str) -> str:
    """A virt.uuid no other test of this run (or of a run beside it) uses."""
    return f"{prefix}-vm-{os.getpid()}-{next(_vm_numbers)}"


@pytest.fixture
def guests() -> Iterator[list[Guest]]:
    """Guests a test starts; their processes are killed when it ends, whatever happened."""
    made: list[Guest] = []
    yield made
    for g in made:
        g.kill_all()


def wait_for(pred: Callable[[], Any], timeout: float, what: str = "condition", step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


@dataclass
class Guest:
    """One agent installation: a config file and its directories under ``root``."""

    root: Path
    server: FtmockServer
    lease: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.root / "ftagent.conf"

    @property
    def status_file(self) -> Path:
        return self.root / "lease.json"

    @property
    def marker(self) -> Path:
        return self.root / "fenced.txt"

    @property
    def log(self) -> Path:
        return self.root / "heartbeat.log"

    def write_config(self, **lease: str) -> None:
        self.lease.update(lease)
        lines = [
            "[server]", f"url = {self.server.url}", f"ca_cert = {self.server.ca_path}", "timeout = 5", "",
            "[agent]", "identity_dir = identity", "entitlement_dir = entitlement", "facts_dir = facts",
            "product_dir = products", "lock_file = ftagent.lock", "",
            "[lease]", *(f"{k} = {v}" for k, v in self.lease.items()), "",
        ]
        self.config.write_text("\n".join(lines))

    def uuid(self) -> str:
        from ftagent.identity import IdentityStore

        return IdentityStore(self.root / "identity").load().uuid

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.status_file.read_text()))
        except (OSError, ValueError):
            return {}

    def state(self) -> str | None:
        return self.status().get("state")

    def fences(self) -> list[tuple[float, str]]:
        """(wall time, reason) of every run of the fence command."""
        if not self.marker.exists():
            return []
        out = []
        for line in self.marker.read_text().splitlines():
            when, _, reason = line.partition(" ")
            out.append((float(when), reason))
        return out

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHONUNBUFFERED="1")
        env.pop("NOTIFY_SOCKET", None)
        env.update(extra or {})
        return env

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ftagent", "--config", str(self.config), *args],
                              capture_output=True, text=True, timeout=timeout, env=self.env())

    def start(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.log, "ab")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "ftagent", "--config", str(self.config), "-v",
                                 "heartbeat", *args], stdout=log, stderr=subprocess.STDOUT, env=self.env(env))
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
        if proc.poll() is None:
            with_signal(proc, signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with_signal(proc, signal.SIGCONT)
                proc.kill()
                proc.wait()


def with_signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


def _marker_command(marker: Path) -> str:
    return f"sh -c 'echo \"$(date +%s.%N) $1\" >> {marker}' fence"


def make_guest(server: FtmockServer, root: Path, org: str, virt_uuid: str, **lease: str) -> Guest:
    """Register a guest with ``virt_uuid`` through the ftagent library; lease defaults for tests."""
    from ftagent.agent import Agent
    from ftagent.config import load_config

    root.mkdir(parents=True, exist_ok=True)
    (root / "facts").mkdir(exist_ok=True)
    (root / "facts" / "virt.facts").write_text(json.dumps({"virt.uuid": virt_uuid, "virt.is_guest": "true"}))
    defaults = {"renew_interval": "0.5", "ttl": "3", "margin": "1", "fence_timeout": "0.5",
                "status_file": "lease.json", "fence_command": _marker_command(root / "fenced.txt")}
    defaults.update(lease)
    guest = Guest(root, server, defaults)
    guest.write_config()
    with Agent(load_config(guest.config)) as agent:
        agent.register(org, username=server.admin_auth[0], password=server.admin_auth[1], name=root.name)
    return guest


def clone_guest(guest: Guest, root: Path, *, share_holder: bool = False, **lease: str) -> Guest:
    """Another instance of the same guest (same identity and facts); its own status and marker.

    ``share_holder`` copies the holder id, as the two instances of one FT VM share memory and disk.
    """
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(guest.root / "identity", root / "identity", symlinks=True)
    shutil.copytree(guest.root / "facts", root / "facts")
    settings = dict(guest.lease, fence_command=_marker_command(root / "fenced.txt"))
    settings.update(lease)
    clone = Guest(root, guest.server, settings)
    clone.write_config()
    if share_holder:
        shutil.copy(guest.root / "lease.holder", root / "lease.holder")
    return clone


def lease_log(server: FtmockServer, consumer: str) -> list[dict[str, Any]]:
    r = admin_client(server).get(f"/consumers/{consumer}/lease/log")
    assert r.status_code == 200, r.text
    return list(r.json())


def _periods(log: list[dict[str, Any]]) -> Iterator[tuple[str, float, float]]:
    """Valid periods ``(holder, start, end)``: each entry is valid from its start to its expiry,
    cut short by a later release (or by a later entry of the same holder, which supersedes it)."""
    entries = sorted(log, key=lambda e: (e["start"], e.get("id", 0)))
    for i, entry in enumerate(entries):
        if entry["event"] == "release":
            continue
        end = float(entry["expires"])
        for later in entries[i + 1:]:
            if later["event"] == "release" and later["holder"] == entry["holder"] and later["start"] < end:
                end = float(later["start"])
                break
        yield entry["holder"], float(entry["start"]), end


def overlaps(log: list[dict[str, Any]]) -> list[tuple[tuple[str, float, float], tuple[str, float, float]]]:
    """Pairs of valid periods of different holders that overlap (must be empty)."""
    periods = list(_periods(log))
    bad = []
    for i, a in enumerate(periods):
        for b in periods[i + 1:]:
            if a[0] != b[0] and a[1] < b[2] and b[1] < a[2]:
                bad.append((a, b))
    return bad


def assert_no_overlap(server: FtmockServer, consumer: str) -> list[dict[str, Any]]:
    log = lease_log(server, consumer)
    bad = overlaps(log)
    assert not bad, f"overlapping valid periods: {bad}"
    return log
