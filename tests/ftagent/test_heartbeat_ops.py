"""Operating the heartbeat: one instance only, a truthful `ftagent status`, journald priorities,
a start line, and lease settings derived from what is set (issue 16).

Everything runs through the installed `ftagent` command against a real ftmock."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import FtmockServer
from tests.kit.guest import FTAGENT, Guest, send_signal
from tests.kit.lease import boottime, fingerprint, lease_guest, unique_vm
from tests.kit.orgs import new_org
from tests.kit.wait import wait_until


def vm() -> str:
    return unique_vm("ops")


def ftagent(g: Guest, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FTAGENT, "--config", str(g.conf), *args], capture_output=True, text=True,
                          timeout=60, env=g.env(env))


def start_journaled(g: Guest, *args: str) -> subprocess.Popen[bytes]:
    """`ftagent heartbeat` as systemd starts it: stderr is the journal stream, no -v."""
    log = open(g.log, "ab")  # noqa: SIM115
    st = os.fstat(log.fileno())
    proc = subprocess.Popen([FTAGENT, "--config", str(g.conf), "heartbeat", *args], stdout=log,
                            stderr=subprocess.STDOUT, env=g.env({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}))
    log.close()
    g.procs.append(proc)
    return proc


@pytest.fixture
def a(ftmock_session: FtmockServer, tmp_path: Path, guests: list[Guest]) -> Guest:
    """A registered guest with a lease (its heartbeats are killed when the test ends)."""
    made = lease_guest(ftmock_session, tmp_path / "a", new_org(ftmock_session), vm())
    guests.append(made)
    return made


def start_held(g: Guest) -> subprocess.Popen[bytes]:
    """A journaled heartbeat, once it holds the lease."""
    proc = start_journaled(g)
    wait_until(lambda: g.state() == "HELD", 15, "HELD")
    return proc


def pause_past_deadline(g: Guest) -> None:
    """Until the deadline in the guest's status file (the heartbeat's, or a one-shot claim's) has passed."""
    deadline = float(g.status()["deadline"])
    wait_until(lambda: boottime() > deadline + 0.1, 10, "the lease deadline passing")


def test_second_heartbeat_refuses_and_the_first_keeps_the_lease(a: Guest) -> None:
    first = start_held(a)
    generation, renewals = a.status()["generation"], a.status()["renewals"]
    for args in (("heartbeat",), ("heartbeat", "--once")):
        r = ftagent(a, *args)
        assert r.returncode == 69, r.stderr
        assert f"ftagent heartbeat is already running (pid {first.pid})" in r.stderr
    # Several renewals later: nothing was released, nothing fenced.
    wait_until(lambda: a.status().get("renewals", 0) >= renewals + 3, 5, "three more renewals")
    st = a.status()
    assert (st["state"], st["generation"], st["pid"]) == ("HELD", generation, first.pid)
    assert first.poll() is None and not a.fences()
    assert a.stop(first) == 0
    assert a.state() == "RELEASED"
    # Once it is gone, a new one starts (the kernel dropped the guard with the process).
    r = ftagent(a, "heartbeat", "--once")
    assert r.returncode == 0, r.stderr


def test_journal_priorities_start_line_and_fencing_under_systemd(a: Guest) -> None:
    proc = start_held(a)
    send_signal(proc, signal.SIGSTOP)  # a pause past the deadline: the heartbeat must fence on resume
    pause_past_deadline(a)
    send_signal(proc, signal.SIGCONT)
    wait_until(lambda: a.state() == "FENCED", 10, "FENCED")
    assert a.stop(proc) == 3
    lines = [line for line in a.log.read_text().splitlines() if line]
    assert lines and all(line[:3] in {"<2>", "<3>", "<4>", "<6>", "<7>"} for line in lines), lines
    start = [line for line in lines if "heartbeat started" in line]
    assert len(start) == 1 and start[0].startswith("<6>ftagent ")
    assert f"(pid {proc.pid})" in start[0] and "ttl 3 s, renew every 0.5 s, margin 1 s" in start[0]
    # The loss of the lease is at warning or above, so `journalctl -p warning` shows it.
    fencing = [line for line in lines if "fenc" in line.lower()]
    assert fencing and any(line[:3] in {"<2>", "<3>", "<4>"} for line in fencing), fencing

    # status tells the truth: FENCED is not "valid", and the exit code says so.
    r = ftagent(a, "status")
    assert r.returncode == 3, r.stderr
    assert "Overall status: fenced: this instance does not hold the FT lease" in r.stdout
    assert "valid" not in r.stdout.splitlines()[0].split("(")[0]
    data = json.loads(ftagent(a, "status", "--json").stdout)
    assert data["lease"]["state"] == "FENCED" and data["overall"] == "fenced"


