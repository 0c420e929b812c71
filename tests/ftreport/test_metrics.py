"""ftreport's metrics file (node_exporter textfile collector) and the age of the last report in --status."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ftreport import examples
from tests.conftest import FtmockServer
from tests.kit.orgs import new_org
from tests.kit.wait import wait_until

from .conftest import Daemon, run_ftreport, write_config
from .test_ftmock import server_section


def samples(path: Path) -> dict[tuple[str, str], float]:
    """(sample name, source label) -> value, read with prometheus_client's own parser."""
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            out[(s.name, s.labels.get("source", ""))] = s.value
    return out


def test_oneshot_writes_per_source_metrics_and_counts_failovers(
        ftmock_session: FtmockServer, tmp_path: Path, isolated_env: dict[str, str]) -> None:
    org = new_org(ftmock_session)
    prom = tmp_path / "textfile" / "ftreport.prom"
    report = tmp_path / "report.json"
    report.write_text(json.dumps(examples.builtin_report("report1")))
    (tmp_path / "broken.json").write_text("{not json")
    conf = write_config(tmp_path / "f.conf", {
        "global": {"metrics_file": prom},
        "vc1": {"type": "fake", "file": report, **server_section(ftmock_session, org)},
        "broken": {"type": "fake", "file": tmp_path / "broken.json", **server_section(ftmock_session, org)}})
    out = run_ftreport(["-c", str(conf), "-o"], isolated_env)
    assert out.returncode == 1  # one source failed
    assert stat.S_IMODE(os.stat(prom).st_mode) == 0o644
    m = samples(prom)
    assert m[("ftreport_source_up", "vc1")] == 1 and m[("ftreport_source_up", "broken")] == 0
    assert (m[("ftreport_source_hypervisors", "vc1")], m[("ftreport_source_guests", "vc1")]) == (2, 2)
    assert m[("ftreport_source_last_report_duration_seconds", "vc1")] > 0
    first_success = m[("ftreport_source_last_success_timestamp_seconds", "vc1")]
    assert ("ftreport_source_last_success_timestamp_seconds", "broken") not in m
    assert m[("ftreport_source_errors_total", "broken")] == 1 and m[("ftreport_source_errors_total", "vc1")] == 0
    assert m[("ftreport_source_failovers_total", "vc1")] == 0

    # The FT primary fails over: the server reports it, the counter continues across runs.
    report.write_text(json.dumps(examples.builtin_report("report2")))
    out = run_ftreport(["-c", str(conf), "-o"], isolated_env)
    m = samples(prom)
    assert m[("ftreport_source_failovers_total", "vc1")] == 1
    assert m[("ftreport_source_errors_total", "broken")] == 2
    assert m[("ftreport_source_last_success_timestamp_seconds", "vc1")] >= first_success

    # --status says how old the last accepted report is.
    status_conf = write_config(tmp_path / "s.conf", {
        "vc1": {"type": "fake", "file": report, **server_section(ftmock_session, org)}})
    out = run_ftreport(["-c", str(status_conf), "--status"], isolated_env)
    assert out.returncode == 0, out.stderr
    assert "last report accepted" in out.stdout and "s ago" in out.stdout
    out = run_ftreport(["-c", str(status_conf), "--status", "--json"], isolated_env)
    server = next(iter(json.loads(out.stdout)["servers"].values()))
    assert 0 <= server["last_accepted_age"] < 120


def test_status_without_any_accepted_report(ftmock_session: FtmockServer, tmp_path: Path,
                                             isolated_env: dict[str, str]) -> None:
    org = new_org(ftmock_session)
    conf = write_config(tmp_path / "f.conf", {"vc1": {"type": "fake", **server_section(ftmock_session, org)}})
    out = run_ftreport(["-c", str(conf), "--status"], isolated_env)
    assert out.returncode == 0 and "no report accepted yet" in out.stdout


def test_daemon_keeps_the_metrics_file_current(ftmock_session: FtmockServer, tmp_path: Path,
                                               isolated_env: dict[str, str], daemons: object) -> None:
    org = new_org(ftmock_session)
    prom = tmp_path / "ftreport.prom"
    conf = write_config(tmp_path / "f.conf", {"global": {"metrics_file": prom},
                                              "vc1": {"type": "fake", **server_section(ftmock_session, org)}})
    assert callable(daemons)
    d: Daemon = daemons(["-c", str(conf)], isolated_env, tmp_path / "d.log")
    d.wait_log("report accepted")
    wait_until(lambda: prom.exists() and ("ftreport_source_guests", "vc1") in samples(prom), 15, "metrics")
    assert samples(prom)[("ftreport_source_guests", "vc1")] == 2
    assert d.stop() == 0
