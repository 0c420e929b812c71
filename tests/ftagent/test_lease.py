"""The lease state machine, settings, fencing ladder and status file, without a server (fast)."""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from ftagent.config import load_config
from ftagent.errors import ConfigError, ConnectionFailed
from ftagent.lease import (
    Grant,
    LeaseKeeper,
    LeaseLost,
    LeaseRefused,
    LeaseSettings,
    LeaseState,
    holder_path,
    load_or_create_holder,
    parse_lease_settings,
    status_summary,
    write_status,
)
from ftagent.lease.clock import ManualClock, SystemClock, clock_name
from ftagent.lease.fencing import FenceLadder, parse_signal_spec
from tests.kit.lease import overlaps

ROOT = Path(__file__).resolve().parents[2]


class FakeTransport:
    """A lease backend stand-in: a scripted answer per call (a dict, or an exception to raise)."""

    name = "fake"

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.answers: list[Any] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.released: list[str] = []
        self.delay = 0.0
        self.ttl = 6.0

    def _claim(self, consumer: str, holder: str, generation: int | None, timeout: float) -> Grant:
        self.calls.append((consumer, {"holder": holder, "generation": generation, "ttl": self.ttl,
                                      "timeout": timeout}))
        self.clock.advance(self.delay)
        answer = self.answers.pop(0) if self.answers else "ok"
        if isinstance(answer, Exception):
            raise answer
        if answer == "ok":
            return Grant(holder, generation or 7, consumer)
        return Grant(answer.get("holder"), answer.get("generation"), answer.get("consumer"))

    def grant(self, consumer: str, holder: str, timeout: float) -> Grant:
        return self._claim(consumer, holder, None, timeout)

    def renew(self, consumer: str, holder: str, generation: int, timeout: float) -> Grant:
        return self._claim(consumer, holder, generation, timeout)

    def handover(self, successor: Mapping[str, Any], holder: str, generation: int | None, timeout: float) -> Grant:
        return self._claim(str(successor["uuid"]), holder, generation, timeout)

    def release(self, consumer: str, holder: str, timeout: float) -> None:
        self.released.append(holder)

    def close(self) -> None:
        pass


def conflict(holder: str, generation: int, **extra: Any) -> LeaseRefused:
    return LeaseRefused("held", holder=holder, generation=generation, **extra)


def keeper(clock: ManualClock, transport: FakeTransport, fenced: list[str], **settings: Any) -> LeaseKeeper:
    s = LeaseSettings(**{"renew_interval": 1.0, "ttl": 6.0, "margin": 2.0, **settings})
    transport.ttl = s.ttl
    return LeaseKeeper(s, transport, holder="me", consumer="c1", clock=clock, fence=lambda r: fenced.append(r) or None)


def rig(**settings: Any) -> tuple[ManualClock, FakeTransport, list[str], LeaseKeeper]:
    """A keeper on a manual clock with a scripted backend; the reasons it fenced for go into the list."""
    clock = ManualClock()
    transport = FakeTransport(clock)
    fenced: list[str] = []
    return clock, transport, fenced, keeper(clock, transport, fenced, **settings)


def test_acquire_renew_and_deadline_fence() -> None:
    clock, t, fenced, k = rig()
    assert k.step() == LeaseState.HELD and k.generation == 7
    assert t.calls[0][1]["generation"] is None  # acquisition sends no token
    assert k.deadline == pytest.approx(clock.now() + 4.0)  # send time + ttl - margin
    clock.advance(1)
    assert k.step() == LeaseState.HELD and t.calls[1][1]["generation"] == 7  # renewal sends the token
    assert t.calls[1][1]["timeout"] <= 2.0  # half of what is left before the deadline
    t.answers = [ConnectionFailed("down"), ConnectionFailed("down")]
    clock.advance(1)
    assert k.step() == LeaseState.DEGRADED
    clock.advance(1)
    assert k.step() == LeaseState.DEGRADED and k.holds()
    assert not k.check_deadline()
    clock.advance(2.01)
    assert not k.holds()
    assert k.check_deadline() and k.state == LeaseState.FENCED and "deadline" in fenced[0]
    assert k.step() == LeaseState.FENCED and len(t.calls) == 4  # terminal: no more requests
    assert k.release() == LeaseState.FENCED and t.released == []


