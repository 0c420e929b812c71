"""Server outages of an exact length against a lease holder, for the outage test and its bench sweep.

An :class:`OutageRig` is a holder A whose server traffic passes a :class:`~tests.ftagent.tcpgate.TcpGate`
and a standby B (the same guest, its own holder id) talking to the server directly, waiting to take
the lease over. A trial (:meth:`OutageRig.trial`) waits for one of A's renewals, cuts A off, reads the
*window* (what A's status says is left to its deadline at the cut), keeps the outage for
``length(window)`` seconds and restores. It reports whether A fenced and whether anybody's holding
overlapped: A holding (until it fenced) while the server had granted the lease to B.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.ftagent.tcpgate import TcpGate
from tests.kit.ftmock import FtmockServer
from tests.kit.guest import Guest, clone_guest, make_guest
from tests.kit.lease import boottime, lease_log, overlaps
from tests.kit.wait import wait_until

__all__ = ["OutageResult", "OutageRig"]


@dataclass(frozen=True)
class OutageResult:
    mode: str
    window: float  # seconds from the cut to A's deadline
    outage: float  # seconds A was cut off
    fenced: bool
    overlap: bool  # A held the lease (before fencing) while the server had granted it to B

    @property
    def ended_before_deadline(self) -> float:
        """How long before A's deadline the outage ended (negative: after it)."""
        return self.window - self.outage


class OutageRig:
    """Holder A behind a gate, standby B beside it (see the module's docstring)."""

    def __init__(self, server: FtmockServer, root: Path, org: str, virt_uuid: str, gate: TcpGate,
                 **lease: str) -> None:
        self.server = server
        self.gate = gate
        # A reaches the server through the gate only; B (and the test) directly.
        self.a = make_guest(root / "a", server, org, virt_uuid=virt_uuid, url=gate.url(server.url), timeout=5,
                            lease=lease, register=True)
        self.b = clone_guest(self.a, root / "b")
        self.b.configure("server", url=server.url)
        self.guests: list[Guest] = [self.a, self.b]
        self.consumer = self.a.uuid()
        self._pa: subprocess.Popen[bytes] | None = None
        self._pb: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """(Re)start A until it holds the lease, then B, which waits for it."""
        self._pa = self.a.start()
        wait_until(lambda: self.a.state() == "HELD", 20, "A HELD")
        self._pb = self.b.start()
        # The server names the other holder by its fingerprint only.
        wait_until(lambda: self.b.status().get("held_by") == self.a.status().get("holder_fingerprint"), 15,
                   "B sees A holding")

    def stop(self) -> None:
        """Stop both (B first: if it took the lease over, its release frees it for A's next start)."""
        for guest, proc in ((self.b, self._pb), (self.a, self._pa)):
            if proc is not None:
                guest.stop(proc)
        self._pa = self._pb = None

    def trial(self, length: Callable[[float], float], mode: str = "refuse") -> OutageResult:
        """One outage of ``length(window)`` seconds; A is restarted afterwards if it fenced."""
        fences_before = len(self.a.fences())
        renewals = self.a.status().get("renewals", 0)
        wait_until(lambda: self.a.status().get("renewals", 0) > renewals, 30, "a renewal of A", step=0.005)
        self.gate.cut(mode)
        cut, cut_wall = boottime(), time.time()
        status = self.a.status()
        window = float(status["deadline"]) - cut
        outage = max(0.0, length(window))
        time.sleep(max(0.0, cut + outage - boottime()))  # the outage's length is the thing tested
        self.gate.restore()
        restored_at = self.a.status().get("renewals", 0)
        wait_until(lambda: self.a.state() == "FENCED" or (
            self.a.state() == "HELD" and self.a.status().get("renewals", 0) > restored_at), window + 15,
            "A fenced or renewing again")
        fenced = len(self.a.fences()) > fences_before
        overlap = self._overlap(fenced, cut_wall)
        if fenced:
            self.stop()
            self.start()
        return OutageResult(mode, window, outage, fenced, overlap)

    def _overlap(self, fenced: bool, since: float) -> bool:
        """Whether the server granted the lease to B (since the cut) while A still held it."""
        b_holder = self.b.status().get("holder_fingerprint")  # as the server's log names it
        if fenced:
            # B takes over once the server's lease ran out; A must have fenced before that.
            wait_until(lambda: self.b.state() == "HELD", 30, "B takes the lease over")
        log = lease_log(self.server, self.consumer)
        if overlaps(log):
            return True
        grants_b = [float(e["start"]) for e in log
                    if e["holderFingerprint"] == b_holder and e["event"] == "grant" and float(e["start"]) >= since]
        if not fenced:
            return bool(grants_b)
        fence_time = self.a.fences()[-1][0]
        return any(start <= fence_time for start in grants_b)

    def close(self) -> None:
        for guest in self.guests:
            guest.kill_all()
