"""Lease tests' helpers: guests that hold a lease, and the server's lease log checked for overlaps.

A lease guest is a :func:`tests.kit.guest.make_guest` guest registered at once, with short timings
(renew 0.5 s, ttl 3 s, margin 1 s unless the test says otherwise), a 5 s server timeout, and a fence
command that records each fence (``Guest.fences``).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from tests.kit.ftmock import FtmockServer
from tests.kit.guest import Guest, make_guest

__all__ = ["assert_no_overlap", "boottime", "fingerprint", "holding", "lease_guest", "lease_log", "no_overlap",
           "overlaps", "unique_vm"]

_vm_numbers = itertools.count()


def unique_vm(prefix: str) -> str:
    """A virt.uuid no other test of this run (or of a run beside it) uses."""
    return f"{prefix}-vm-{os.getpid()}-{next(_vm_numbers)}"


def lease_guest(server: FtmockServer, root: Path, org: str, virt_uuid: str, **lease: str) -> Guest:
    """A registered guest with a ``[lease]`` section (``lease`` keys over the test defaults)."""
    return make_guest(root, server, org, virt_uuid=virt_uuid, timeout=5, lease=lease, register=True)


def boottime() -> float:
    """The clock of the heartbeat's deadlines (CLOCK_BOOTTIME; its status file says which)."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))


def holding(guest: Guest, now: float | None = None) -> bool:
    """Whether the guest's status file says it may act as the holder now (HELD/DEGRADED, deadline ahead)."""
    status = guest.status()
    deadline = status.get("deadline")
    return (status.get("state") in ("HELD", "DEGRADED") and isinstance(deadline, (int, float))
            and deadline > (boottime() if now is None else now) and _alive(status.get("pid")))


def _alive(pid: Any) -> bool:
    """A killed agent leaves a status file that still says HELD: it holds nothing any more."""
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def lease_log(server: FtmockServer, consumer: str) -> list[dict[str, Any]]:
    """The server's log of a consumer's lease (admins only)."""
    r = requests.get(f"{server.url}/consumers/{consumer}/lease/log", auth=server.admin_auth,
                     verify=str(server.ca_path), timeout=30)
    assert r.status_code == 200, r.text
    return list(r.json())


Period = tuple[str, float, float]


def fingerprint(holder: str) -> str:
    """What the server shows of a holder id (never the id itself): the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(holder.encode()).hexdigest()[:8]


def _periods(log: list[dict[str, Any]]) -> Iterator[tuple[str, float, float]]:
    """Valid periods ``(holder, start, end)``: each entry is valid from its start to its expiry,
    cut short by a later release of the same holder (named by its ``holderFingerprint``)."""
    entries = sorted(log, key=lambda e: (e["start"], e.get("id", 0)))
    for i, entry in enumerate(entries):
        if entry["event"] == "release":
            continue
        end = float(entry["expires"])
        for later in entries[i + 1:]:
            if (later["event"] == "release" and later["holderFingerprint"] == entry["holderFingerprint"]
                    and later["start"] < end):
                end = float(later["start"])
                break
        yield entry["holderFingerprint"], float(entry["start"]), end


def overlaps(log: list[dict[str, Any]]) -> list[tuple[Period, Period]]:
    """Pairs of valid periods of different holders that overlap (must be empty)."""
    periods = list(_periods(log))
    bad = []
    for i, a in enumerate(periods):
        for b in periods[i + 1:]:
            if a[0] != b[0] and a[1] < b[2] and b[1] < a[2]:
                bad.append((a, b))
    return bad


def no_overlap(log: list[dict[str, Any]]) -> bool:
    """Whether valid periods of different holders never overlap."""
    return not overlaps(log)


def assert_no_overlap(server: FtmockServer, consumer: str) -> list[dict[str, Any]]:
    """The consumer's lease log, asserted free of overlapping holders."""
    log = lease_log(server, consumer)
    bad = overlaps(log)
    assert not bad, f"overlapping valid periods: {bad}"
    return log
