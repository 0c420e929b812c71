"""Benchmark of ``ftagent heartbeat``: footprint while renewing every second, and repeated fault runs.

    .venv/bin/python bench/ftagent_heartbeat.py [--seconds 30] [--runs 10]

1. Footprint: one daemon renewing every second against a local ftmock; RSS (current and peak) and
   CPU time of the agent process over the steady window, requests per second.
2. Fault runs (the CI tests run each scenario once; this runs them ``--runs`` times):
   - ``server-paused``: the server is SIGSTOPped (traffic dropped); the holder must fence before the
     server's lease expires, and a standby takes over only afterwards;
   - ``agent-paused``: the holder is SIGSTOPped past its ttl; a standby takes over; the holder
     resumes and must fence without renewing.
   For each run: fence lead time (server expiry minus fence time, must be > 0), takeover delay,
   and the no-overlap check of the server's lease log.
3. etcd (``[lease] backend = etcd`` on a 3-member etcd cluster on loopback, Debian's etcd-server):
   the same footprint, and ``holder-frozen`` runs: the holder is SIGSTOPped, a standby takes over
   once etcd expired the holder's lease; takeover time = the standby's creation of the key (seen by a
   live watch) minus the freeze (goal: ttl + one renew interval), and etcd's history of the key
   checked for overlaps.  ``--skip-etcd`` leaves it out.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.kit.etcd import EtcdCluster, KeyWatch  # noqa: E402
from tests.kit.ftmock import FtmockServer, start_ftmock  # noqa: E402
from tests.kit.guest import Guest, clone_guest, send_signal  # noqa: E402
from tests.kit.lease import lease_guest, lease_log, overlaps  # noqa: E402
from tests.kit.orgs import new_org  # noqa: E402
from tests.kit.wait import wait_until  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_stats(pid: int) -> tuple[float, int, int]:
    """(cpu seconds, rss kB, peak rss kB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return cpu, rss, hwm


def footprint(server: FtmockServer, tmp: Path, seconds: float, *, title: str = "one agent renewing every second",
              **lease: str) -> None:
    guest = lease_guest(server, tmp / f"foot-{lease.get('backend', 'server')}", new_org(server), "bench-foot",
                       renew_interval="1", ttl="20", margin="5", **lease)
    proc = guest.start()
    try:
        wait_until(lambda: guest.state() == "HELD", 20, "HELD")
        time.sleep(2)  # past start-up
        cpu0, _, _ = proc_stats(proc.pid)
        ren0 = guest.status()["renewals"]
        t0 = time.monotonic()
        samples = []
        while time.monotonic() - t0 < seconds:
            time.sleep(1)
            samples.append(proc_stats(proc.pid)[1])
        cpu1, rss, hwm = proc_stats(proc.pid)
        ren1 = guest.status()["renewals"]
        wall = time.monotonic() - t0
    finally:
        guest.stop(proc)
    print(f"\n## Footprint: {title}\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| steady window | {wall:.1f} s |")
    print(f"| renewals in window | {ren1 - ren0} ({(ren1 - ren0) / wall:.2f}/s) |")
    print(f"| CPU time in window | {cpu1 - cpu0:.2f} s ({100 * (cpu1 - cpu0) / wall:.2f} % of one core) |")
    print(f"| CPU per renewal | {1000 * (cpu1 - cpu0) / max(1, ren1 - ren0):.1f} ms |")
    print(f"| RSS (median / max sampled) | {statistics.median(samples) / 1024:.1f} / {max(samples) / 1024:.1f} MB |")
    print(f"| peak RSS (VmHWM) | {hwm / 1024:.1f} MB |")
    print(f"| final RSS | {rss / 1024:.1f} MB |")


def _holding_pair(server: FtmockServer, tmp: Path, name: str) -> tuple[Guest, Guest, Any, Any]:
    """Two instances of one guest running heartbeats: A holds the lease, B waits for it."""
    a = lease_guest(server, tmp / f"{name}-a", new_org(server), f"bench-{name}")
    b = clone_guest(a, tmp / f"{name}-b")
    pa = a.start()
    wait_until(lambda: a.state() == "HELD", 20, "A HELD")
    pb = b.start()
    wait_until(lambda: b.status().get("held_by"), 10, "B waiting")
    return a, b, pa, pb


def server_paused(server: FtmockServer, tmp: Path, run: int) -> dict[str, float]:
    a, b, pa, pb = _holding_pair(server, tmp, f"sp{run}")
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: a.state() == "FENCED", 8, "A FENCED")
        time.sleep(0.5)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    wait_until(lambda: b.state() == "HELD", 15, "B HELD")
    return _measure(server, a, b, pa, pb)


def agent_paused(server: FtmockServer, tmp: Path, run: int) -> dict[str, float]:
    a, b, pa, pb = _holding_pair(server, tmp, f"ap{run}")
    renewals = a.status()["renewals"]
    send_signal(pa, signal.SIGSTOP)
    wait_until(lambda: b.state() == "HELD", 10, "B HELD")
    resumed = time.time()
    send_signal(pa, signal.SIGCONT)
    wait_until(lambda: a.state() == "FENCED", 5, "A FENCED")
    result = _measure(server, a, b, pa, pb)
    result["renewed_after_pause"] = float(a.status()["renewals"] != renewals)
    result["fence_after_resume"] = a.fences()[0][0] - resumed
    return result


