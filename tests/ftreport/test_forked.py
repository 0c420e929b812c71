"""One-shot collection in several processes: the same reports as threads, progress relayed, a
worker that dies costs only its own sources, and a threaded caller is never forked. The cases that
fork run in a fresh interpreter (forked_cases.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ftreport.forked import usable_cpus
from ftreport.service import collect_all
from ftreport.settings import SourceConfig
from ftreport.sources.esx import EsxSettings, EsxSource

from .conftest import VCSIM_PASSWORD, VCSIM_USER, Vcsim


def _configs(sim: Vcsim, count: int) -> list[SourceConfig]:
    return [SourceConfig(name=f"vc{i}", type="esx", file="t",
                         settings=EsxSettings(server=sim.url, username=VCSIM_USER, password=VCSIM_PASSWORD,
                                              ca_cert=str(sim.tls.ca_path))) for i in range(count)]


def _case(case: str, sim: Vcsim, workdir: Path) -> dict[str, Any]:
    """Run a case of forked_cases.py in a fresh interpreter (this process runs other threads)."""
    out = subprocess.run([sys.executable, "-m", "tests.ftreport.forked_cases", case, sim.url, str(sim.tls.ca_path),
                          VCSIM_USER, VCSIM_PASSWORD, str(workdir)],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_processes_give_the_same_snapshots_as_threads_and_relay_progress(vcsim_session: Vcsim,
                                                                        tmp_path: Path) -> None:
    out = _case("same", vcsim_session, tmp_path)
    assert not out["thread_errors"] and not out["errors"]
    assert len(set(out["pids"])) == 2  # two processes did collect
    assert out["same"]
    # Every guest came back with its attributes (plain guests share one read-only mapping).
    assert out["guests"] and out["esx_attributes"]
    # vc1 was collected by the second process: its texts crossed the pipe, in order.
    assert set(out["progress"]) == {"vc0", "vc1", "vc2"}
    for texts in out["progress"].values():
        assert texts[0].startswith("connecting to") and texts[-1].startswith("finished: ")


def test_a_worker_that_dies_fails_only_its_sources(vcsim_session: Vcsim, tmp_path: Path) -> None:
    out = _case("dies", vcsim_session, tmp_path)
    assert out["collected"] == ["vc0", "vc2"]
    assert sorted(out["errors"]) == ["vc1", "vc3"]
    assert "ended without a result (exit code 3)" in out["errors"]["vc1"]


def test_a_worker_that_dies_keeps_what_it_delivered(vcsim_session: Vcsim, tmp_path: Path) -> None:
    """Snapshots are sent as each source is done: a worker that dies later loses only the rest."""
    out = _case("dies_late", vcsim_session, tmp_path)
    assert out["collected"] == ["vc0", "vc1", "vc2"]
    assert list(out["errors"]) == ["vc3"]
    assert "ended without a result (exit code 3)" in out["errors"]["vc3"]


def test_automatic_processes_follow_the_cpus_and_the_esx_sources(vcsim_session: Vcsim, tmp_path: Path) -> None:
    """By default: one process per usable CPU, up to one per esx source; one esx source never forks."""
    out = _case("automatic", vcsim_session, tmp_path)
    assert out["one"] == [out["parent"]]
    assert out["parent"] in out["two"]
    assert len(set(out["two"])) == min(2, usable_cpus())


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