def test_conflict_on_renewal_fences_at_once_but_not_while_acquiring() -> None:
    _clock, t, fenced, k = rig()
    t.answers = [conflict("other", 3)]
    assert k.step() == LeaseState.ACQUIRING and k.held_by == "other" and not fenced
    assert k.step() == LeaseState.HELD
    t.answers = [conflict("other", 8)]
    assert k.step() == LeaseState.FENCED and "lease lost" in fenced[0]


def test_late_answer_and_unexpected_generation() -> None:
    _clock, t, fenced, k = rig()
    t.delay = 4.5  # the grant arrives after its own deadline: not usable, not fenced
    assert k.step() == LeaseState.ACQUIRING and not fenced
    t.delay = 0
    assert k.step() == LeaseState.HELD
    t.answers = [{"holder": "me", "generation": 9}]
    assert k.step() == LeaseState.FENCED and "generation changed" in fenced[0]


def test_wall_clock_jumps_change_nothing() -> None:
    clock, _t, fenced, k = rig()
    k.step()
    deadline = k.deadline
    for jump in (3600.0, -7200.0):
        clock.jump_wall(jump)
        assert not k.check_deadline() and k.deadline == deadline and k.holds()
    clock.advance(1)
    assert k.step() == LeaseState.HELD and not fenced


def test_kill_switch_observes_and_never_fences() -> None:
    clock = ManualClock()
    t = FakeTransport(clock)
    fenced: list[str] = []
    k = keeper(clock, t, fenced, enabled=False)
    assert k.step() == LeaseState.DISABLED and k.observed == LeaseState.HELD
    t.answers = [conflict("other", 8)]
    assert k.step() == LeaseState.DISABLED
    assert fenced == [] and k.suppressed and k.observed == LeaseState.ACQUIRING
    k.step()
    clock.advance(10)
    assert not k.check_deadline() and fenced == [] and len(k.suppressed) == 2
    assert k.snapshot()["state"] == "DISABLED" and k.snapshot()["observed"] == "ACQUIRING"


def test_failover_claim_handover_and_loss() -> None:
    _clock, t, fenced, k = rig()
    k.step()
    t.answers = [{"holder": "me", "generation": 8, "consumer": "c2"}]
    k.claim_successor("c1", "c2", {"idCert": {"cert": "x"}})
    assert (k.state, k.generation, k.consumer) == (LeaseState.HELD, 8, "c2")
    assert t.calls[-1] == ("c2", {"holder": "me", "generation": 7, "ttl": 6.0, "timeout": pytest.approx(2.0)})
    t.answers = [conflict("me", 9)]
    with pytest.raises(LeaseLost):
        k.claim_successor("c2", "c3", {})
    assert k.state == LeaseState.FENCED and "another instance is live" in fenced[0]


def test_release_on_clean_stop() -> None:
    clock = ManualClock()
    t = FakeTransport(clock)
    k = keeper(clock, t, [])
    k.step()
    assert k.release() == LeaseState.RELEASED and t.released == ["me"]
    assert keeper(clock, t, []).release() == LeaseState.RELEASED and t.released == ["me"]  # never held


def write_conf(tmp: Path, lease: str) -> Path:
    path = tmp / "ftagent.conf"
    path.write_text(f"[server]\nurl = https://127.0.0.1:1/candlepin\n\n[lease]\n{lease}\n")
    return path


