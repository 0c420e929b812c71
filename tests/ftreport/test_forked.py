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


def test_automatic_processes_follow_the_cpus_and_the_esx_sources(vcsim_session: Vcsim, tmp_path: Path) -> None:
    """By default: one process per usable CPU, up to one per esx source; one esx source never forks."""
    seen = tmp_path / "pids"

    class Noting(EsxSource):
        def collect(self) -> Any:
            with open(seen, "a") as f:
                f.write(f"{os.getpid()}\n")
            return super().collect()

    def pids(count: int) -> set[int]:
        seen.write_text("")
        snapshots, errors = collect_all(_configs(vcsim_session, count),
                                        factory=lambda cfg, progress: Noting(cfg, progress=progress))
        assert len(snapshots) == count and not errors
        return {int(line) for line in seen.read_text().split()}

    assert pids(1) == {os.getpid()}
    both = pids(2)
    assert os.getpid() in both
    assert len(both) == min(2, usable_cpus())
