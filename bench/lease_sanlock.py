"""Benchmark of the sanlock lease backend with two real sanlock daemons (two simulated hosts).

    .venv/bin/python bench/lease_sanlock.py [--seconds 20] [--runs 2] [--io-timeout 1]

1. Footprint: one heartbeat holding the lease (renewing every second); RSS and CPU of the agent
   and of its sanlock daemon.
2. Takeovers, each ``--runs`` times (CI runs the host freeze once):
   - ``release``: the holder stops cleanly; the standby's delay to HELD;
   - ``agent-killed``: the holder's agent is SIGKILLed; its holder child keeps the lease ``margin``
     (5 s) more, then the daemon frees the resource;
   - ``host-frozen``: the holder's daemon and agent are SIGSTOPped (a paused host); the standby
     waits for sanlock's host_dead; the holder, resumed, fences (delay from resume to the hook);
   - ``daemon-frozen``: only the holder's daemon is SIGSTOPped; the agent's calls time out, it fences
     at its own deadline, and the standby takes over after host_dead (lead = takeover - fence).
   Every run samples "no two holders" (status files, and sanlock's on-disk owner) every 0.2 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bench.ftagent_heartbeat import proc_stats  # noqa: E402
from bench.table import print_table  # noqa: E402
from tests.kit.ftmock import start_ftmock  # noqa: E402
from tests.kit.orgs import new_org  # noqa: E402
from tests.kit.sanlock import SanlockSite  # noqa: E402
from tests.kit.wait import wait_until  # noqa: E402

_n = iter(range(10_000))


def new_site(server: object, tmp: Path, io_timeout: int) -> SanlockSite:
    site = SanlockSite(server, tmp / f"site{next(_n)}", new_org(server), f"bench-sl-{os.getpid()}-{next(_n)}",  # type: ignore[arg-type]
                       io_timeout=io_timeout)
    site.start_daemons()
    site.init()
    return site


def sample_until(site: SanlockSite, pred: object, timeout: float) -> float:
    """Sample "no two holders" until ``pred()``; the wall time when it became true (the fence
    hook's marker lines are wall times too)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        site.check()
        if pred():  # type: ignore[operator]
            return time.time()
        time.sleep(0.2)
    raise AssertionError("timed out")


def footprint(server: object, tmp: Path, seconds: float, io_timeout: int) -> None:
    site = new_site(server, tmp, io_timeout)
    try:
        proc = site.start("a")
        wait_until(lambda: site.guests["a"].state() == "HELD", 60, "HELD")
        time.sleep(2)
        daemon = site.daemons["a"].proc
        assert daemon is not None
        cpu0, _, _ = proc_stats(proc.pid)
        dcpu0, _, _ = proc_stats(daemon.pid)
        time.sleep(seconds)
        cpu1, rss, hwm = proc_stats(proc.pid)
        dcpu1, drss, _ = proc_stats(daemon.pid)
        children = [int(c) for c in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        _, crss, _ = proc_stats(children[0]) if children else (0.0, 0, 0)
        renewals = site.guests["a"].status().get("renewals")
        print_table(f"sanlock backend footprint over {seconds:g} s (renew every 1 s, io_timeout {io_timeout} s)",
                    ["process", "RSS MB", "peak RSS MB", "CPU % of a core"],
                    [["ftagent heartbeat", f"{rss / 1024:.1f}", f"{hwm / 1024:.1f}",
                      f"{100 * (cpu1 - cpu0) / seconds:.2f}"],
                     ["its lease holder child", f"{crss / 1024:.1f}", "", ""],
                     ["sanlock daemon (-l 0)", f"{drss / 1024:.1f}", "", f"{100 * (dcpu1 - dcpu0) / seconds:.2f}"]])
        print(f"renewals so far: {renewals}")
    finally:
        site.close()


def scenario(server: object, tmp: Path, kind: str, io_timeout: int) -> dict[str, float]:
    site = new_site(server, tmp, io_timeout)
    a, b = site.guests["a"], site.guests["b"]
    try:
        proc_a = site.start("a")
        wait_until(lambda: a.state() == "HELD", 60, "a HELD")
        site.start("b")
        wait_until(lambda: b.status().get("held_by") == "sanlock host id 1", 60, "b waiting")
        out: dict[str, float] = {}
        t0 = time.time()
        if kind == "release":
            a.stop(proc_a)
        elif kind == "agent-killed":
            proc_a.kill()
            proc_a.wait()
        elif kind == "host-frozen":
            site.daemons["a"].signal(signal.SIGSTOP)
            os.kill(proc_a.pid, signal.SIGSTOP)
        elif kind == "daemon-frozen":
            site.daemons["a"].signal(signal.SIGSTOP)
        took = sample_until(site, lambda: b.state() == "HELD", 300)
        out["takeover s"] = took - t0
        if kind == "daemon-frozen":
            fenced = a.fences()
            out["holder fenced at s"] = fenced[0][0] - t0 if fenced else -1
            out["fence lead s"] = took - fenced[0][0] if fenced else -1  # > 0: fenced before the takeover
        if kind in ("host-frozen", "daemon-frozen"):
            resumed = time.time()
            if kind == "host-frozen":
                os.kill(proc_a.pid, signal.SIGCONT)
            site.daemons["a"].signal(signal.SIGCONT)
            if kind == "host-frozen":
                wait_until(lambda: a.fences(), 30, "a fencing on resume")
                out["fence after resume s"] = a.fences()[0][0] - resumed
        for _ in site.watch(2):
            pass
        out["violations"] = float(len(site.violations))
        if site.violations:
            print(f"  {kind}: {site.violations[:3]}")
        return out
    finally:
        site.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--runs", type=int, default=int(os.environ.get("FTAGENT_BENCH_SANLOCK_RUNS", "2")))
    parser.add_argument("--io-timeout", type=int, default=1)
    parser.add_argument("--scenarios", default="release,agent-killed,host-frozen,daemon-frozen")
    parser.add_argument("--no-footprint", action="store_true")
    args = parser.parse_args(sys.argv[1:] if __name__ == "__main__" else [])
    with tempfile.TemporaryDirectory(prefix="bench-sanlock-") as d:
        tmp = Path(d)
        server = start_ftmock(tmp / "srv")
        try:
            if not args.no_footprint:
                footprint(server, tmp, args.seconds, args.io_timeout)
            rows = []
            for kind in args.scenarios.split(","):
                runs = [scenario(server, tmp, kind, args.io_timeout) for _ in range(args.runs)]
                keys = sorted({k for r in runs for k in r})
                for key in keys:
                    values = [r[key] for r in runs if key in r]
                    rows.append([kind, key, len(values), f"{min(values):.1f}", f"{statistics.median(values):.1f}",
                                 f"{max(values):.1f}"])
            print_table(f"sanlock takeovers (io_timeout {args.io_timeout} s: host_dead "
                        f"{8 * args.io_timeout + 60} s; two daemons, one lease file)",
                        ["scenario", "figure", "runs", "min", "median", "max"], rows)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
