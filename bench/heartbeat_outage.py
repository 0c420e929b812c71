"""Outage sweep: server outages of every length across a lease holder's window, against ftmock.

    python -m bench heartbeat_outage          (FTAGENT_OUTAGE_RUNS runs per point, default 3)

The issue's timing (ttl 8 s, margin 2 s, renew_interval 3 s: the deadline is 6 s after a renewal was
sent) with the default ``retry_interval`` (1 s, +/- 20 %). Each trial waits for one of the holder's
renewals, cuts it off its server (tests/ftagent/tcpgate.py: ``refuse`` closes every connection, as a
stopped or restarting server; ``drop`` lets nothing through, as a partition or a frozen server), and
ends the outage a given time before the holder's deadline (negative: after it). A standby instance
talks to the server directly and takes the lease over whenever it can. Per point: how many runs
fenced, and overlaps (the server granted the standby the lease while the holder still held it: must
be 0). The CI test (tests/ftagent/test_heartbeat_outage.py) runs one point each side of the window.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bench.table import print_table  # noqa: E402
from tests.ftagent.outage_kit import OutageResult, OutageRig  # noqa: E402
from tests.ftagent.tcpgate import tcp_gate  # noqa: E402
from tests.kit.ftmock import start_ftmock  # noqa: E402
from tests.kit.lease import unique_vm  # noqa: E402
from tests.kit.orgs import new_org  # noqa: E402

__all__ = ["main"]

TIMING = {"ttl": "8", "margin": "2", "renew_interval": "3"}
#: Seconds before the deadline at which the outage ends (negative: after the deadline).
ENDS_BEFORE = (3.0, 2.5, 2.0, 1.5, 1.25, 1.0, 0.75, 0.5, 0.25, 0.0, -0.25, -0.5)


def main() -> None:
    runs = int(os.environ.get("FTAGENT_OUTAGE_RUNS", "3"))
    with tempfile.TemporaryDirectory(prefix="bench-outage-") as d:
        tmp = Path(d)
        server = start_ftmock(tmp / "srv")
        try:
            for mode in ("refuse", "drop"):
                results: dict[float, list[OutageResult]] = {}
                with tcp_gate(("127.0.0.1", server.port)) as gate:
                    rig = OutageRig(server, tmp / mode, new_org(server), unique_vm("bench-outage"), gate, **TIMING)
                    try:
                        for before in ENDS_BEFORE:
                            results[before] = [rig.trial(lambda w, b=before: w - b, mode) for _ in range(runs)]
                    finally:
                        rig.stop()
                        rig.close()
                rows = []
                for before, trials in results.items():
                    windows = [t.window for t in trials]
                    rows.append((f"{before:+.2f}", f"{min(windows):.2f}-{max(windows):.2f}", len(trials),
                                 sum(t.fenced for t in trials), sum(t.overlap for t in trials)))
                print_table(f"outage '{mode}', ttl 8 s, margin 2 s, renew_interval 3 s, retry_interval 1 s "
                            f"(+/- 20 %); {runs} runs per point",
                            ["outage ends before the deadline (s)", "window (s)", "runs", "fenced", "overlaps"], rows)
                points = sorted(results)
                # The shortest lead for which no run fenced, nor any run with a longer lead; the longest
                # lead for which every run fenced, and every run with a shorter one.
                safe = next((b for b in points if not any(t.fenced for b2 in points if b2 >= b for t in results[b2])),
                            None)
                lost = next((b for b in reversed(points)
                             if all(t.fenced for b2 in points if b2 <= b for t in results[b2])), None)
                print(f"{mode}: no fence when the outage ended at least {safe} s before the deadline; a fence "
                      f"every time when it ended {lost} s before it or later; overlaps: "
                      f"{sum(t.overlap for ts in results.values() for t in ts)}", flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
