"""One-shot collection in several processes: the same reports as threads, progress relayed, and a
worker that dies costs only its own sources."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from ftreport.config import SourceConfig
from ftreport.forked import usable_cpus
from ftreport.model import report_body
from ftreport.service import collect_all
from ftreport.sources import ProgressCallback
from ftreport.sources.esx import EsxSource

from .conftest import VCSIM_PASSWORD, VCSIM_USER, Vcsim


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


def _configs(sim: Vcsim, count: int) -> list[SourceConfig]:
    return [SourceConfig(name=f"vc{i}", type="esx", file="t", server=sim.url, username=VCSIM_USER,
                         password=VCSIM_PASSWORD, ca_cert=str(sim.tls.ca_path)) for i in range(count)]


def _bodies(snapshots: dict[str, Any]) -> dict[str, str]:
    return {name: json.dumps(report_body(snap), sort_keys=True) for name, snap in snapshots.items()}


def test_processes_give_the_same_snapshots_as_threads_and_relay_progress(vcsim_session: Vcsim) -> None:
    configs = _configs(vcsim_session, 3)
    threads, errors = collect_all(configs, processes=1)
    assert not errors
    progress = Recorded()
    forked, errors = collect_all(configs, processes=2, progress=progress)
    assert not errors
    assert _bodies(forked) == _bodies(threads)
    # Every guest came back with its attributes (plain guests share one read-only mapping).
    guests = [g for snap in forked.values() for hv in snap for g in hv.guests]
    assert guests and all(g.attributes["virtWhoType"] == "esx" for g in guests)
    # vc1 was collected by the second process: its texts crossed the pipe, in order.
    assert set(progress.texts) == {"vc0", "vc1", "vc2"}
    for texts in progress.texts.values():
        assert texts[0].startswith("connecting to") and texts[-1].startswith("finished: ")


def test_a_worker_that_dies_fails_only_its_sources(vcsim_session: Vcsim) -> None:
    parent = os.getpid()

    class Dying(EsxSource):
        def collect(self) -> Any:
            if self.name == "vc1" and os.getpid() != parent:
                os._exit(3)  # killed mid-collection (OOM killer, a crash in a C library...)
            return super().collect()

    configs = _configs(vcsim_session, 4)  # vc0, vc2 in this process; vc1, vc3 in the worker
    snapshots, errors = collect_all(configs, processes=2,
                                    factory=lambda cfg, progress: Dying(cfg, progress=progress))
    assert sorted(snapshots) == ["vc0", "vc2"]
    assert sorted(errors) == ["vc1", "vc3"]
    assert "ended without a result (exit code 3)" in errors["vc1"]


_NOTING = """
import os, sys
from ftreport.config import SourceConfig
from ftreport.service import collect_all
from ftreport.sources.esx import EsxSource
url, ca, user, password, seen, count = sys.argv[1:7]
class Noting(EsxSource):
    def collect(self):
        with open(seen, "a") as f:
            f.write(f"{os.getpid()}\\n")
        return super().collect()
configs = [SourceConfig(name=f"vc{i}", type="esx", file="t", server=url, username=user, password=password,
                        ca_cert=ca) for i in range(int(count))]
snapshots, errors = collect_all(configs, factory=lambda cfg, progress: Noting(cfg, progress=progress))
assert len(snapshots) == int(count) and not errors, errors
print(os.getpid())
"""


def test_automatic_processes_follow_the_cpus_and_the_esx_sources(vcsim_session: Vcsim, tmp_path: Path) -> None:
    """By default: one process per usable CPU, up to one per esx source; one esx source never
    forks. Run in a fresh interpreter: this test process runs other threads."""
    import subprocess
    import sys

    seen = tmp_path / "pids"

    def pids(count: int) -> tuple[int, set[int]]:
        seen.write_text("")
        out = subprocess.run([sys.executable, "-c", _NOTING, vcsim_session.url, str(vcsim_session.tls.ca_path),
                              VCSIM_USER, VCSIM_PASSWORD, str(seen), str(count)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return int(out.stdout), {int(line) for line in seen.read_text().split()}

    parent, used = pids(1)
    assert used == {parent}
    parent, used = pids(2)
    assert parent in used
    assert len(used) == min(2, usable_cpus())


def test_a_threaded_caller_gets_threads_unless_it_asks(vcsim_session: Vcsim, tmp_path: Path) -> None:
    """Forking a process that runs threads can deadlock the child: automatic never does it."""
    parent = os.getpid()
    seen = tmp_path / "pids"
    seen.write_text("")

    class Noting(EsxSource):
        def collect(self) -> Any:
            with open(seen, "a") as f:
                f.write(f"{os.getpid()}\n")
            return super().collect()

    done = threading.Event()
    other = threading.Thread(target=done.wait, daemon=True)  # the caller's own thread
    other.start()
    try:
        snapshots, errors = collect_all(_configs(vcsim_session, 2),
                                        factory=lambda cfg, progress: Noting(cfg, progress=progress))
    finally:
        done.set()
    assert len(snapshots) == 2 and not errors
    assert {int(line) for line in seen.read_text().split()} == {parent}
