"""Where the FT lease lives, for the lease fault scenarios (``tests/ftagent/test_lease_faults.py``).

A :class:`LeaseSite` is two instances (``a`` and ``b``) of one FT VM, each with its own holder id,
whose heartbeats contend for the group's lease on one backend: the server (ftmock), etcd (a real
3-member cluster) or sanlock (two real sanlock daemons sharing a lease file).  The scenarios drive
the guests and read the truth through the site: what the backend's own record says happened
(``history``: the server's lease log, etcd's history of the key, sanlock's on-disk owner as sampled),
and what each backend adds to a step.  A new backend gets a site here and a parameter of the
``lease_site`` fixture, and faces the same faults.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ftagent.lease.status import holder_path, read_holder
from tests.kit.etcd import PREFIX, EtcdCluster, KeyWatch, check_history, key_of
from tests.kit.ftmock import FtmockServer
from tests.kit.guest import Guest, clone_guest, send_signal
from tests.kit.lease import assert_no_overlap, holding, lease_guest, unique_vm
from tests.kit.orgs import new_org
from tests.kit.wait import hold_for, wait_until

__all__ = ["EtcdSite", "LeaseSite", "SanlockLeaseSite", "ServerSite"]

#: (holder, generation) of each holding, in the order the backend granted them; the holder by the
#: fingerprint of its id, as ftagent's status names it.
History = list[tuple[str, int]]


class LeaseSite:
    """Two instances of one FT VM contending for its lease (the server's by default)."""

    name = "server"
    #: Seconds a heartbeat may take to get a free lease, to see a release, to see a frozen
    #: holder's lease expire (the backend's expiry plus slack for a loaded machine).
    acquire_timeout = 15.0
    release_handover = 2.5
    takeover_timeout = 10.0
    #: A frozen holder's lease is free to take only this long after the freeze, at the earliest
    #: (ttl 3 s after its last renewal, sent at most renew_interval 0.5 s before, less 0.5 s of slack).
    frozen_takeover_after = 2.0
    #: Seconds a resumed holder past its deadline may take to fence.
    resume_fence_timeout = 5.0
    #: Seconds a running holder is watched renewing (at least three renewals).
    steady_seconds = 2.5
    #: Whether a one-shot ``heartbeat --once`` leaves a lease held after the process ends.
    one_shot_holds = True
    #: Words the fence reason of a holder that resumed after its deadline contains (one of them).
    late_fence_reasons: tuple[str, ...] = ("deadline",)

    def __init__(self, a: Guest, b: Guest) -> None:
        self.a, self.b = a, b
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- driving the instances ------------------------------------------------------------------

    def env(self, guest: Guest) -> dict[str, str]:
        """What an instance's ftagent needs in its environment beyond the guest's own."""
        return {}

    def start(self, guest: Guest) -> subprocess.Popen[bytes]:
        proc = guest.start(env=self.env(guest))
        self.procs[guest.root.name] = proc
        return proc

    def stop(self, guest: Guest) -> int:
        return guest.stop(self.procs[guest.root.name])

    def ftagent(self, guest: Guest, *args: str) -> subprocess.CompletedProcess[str]:
        return guest.ftagent(*args, env=self.env(guest))

    def freeze(self, guest: Guest) -> None:
        """The instance's host stops (a pause, a partition): its heartbeat runs no more."""
        send_signal(self.procs[guest.root.name], signal.SIGSTOP)

    def thaw(self, guest: Guest) -> None:
        send_signal(self.procs[guest.root.name], signal.SIGCONT)

    def close(self) -> None:
        for guest in (self.a, self.b):
            guest.kill_all()

    # -- reading the truth ----------------------------------------------------------------------

    def holder_seen(self, guest: Guest) -> str:
        """What the other instance's status names as the holder while ``guest`` holds."""
        return str(guest.status()["holder_fingerprint"])

    def holders(self) -> list[Guest]:
        """The instances whose status files say they may act as the holder now."""
        return [g for g in (self.a, self.b) if holding(g)]

    def observe(self) -> None:
        """One sample of the backend's view (for backends that keep no history of their own)."""

    def wait(self, predicate: Callable[[], Any], timeout: float, message: str) -> Any:
        return wait_until(lambda: (self.observe(), predicate())[1], timeout, message)

    def watch(self, seconds: float) -> Iterator[list[Guest]]:
        """The holders, sampled every 0.2 s during ``seconds`` (a real duration the scenario tests)."""
        for _ in hold_for(seconds):
            self.observe()
            yield self.holders()

    def held(self, guest: Guest, timeout: float) -> dict[str, Any]:
        """``guest``'s status once it holds the lease."""
        self.wait(lambda: guest.state() == "HELD", timeout, f"{guest.root.name} HELD")
        self.observe()
        return guest.status()

    def history(self) -> History:
        """The holdings the backend recorded, checked: never two holders at once, generations growing."""
        raise NotImplementedError

    def successor_generation(self, before: int, after: int) -> bool:
        """Whether ``after`` is a generation the backend may give the next holder after ``before``."""
        return after == before + 1

    # -- what each backend adds to a step -------------------------------------------------------

    def check_steady(self, holder: Guest, status: dict[str, Any]) -> None:
        """A steady holder's status, as this backend reports it (the timing, the last renewal)."""

    def check_summary(self, lease: dict[str, Any]) -> None:
        """``ftagent status --json``'s lease summary of a steady holder, as this backend reports it."""

    def check_stale(self, fenced: Guest, status: dict[str, Any]) -> None:
        """The backend refuses a fenced holder's stale generation."""


class ServerSite(LeaseSite):
    """The lease on the entitlement server (ftmock): ttl 3 s, renewals every 0.5 s, margin 1 s."""

    def __init__(self, server: FtmockServer, root: Path) -> None:
        self.server = server
        a = lease_guest(server, root / "a", new_org(server), unique_vm("lease"))
        super().__init__(a, clone_guest(a, root / "b"))
        self.consumer = a.uuid()

    def history(self) -> History:
        log = assert_no_overlap(self.server, self.consumer)
        return [(e["holderFingerprint"], int(e["generation"])) for e in log if e["event"] in ("grant", "handover")]

    def check_steady(self, holder: Guest, status: dict[str, Any]) -> None:
        assert status["holder_fingerprint"] == status["held_by"] and 0 < status["deadline_in"] <= 2.0, status

    def check_stale(self, fenced: Guest, status: dict[str, Any]) -> None:
        # The server refuses the stale token, for state changes and for the lease.
        cert, key = fenced.identity_files()
        stale = status["generation"]

        def call(method: str, path: str, **kw: Any) -> requests.Response:
            return requests.request(method, f"{self.server.url}/{path}", cert=(str(cert), str(key)),
                                    verify=str(self.server.ca_path), timeout=30, **kw)

        r = call("PUT", f"consumers/{self.consumer}", json={"facts": {"x": "1"}},
                 headers={"X-Lease-Generation": str(stale)})
        assert r.status_code == 409, r.text
        own = read_holder(holder_path(fenced.status_file))  # the secret, from the file only its owner reads
        r = call("POST", f"consumers/{self.consumer}/lease", json={"holder": own, "generation": stale,
                                                                   "ttl": 3})
        assert r.status_code == 409, r.text


class EtcdSite(LeaseSite):
    """The lease as a key in a 3-member etcd cluster (ttl 3 s, renewals every 0.5 s, margin 1 s);
    its history is etcd's own, from a watch on one member."""

    name = "etcd"

    def __init__(self, server: FtmockServer, root: Path, cluster: EtcdCluster) -> None:
        a = lease_guest(server, root / "a", new_org(server), unique_vm("etcd"), backend="etcd",
                        etcd_endpoints=cluster.endpoints, etcd_prefix=PREFIX)
        super().__init__(a, clone_guest(a, root / "b"))
        self.key_watch = KeyWatch(cluster.members[0].url, key_of(a))

    def history(self) -> History:
        found = check_history(self.key_watch)
        for earlier, later in zip(found, found[1:]):
            assert earlier.end is not None and earlier.end <= later.start, found
        return [(p.fingerprint, p.generation) for p in found]

    def successor_generation(self, before: int, after: int) -> bool:
        return after > before  # the key's create revision: other keys' writes come between

    def check_steady(self, holder: Guest, status: dict[str, Any]) -> None:
        assert status["holder_fingerprint"] == status["held_by"] and 0 < status["deadline_in"] <= 2.0, status
        assert status["failures"] == 0, status
        # Renewals are keep-alives: the key was created once, by this holder, and never written again.
        [held] = check_history(self.key_watch)
        assert (held.fingerprint, held.generation, held.end) == (status["holder_fingerprint"], status["generation"],
                                                                 None)

    def close(self) -> None:
        super().close()
        self.key_watch.close()


class SanlockLeaseSite(LeaseSite):
    """The lease as a sanlock resource in a file two hosts share (io_timeout 1 s: host_dead 68 s).

    sanlock keeps no history a test can read, so the site samples its on-disk owner (``observe``)
    whenever a scenario waits or watches, and records every two-holder moment as a violation."""

    name = "sanlock"
    acquire_timeout = 30.0
    release_handover = 10.0  # a release hands over at once, no host_dead wait
    takeover_timeout = 150.0  # host_dead (68 s) after the frozen host's last renewal, then the acquire
    frozen_takeover_after = 68 - 2 - 1  # host_dead after the last renewal, < 2 s before the freeze
    resume_fence_timeout = 15.0  # the kill path or the deadline, then the ladder
    steady_seconds = 3.0
    one_shot_holds = False  # the daemon frees a resource when the process that acquired it ends
    late_fence_reasons = ("deadline passed", "SIGUSR1")

    def __init__(self, server: FtmockServer, root: Path) -> None:
        from tests.kit.sanlock import SanlockSite

        self.site = SanlockSite(server, root, new_org(server), unique_vm("sl"))
        super().__init__(self.site.guests["a"], self.site.guests["b"])
        self.owners: History = []
        self.observed = 0.0
        try:
            self.site.start_daemons()
            self.site.init()
        except BaseException:
            self.site.close()
            raise

    def env(self, guest: Guest) -> dict[str, str]:
        return self.site.daemons[guest.root.name].env

    def freeze(self, guest: Guest) -> None:
        # The whole host: its sanlock daemon stops renewing the lockspace as well.
        self.site.daemons[guest.root.name].signal(signal.SIGSTOP)
        super().freeze(guest)

    def thaw(self, guest: Guest) -> None:
        super().thaw(guest)
        self.site.daemons[guest.root.name].signal(signal.SIGCONT)

    def holder_seen(self, guest: Guest) -> str:
        return f"sanlock host id {guest.lease['sanlock_host_id']}"

    def observe(self) -> None:
        now = time.monotonic()
        if now - self.observed < 0.2:  # each sample runs sanlock's reader: five a second are plenty
            return
        self.observed = now
        holders = self.site.check()  # records two holders, or a holder sanlock disagrees with
        if holders:
            holder = self.site.guests[holders[0]].status().get("holder_fingerprint")
            generation = int(self.site.leader().get("lver", 0))
            if holder and (not self.owners or self.owners[-1] != (holder, generation)):
                self.owners.append((holder, generation))

    def holders(self) -> list[Guest]:
        return [self.site.guests[name] for name in self.site.holders()]

    def history(self) -> History:
        assert self.site.violations == [], self.site.violations
        return list(self.owners)

    def check_steady(self, holder: Guest, status: dict[str, Any]) -> None:
        assert status["backend"] == "sanlock" and status["ttl"] == 68  # 8 x io_timeout 1 + 60
        assert status["backend_timing"] == {"io_timeout": 1, "renewal": 2, "renewal_fail": 8, "host_dead": 68}
        assert status["deadline_in"] > 50, status
        other = self.b if holder is self.a else self.a
        assert len(self.site.daemons[holder.root.name].held_resources()) == 1
        assert self.site.daemons[other.root.name].held_resources() == []
        assert int(self.site.leader()["lver"]) == status["generation"]

    def check_summary(self, lease: dict[str, Any]) -> None:
        assert lease["ttl"] == 68 and lease["backend"] == "sanlock", lease

    def close(self) -> None:
        self.site.close()


def open_site(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> LeaseSite:
    """The site of backend ``name`` for a test (its fixtures taken from ``request``)."""
    server: FtmockServer = request.getfixturevalue("ftmock_session")
    if name == "server":
        return ServerSite(server, tmp_path)
    if name == "etcd":
        return EtcdSite(server, tmp_path, request.getfixturevalue("etcd"))
    if name == "sanlock":
        from tests.kit.sanlock import require_binding

        require_binding()  # fails where the binding should load; skips, saying so, on another leg
        return SanlockLeaseSite(server, tmp_path)
    raise ValueError(name)
