"""ftagent's metrics file: check-in outcome and identity expiry, kept across runs, others' metrics kept."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.ftagent.test_cli_commands import ftagent
from tests.kit.guest import Guest


def samples(path: Path) -> dict[str, float]:
    return {s.name: s.value for f in text_string_to_metric_families(path.read_text()) for s in f.samples}


def test_checkin_metrics_survive_a_failure(guest: Guest, tmp_path: Path) -> None:
    prom = tmp_path / "textfile" / "ftagent.prom"
    guest.conf.write_text(guest.conf.read_text().replace("[agent]\n", f"[agent]\nmetrics_file = {prom}\n"))
    # Another writer's metrics in the same file are kept.
    prom.parent.mkdir()
    prom.write_text("# HELP ftagent_lease_generation x\n# TYPE ftagent_lease_generation gauge\n"
                    "ftagent_lease_generation 7.0\n")
    guest.register()
    res = ftagent(guest, "checkin")
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE(os.stat(prom).st_mode) == 0o644
    m = samples(prom)
    assert m["ftagent_checkin_success"] == 1 and m["ftagent_checkin_failures_total"] == 0
    success = m["ftagent_checkin_last_success_timestamp_seconds"]
    assert success == m["ftagent_checkin_last_attempt_timestamp_seconds"]
    ident = guest.ok("identity")
    import calendar
    import datetime

    expiry = datetime.datetime.fromisoformat(ident["not_after"])
    seconds = expiry.timestamp() if expiry.tzinfo else calendar.timegm(expiry.timetuple())
    assert abs(m["ftagent_identity_expiry_timestamp_seconds"] - seconds) < 1
    assert m["ftagent_lease_generation"] == 7

    # The server is unreachable: the failure is counted, the last success kept.
    guest.conf.write_text(guest.conf.read_text().replace(guest.server.url, "https://127.0.0.1:9/candlepin")
                          .replace("timeout = 20", "timeout = 2\nretries = 0"))
    assert ftagent(guest, "checkin").returncode == 69
    assert ftagent(guest, "checkin").returncode == 69
    m = samples(prom)
    assert m["ftagent_checkin_success"] == 0 and m["ftagent_checkin_failures_total"] == 2
    assert m["ftagent_checkin_last_success_timestamp_seconds"] == success
    assert m["ftagent_checkin_last_attempt_timestamp_seconds"] > success
    assert m["ftagent_lease_generation"] == 7
    assert [p.name for p in prom.parent.iterdir() if p.name.endswith(".prom")] == ["ftagent.prom"]


def test_no_metrics_file_by_default(guest: Guest) -> None:
    guest.register()
    assert ftagent(guest, "checkin").returncode == 0
    assert not list(guest.root.rglob("*.prom"))