def test_the_holder_id_is_shown_only_by_its_fingerprint(a: Guest) -> None:
    """The holder id is part of what a claim on the server rests on: only its own 0600 file holds it.
    Output, logs and the status file name it by the fingerprint ftmock shows."""
    once = ftagent(a, "-v", "heartbeat", "--once")
    assert once.returncode == 0, once.stderr
    holder_file = a.root / "lease.holder"
    secret = holder_file.read_text().strip()
    assert stat.S_IMODE(holder_file.stat().st_mode) == 0o600
    shown = fingerprint(secret)
    server = a.admin_api("GET", f"consumers/{a.uuid()}/lease").json()
    assert server["holderFingerprint"] == shown
    assert once.stdout.startswith(f"lease HELD (generation {server['generation']}, holder {shown})")
    once_json = ftagent(a, "heartbeat", "--once", "--json")
    assert json.loads(once_json.stdout)["holder_fingerprint"] == shown

    proc = start_held(a)
    status, status_json = ftagent(a, "status"), ftagent(a, "status", "--json")
    status_file = a.status_file.read_text()
    assert a.stop(proc) == 0
    log = a.log.read_text()
    assert [line for line in log.splitlines() if "heartbeat started" in line and f"holder {shown}," in line]
    assert f"holder {shown})" in status.stdout
    assert json.loads(status_json.stdout)["lease"]["holder_fingerprint"] == shown
    assert json.loads(status_file)["holder_fingerprint"] == shown
    for text in (once.stdout, once.stderr, once_json.stdout, once_json.stderr, status.stdout, status.stderr,
                 status_json.stdout, status_file, log):
        assert secret not in text


def test_a_holder_id_copied_from_another_system_is_refused_saying_what_to_do(
        a: Guest, ftmock_session: FtmockServer, tmp_path: Path, guests: list[Guest]) -> None:
    """A disk image cloned with its lease.holder and registered as a system of its own: the server
    refuses a claim naming the holder id of another consumer's live lease, and the agent says so
    and which file to remove, instead of "held by None"."""
    clone = lease_guest(ftmock_session, tmp_path / "clone", a.org, vm())
    guests.append(clone)
    proc = start_held(a)
    shutil.copy(a.root / "lease.holder", clone.root / "lease.holder")
    holder_file = str(clone.root / "lease.holder")
    r = ftagent(clone, "heartbeat", "--once")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "None" not in r.stdout and "holds another consumer's lease" in r.stdout, r.stdout
    assert f"is kept in {holder_file}; if that file was copied from another system, remove it" in r.stdout
    r = ftagent(clone, "status")
    assert r.returncode == 3 and f"is kept in {holder_file}" in r.stdout, r.stdout
    lease = json.loads(ftagent(clone, "status", "--json").stdout)["lease"]
    assert (lease["state"], lease["held_by"]) == ("ACQUIRING", None)
    assert "holds another consumer's lease" in lease["reason"] and holder_file in lease["reason"]
    # Done as told: a holder id of its own, a lease of its own; the other system never noticed.
    os.unlink(holder_file)
    r = ftagent(clone, "heartbeat", "--once")
    assert r.returncode == 0, r.stdout + r.stderr
    assert a.state() == "HELD" and not a.fences() and a.stop(proc) == 0


def test_plain_stderr_outside_systemd(a: Guest) -> None:
    a.configure("server", timeout=None, timout=5)  # a misspelt key
    r = ftagent(a, "identity")
    assert r.returncode == 0
    assert "ftagent: WARNING: " in r.stderr and not r.stderr.startswith("<")


def test_errors_carry_priority_3_in_the_journal(tmp_path: Path) -> None:
    conf = tmp_path / "ftagent.conf"
    conf.write_text("[server]\nurl = https://127.0.0.1:9/candlepin\ntimout = 1\n[agent]\n"
                    f"identity_dir = {tmp_path}/id\nlock_file = {tmp_path}/lock\n")
    err = tmp_path / "stderr"
    with open(err, "wb") as fh:
        st = os.fstat(fh.fileno())
        r = subprocess.run([FTAGENT, "--config", str(conf), "unregister"], stderr=fh, stdout=subprocess.PIPE,
                           env=dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}"), timeout=60)
    assert r.returncode == 1
    lines = err.read_text().splitlines()
    assert any(line.startswith("<4>") and "did you mean timeout?" in line for line in lines), lines
    assert any(line.startswith("<3>ftagent: error: this system is not registered") for line in lines), lines