@pytest.mark.parametrize(("lease", "key"), [
    ("ttl = 0.5", "ttl"),
    ("ttl = abc", "ttl"),
    ("renew_interval = -1", "renew_interval"),
    ("ttl = 20\nrenew_interval = 9", "renew_interval"),
    ("ttl = 20\nmargin = 16", "margin"),
    ("renew_interval = 1\nmargin = 3", "margin"),
    ("enabled = maybe", "enabled"),
    ("fence_signal = SIGNOPE app", "fence_signal"),
    ("fence_signal = KILL", "fence_signal"),
    ("fence_command = 'unclosed", "fence_command"),
    ("backend = zookeeper", "backend"),
])
def test_bad_settings_name_file_section_and_key(tmp_path: Path, lease: str, key: str) -> None:
    path = write_conf(tmp_path, lease)
    with pytest.raises(ConfigError) as err:
        parse_lease_settings(load_config(path))
    assert (err.value.file, err.value.section, err.value.key) == (str(path), "lease", key)
    assert str(path) in str(err.value) and f"[lease] {key}" in str(err.value)


def test_settings_defaults_and_relative_status_file(tmp_path: Path) -> None:
    s = parse_lease_settings(load_config(write_conf(tmp_path, "status_file = run/lease.json\nfence_units = a.service, b")))
    assert (s.renew_interval, s.ttl, s.margin, s.enabled) == (5.0, 20.0, 5.0, True)
    assert s.status_file == tmp_path.resolve() / "run" / "lease.json"
    assert s.fence_units == ("a.service", "b")


@pytest.mark.parametrize(("lease", "expected"), [
    ("ttl = 10", (2.5, 10.0, 2.5)),
    ("ttl = 60", (15.0, 60.0, 15.0)),
    ("renew_interval = 2", (2.0, 8.0, 2.0)),
    ("margin = 3", (3.0, 12.0, 3.0)),
    ("ttl = 40\nmargin = 8", (10.0, 40.0, 8.0)),
])
def test_unset_timing_follows_what_is_set(tmp_path: Path, lease: str, expected: tuple[float, float, float]) -> None:
    s = parse_lease_settings(load_config(write_conf(tmp_path, lease)))
    assert (s.renew_interval, s.ttl, s.margin) == expected


def test_derived_values_are_named_in_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_lease_settings(load_config(write_conf(tmp_path, "ttl = 20\nrenew_interval = 9")))
    assert "derived from ttl: margin = 5" in str(err.value)


