"""Cases of test_forked.py that fork, run in a fresh interpreter (``python -m
tests.ftreport.forked_cases CASE URL CA USER PASSWORD WORKDIR``), which prints a JSON result.

Forking a process that runs threads can deadlock the child, and pytest's process runs threads of
earlier tests: ftreport never forks such a process on its own, so neither do its tests.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ftreport.model import report_body
from ftreport.service import collect_all
from ftreport.settings import SourceConfig
from ftreport.sources import ProgressCallback
from ftreport.sources.esx import EsxSettings, EsxSource


class Recorded:
    """A progress sink that keeps what it was told, by source."""

    def __init__(self) -> None:
        self.texts: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    def callback(self, name: str) -> ProgressCallback:
        with self.lock:
            self.texts.setdefault(name, [])

        def report(text: str) -> None:
            with self.lock:
                self.texts[name].append(text)

        return report

    def finish(self, name: str, text: str = "done") -> None:
        with self.lock:
            self.texts.setdefault(name, []).append(f"finished: {text}")

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


# Set in a worker once it has sent a snapshot down the pipe (see ``_note_deliveries``).
DELIVERED = threading.Event()


def _note_deliveries() -> None:
    send_bytes = Connection.send_bytes

    def noting(self: Connection, buf: Any, *args: Any) -> None:
        send_bytes(self, buf, *args)
        if pickle.loads(buf)[0] == "snapshot":  # our own message
            DELIVERED.set()

    Connection.send_bytes = noting  # type: ignore[method-assign]


class Noting(EsxSource):
    """Notes the pid of the process that collects it in ``seen``; ``die`` ends that process
    mid-collection when it is a worker (OOM killer, a crash in a C library...), at once or, with
    ``die_late``, once the worker has delivered another source's snapshot."""

    seen: Path
    die: str = ""
    die_late = False

    def collect(self) -> Any:
        with open(self.seen, "a") as f:
            f.write(f"{os.getpid()}\n")
        if self.name == self.die and os.getpid() != PARENT:
            if self.die_late:
                DELIVERED.wait(60)
            os._exit(3)
        return super().collect()


PARENT = os.getpid()


def _bodies(snapshots: dict[str, Any]) -> dict[str, str]:
    return {name: json.dumps(report_body(snap), sort_keys=True) for name, snap in snapshots.items()}


def main() -> None:
    case, url, ca, user, password, workdir = sys.argv[1:7]
    Noting.seen = Path(workdir) / "pids"

    def configs(count: int) -> list[SourceConfig]:
        return [SourceConfig(name=f"vc{i}", type="esx", file="t",
                             settings=EsxSettings(server=url, username=user, password=password, ca_cert=ca))
                for i in range(count)]

    def collect(count: int, **options: Any) -> tuple[dict[str, Any], dict[str, str], list[int]]:
        Noting.seen.write_text("")
        snapshots, errors = collect_all(configs(count), factory=lambda cfg, progress: Noting(cfg, progress=progress),
                                        **options)
        return snapshots, errors, [int(line) for line in Noting.seen.read_text().split()]

    out: dict[str, Any] = {"parent": PARENT}
    if case == "same":
        threads, out["thread_errors"], _ = collect(3, processes=1)
        progress = Recorded()
        forked, out["errors"], out["pids"] = collect(3, processes=2, progress=progress)
        out["same"] = _bodies(forked) == _bodies(threads)
        guests = [g for snap in forked.values() for hv in snap for g in hv.guests]
        out["guests"] = len(guests)
        out["esx_attributes"] = all(g.attributes["virtWhoType"] == "esx" for g in guests)
        out["progress"] = progress.texts
    elif case == "dies":
        Noting.die = "vc1"
        snapshots, out["errors"], out["pids"] = collect(4, processes=2)  # vc1, vc3 in the worker
        out["collected"] = sorted(snapshots)
    elif case == "dies_late":
        Noting.die, Noting.die_late = "vc3", True
        _note_deliveries()
        snapshots, out["errors"], out["pids"] = collect(4, processes=2)  # vc1 delivered, then vc3 dies
        out["collected"] = sorted(snapshots)
    elif case == "automatic":
        out["one"] = collect(1)[2]
        out["two"] = collect(2)[2]
    else:
        sys.exit(f"unknown case {case!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