def test_status_after_a_one_shot_claim_turns_stale(a: Guest) -> None:
    r = ftagent(a, "heartbeat", "--once")
    assert r.returncode == 0, r.stderr
    r = ftagent(a, "status")
    assert r.returncode == 0, r.stdout + r.stderr  # held, within its deadline
    assert "Lease: HELD" in r.stdout
    pause_past_deadline(a)  # ttl 3 - margin 1 after the claim; no daemon renews
    r = ftagent(a, "status")
    assert r.returncode == 3
    assert "Overall status: stale" in r.stdout and "Lease: STALE (was HELD: its deadline passed" in r.stdout
    lease = json.loads(ftagent(a, "status", "--json").stdout)["lease"]
    assert lease["state"] == "STALE" and lease["recorded_state"] == "HELD" and lease["deadline_in"] < 0


def test_status_without_any_heartbeat_is_not_ok(a: Guest) -> None:
    r = ftagent(a, "status")
    assert r.returncode == 3 and "Lease: no heartbeat yet" in r.stdout
    # The kill switch is a choice: DISABLED is fine.
    a.write_config(enabled="no")
    r = ftagent(a, "heartbeat", "--once")
    r = ftagent(a, "status")
    assert r.returncode == 0, r.stdout + r.stderr


def test_only_ttl_set_works_and_bad_settings_let_status_run(a: Guest) -> None:
    a.lease = {"status_file": "lease.json", "ttl": "8"}
    a.write_config()
    r = ftagent(a, "heartbeat", "--once", "--json")
    assert r.returncode == 0, r.stderr
    listing = json.loads(ftagent(a, "config", "--list", "--json").stdout)["values"]
    timing = {v["key"]: (v["value"], v["source"]) for v in listing if v["section"] == "lease"
              and v["key"] in ("ttl", "renew_interval", "margin")}
    assert timing == {"ttl": ("8.0", str(a.conf)), "renew_interval": ("2.0", "derived"),
                      "margin": ("2.0", "derived")}

    a.write_config(renew_interval="5")  # ttl 8 with renewals every 5 s: invalid
    r = ftagent(a, "heartbeat", "--once")
    assert r.returncode == 78 and "[lease] renew_interval" in r.stderr
    r = ftagent(a, "status")  # read-only: runs, warns, and still reads the status file
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[lease] renew_interval" in r.stderr and "Lease: HELD" in r.stdout
    assert "lease settings:" in r.stdout
    r = ftagent(a, "config", "--list")
    assert r.returncode == 0 and "(invalid)" in r.stdout


def lease_metrics(path: Path) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            key = s.name + "".join(f"{{{v}}}" for v in s.labels.values())
            out[key] = s.value
    return out


def test_heartbeat_metrics_lease_state_generation_and_fences(a: Guest) -> None:
    prom = a.root / "textfile" / "ftagent.prom"
    a.configure("agent", metrics_file=prom)
    proc = start_journaled(a)
    wait_until(lambda: a.state() == "HELD" and prom.exists(), 15, "HELD")
    renewals = a.status()["renewals"]
    wait_until(lambda: a.status().get("renewals", 0) >= renewals + 2, 5, "two more renewals")
    m = lease_metrics(prom)
    assert m["ftagent_lease_state{HELD}"] == 1 and m["ftagent_lease_state{FENCED}"] == 0
    assert m["ftagent_lease_generation"] == a.status()["generation"]
    assert 0 <= m["ftagent_lease_seconds_since_renewal"] < 1.5  # renewals every 0.5 s
    assert m["ftagent_lease_fences_total"] == 0
    assert abs(m["ftagent_lease_updated_timestamp_seconds"] - time.time()) < 5
    send_signal(proc, signal.SIGSTOP)
    pause_past_deadline(a)
    send_signal(proc, signal.SIGCONT)
    wait_until(lambda: lease_metrics(prom).get("ftagent_lease_state{FENCED}") == 1, 10, "FENCED in the metrics")
    assert lease_metrics(prom)["ftagent_lease_fences_total"] == 1
    assert a.stop(proc) == 3
    # A new heartbeat continues the fence counter (Prometheus' increase() sees no reset).
    proc = start_journaled(a)
    wait_until(lambda: lease_metrics(prom).get("ftagent_lease_state{HELD}") == 1, 15, "HELD again")
    assert lease_metrics(prom)["ftagent_lease_fences_total"] == 1
    # The check-in's metrics share the file.
    assert ftagent(a, "checkin").returncode == 0
    m = lease_metrics(prom)
    assert m["ftagent_checkin_success"] == 1 and m["ftagent_lease_state{HELD}"] == 1
    assert a.stop(proc) == 0