def test_config_error_exits_78(tmp_path: Path) -> None:
    path = write_conf(tmp_path, "ttl = 2\nrenew_interval = 1\nmargin = 1")
    r = subprocess.run([sys.executable, "-m", "ftagent", "--config", str(path), "heartbeat", "--once"],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    assert r.returncode == 78, r.stderr
    assert "[lease] margin" in r.stderr


def test_holder_id_created_once(tmp_path: Path) -> None:
    status = tmp_path / "lease.json"
    first = load_or_create_holder(status)
    assert holder_path(status) == tmp_path / "lease.holder"
    assert stat.S_IMODE(holder_path(status).stat().st_mode) == 0o600  # a secret: its owner's only
    assert load_or_create_holder(status) == first
    assert load_or_create_holder(tmp_path / "other.json") != first


def test_holder_file_an_earlier_version_left_readable_is_restricted(tmp_path: Path) -> None:
    status = tmp_path / "lease.json"
    holder_path(status).write_text("host:0123456789abcdef\n")
    holder_path(status).chmod(0o644)
    assert load_or_create_holder(status) == "host:0123456789abcdef"
    assert stat.S_IMODE(holder_path(status).stat().st_mode) == 0o600


def test_status_summary_reads_the_file(tmp_path: Path) -> None:
    from ftagent.lease.clock import boot_id

    settings = LeaseSettings(status_file=tmp_path / "lease.json")
    assert status_summary(settings)["state"] is None
    clock = SystemClock()
    write_status(settings.status_file, {"state": "HELD", "generation": 4, "holder_fingerprint": "1a2b3c4d",
                                        "held_by": "1a2b3c4d",
                                        "deadline": clock.now() + 10, "boot_id": boot_id(), "pid": os.getpid(),
                                        "mode": "daemon"}, durable=True)
    summary = status_summary(settings)
    assert (summary["state"], summary["generation"], summary["holder_fingerprint"]) == ("HELD", 4, "1a2b3c4d")
    assert 9 < summary["deadline_in"] <= 10 and summary["running"]
    assert clock_name() in ("boottime", "monotonic")


def test_fence_ladder_command_units_signal(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "systemctl.txt"
    fake = bin_dir / "systemctl"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    fake.chmod(0o755)
    marker = tmp_path / "marker.txt"
    victim = subprocess.Popen(["sleep", "60"])
    pidfile = tmp_path / "victim.pid"
    pidfile.write_text(f"{victim.pid}\n")
    ladder = FenceLadder(
        command=f"sh -c 'echo \"$1|$FTAGENT_LEASE_GENERATION|$FTAGENT_FENCE_REASON|$FTAGENT_LEASE_HOLDER_FINGERPRINT\" "
                f"> {marker}' hook",
        units=["app.service", "db.service"],
        signal_spec=parse_signal_spec(f"SIGTERM {pidfile}"),
        step_timeout=5,
        env=dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}"),
    )
    report = ladder.fence("lost it", holder_fingerprint="1a2b3c4d", generation=5)
    assert marker.read_text().strip() == "lost it|5|lost it|1a2b3c4d"
    assert calls.read_text().split() == ["stop", "--", "app.service", "db.service"]
    assert victim.wait(timeout=10) == -signal.SIGTERM
    assert [s["step"] for s in report.steps] == ["command", "units", "signal"]
    assert report.steps[2]["pids"] == [victim.pid]


def test_fence_ladder_bounds_a_hanging_hook_and_goes_on(tmp_path: Path) -> None:
    marker = tmp_path / "after.txt"
    killed: list[tuple[int, int]] = []
    ladder = FenceLadder(command="sh -c 'sleep 30' hook", units=["x"], signal_spec=parse_signal_spec("KILL myapp"),
                         step_timeout=0.3, systemctl=str(marker),  # not executable: the rung fails, the ladder goes on
                         processes=lambda: [(4242, {"myapp"}), (4343, {"other"})],
                         kill=lambda pid, sig: killed.append((pid, sig)))
    started = time.monotonic()
    report = ladder.fence("test")
    assert time.monotonic() - started < 3
    assert report.steps[0]["status"] == 124 and report.steps[1]["status"] != 0
    assert killed == [(4242, signal.SIGKILL)]


def test_overlap_checker() -> None:
    ok = [{"holderFingerprint": "a", "event": "grant", "start": 0, "expires": 3},
          {"holderFingerprint": "a", "event": "renew", "start": 1, "expires": 4},
          {"holderFingerprint": "a", "event": "release", "start": 2, "expires": 2},
          {"holderFingerprint": "b", "event": "grant", "start": 2.5, "expires": 5.5}]
    assert overlaps(ok) == []
    bad = [{"holderFingerprint": "a", "event": "grant", "start": 0, "expires": 3},
           {"holderFingerprint": "b", "event": "grant", "start": 2, "expires": 5}]
    assert len(overlaps(bad)) == 1


def test_unknown_lease_key_offers_the_nearest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ftagent")
    s = parse_lease_settings(load_config(write_conf(tmp_path, "ttl = 40\nrenew_intervall = 2")))
    assert s.renew_interval == 10.0  # the typo is ignored, not applied
    assert "[lease] unknown key renew_intervall ignored; did you mean renew_interval?" in caplog.text


def test_another_backends_key_is_named_as_such_and_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ftagent")
    s = parse_lease_settings(load_config(write_conf(tmp_path, "backend = server\nsanlock_host_id = 3\netcd_prefx = /x")))
    assert s.backend == "server" and s.backend_options is None
    assert "[lease] sanlock_host_id is for backend sanlock; ignored with backend server" in caplog.text
    assert "[lease] unknown key etcd_prefx ignored; did you mean etcd_prefix?" in caplog.text