def _measure(server: FtmockServer, a: Guest, b: Guest, pa: object, pb: object) -> dict[str, float]:
    log = lease_log(server, a.uuid())
    # The server's log names holders by fingerprint only.
    holder_a, holder_b = a.status()["holder_fingerprint"], b.status()["holder_fingerprint"]
    fence_time = a.fences()[0][0]
    # Renewals the paused server processed after it resumed (A had given up on them) extend A's
    # lease on the server; the lead is measured against what A's last answered renewal promised.
    answered = [e["expires"] for e in log if e["holderFingerprint"] == holder_a and e["start"] < fence_time]
    expiry_a = max(answered)
    grant_b = next(e["start"] for e in log if e["holderFingerprint"] == holder_b and e["event"] == "grant")
    a.stop(pa)  # type: ignore[arg-type]
    b.stop(pb)  # type: ignore[arg-type]
    return {"lead": expiry_a - fence_time, "takeover": grant_b - fence_time, "overlaps": len(overlaps(log)),
            "fenced_first": float(fence_time < grant_b)}


def etcd_frozen(server: FtmockServer, cluster: EtcdCluster, tmp: Path, run: int) -> dict[str, float]:
    """The holder freezes; the standby takes over after etcd expired the holder's etcd lease."""
    from tests.kit.etcd import PREFIX, check_history, key_of

    a = lease_guest(server, tmp / f"ef{run}-a", new_org(server), f"bench-etcd-{run}", backend="etcd",
                   etcd_endpoints=cluster.endpoints, etcd_prefix=PREFIX)
    b = clone_guest(a, tmp / f"ef{run}-b")
    watch = KeyWatch(cluster.members[run % len(cluster.members)].url, key_of(a))
    try:
        pa = a.start()
        wait_until(lambda: a.state() == "HELD", 20, "A HELD")
        pb = b.start()
        wait_until(lambda: b.status().get("held_by"), 10, "B waiting")
        renewals = a.status()["renewals"]
        send_signal(pa, signal.SIGSTOP)
        frozen = time.time()
        wait_until(lambda: b.state() == "HELD", 15, "B HELD")
        send_signal(pa, signal.SIGCONT)
        wait_until(lambda: a.state() == "FENCED", 5, "A FENCED")
        found = check_history(watch)
        holder_b = b.status()["holder_fingerprint"]
        created_b = next(p.start for p in found if p.fingerprint == holder_b)
        result = {"takeover": created_b - frozen, "renewed_after_pause": float(a.status()["renewals"] != renewals),
                  "holders": float(len(found)), "overlaps": 0.0}
        a.stop(pa)
        b.stop(pb)
        return result
    except AssertionError:
        return {"takeover": float("nan"), "renewed_after_pause": 0.0, "holders": 0.0, "overlaps": 1.0}
    finally:
        watch.close()
        a.kill_all()
        b.kill_all()


def etcd_section(server: FtmockServer, tmp: Path, seconds: float, runs: int) -> None:
    cluster = EtcdCluster(tmp / "etcd").start()
    try:
        footprint(server, tmp, seconds, title="one agent on the etcd backend renewing every second (3-member "
                  "cluster; a renewal = keep-alive + linearizable range)", backend="etcd",
                  etcd_endpoints=cluster.endpoints)
        results = [etcd_frozen(server, cluster, tmp, i) for i in range(runs)]
        takeovers = [r["takeover"] for r in results if r["takeover"] == r["takeover"]]
        print(f"\n## etcd: holder frozen (ttl 3 s, renew 0.5 s, margin 1 s; {runs} runs)\n")
        print("| runs | overlaps or failed checks | renewed after the pause | takeover after freeze "
              "(min / median / max) | goal (ttl + renew interval) |")
        print("|---|---|---|---|---|")
        if takeovers:
            print(f"| {runs} | {int(sum(r['overlaps'] for r in results))} | "
                  f"{int(sum(r['renewed_after_pause'] for r in results))} | {min(takeovers):.2f} / "
                  f"{statistics.median(takeovers):.2f} / {max(takeovers):.2f} s | 3.50 s |")
        else:
            print(f"| {runs} | {runs} | - | - | 3.50 s |")
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--skip-etcd", action="store_true", help="leave out the etcd backend's figures")
    # Options only when run as a script: under `python -m bench` the command line names the benchmarks.
    args = parser.parse_args(None if __name__ == "__main__" else [])
    with tempfile.TemporaryDirectory(prefix="bench-heartbeat-") as d:
        tmp = Path(d)
        server = start_ftmock(tmp / "srv")
        try:
            footprint(server, tmp, args.seconds)
            rows: dict[str, list[dict[str, float]]] = {}
            print(f"\n## Fault runs (ttl 3 s, renew 0.5 s, margin 1 s; {args.runs} runs each)\n")
            print("| scenario | runs | fenced before takeover | overlaps | fence lead before server expiry "
                  "(min / median) | takeover after fence (median) |")
            print("|---|---|---|---|---|---|")
            for name, fn in (("server-paused", server_paused), ("agent-paused", agent_paused)):
                results = [fn(server, tmp, i) for i in range(args.runs)]
                leads = [r["lead"] for r in results]
                rows[name] = results
                print(f"| {name} | {len(results)} | {int(sum(r['fenced_first'] for r in results))}/{len(results)} | "
                      f"{int(sum(r['overlaps'] for r in results))} | {min(leads):.2f} / {statistics.median(leads):.2f} s | "
                      f"{statistics.median(r['takeover'] for r in results):.2f} s |")
            paused = rows["agent-paused"]
            print("\nagent-paused: the paused holder cannot fence while frozen (the standby takes over once the "
                  "server's lease expired); after SIGCONT it fenced in "
                  f"{statistics.median(r['fence_after_resume'] for r in paused):.2f} s (median), renewed after the "
                  f"pause in {int(sum(r['renewed_after_pause'] for r in paused))} of {len(paused)} runs.")
            if not args.skip_etcd:
                etcd_section(server, tmp, args.seconds, args.runs)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
