"""systemd's watchdog: the daemon's loop itself sends WATCHDOG=1, so that a loop wedged in a call
stops the pings (and systemd, after WatchdogSec, kills and restarts the daemon)."""

from __future__ import annotations

import configparser
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

from ftreport import examples
from tests.conftest import FtmockServer
from tests.kit.guest import send_signal
from tests.kit.notify import NotifySocket
from tests.kit.orgs import new_org
from tests.kit.wait import hold_for, wait_until

from .conftest import Daemon, write_config
from .test_ftmock import server_section

REPO = Path(__file__).resolve().parents[2]
WATCHDOG = 1.0  # seconds: WATCHDOG_USEC as systemd would set it for WatchdogSec=1s


def test_pings_come_from_the_loop_and_stop_while_it_is_wedged(
        ftmock: FtmockServer, tmp_path: Path, isolated_env: dict[str, str],
        daemons: Callable[..., Daemon]) -> None:
    """While the loop turns, WATCHDOG=1 comes several times per timeout; while it hangs in a call to a
    server that stopped answering (ftmock frozen with SIGSTOP), none comes although the process and
    its source threads live on; once the call returns, the pings resume and the report goes."""
    org = new_org(ftmock)
    report = tmp_path / "report.json"
    report.write_text(json.dumps(examples.builtin_report("report1")))
    conf = write_config(tmp_path / "f.conf", {
        "global": {"state_dir": tmp_path / "state", "settle": 0},
        "site": {"type": "fake", "file": report, **server_section(ftmock, org)}})
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        env = dict(isolated_env, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC=str(int(WATCHDOG * 1e6)))
        daemon = daemons(["-c", str(conf)], env, tmp_path / "daemon.log")
        daemon.wait_log("report accepted")
        # The unit's WatchdogSec must outlast a slow server's call; 1 s does not, and ftreport says so.
        assert "the systemd watchdog (WatchdogSec=1 s) is shorter than one call to a server may take" in daemon.text()
        healthy = len(notify.times("WATCHDOG=1"))
        wait_until(lambda: len(notify.times("WATCHDOG=1")) >= healthy + 4, 10, "WATCHDOG=1 while the loop turns")
        assert healthy >= 1

        assert ftmock.process is not None
        send_signal(ftmock.process, signal.SIGSTOP)
        try:
            report.write_text(json.dumps(examples.builtin_report("report2")))
            daemon.wait_log("changed, re-read it")
            wedged = time.time() + WATCHDOG  # the loop may still come round once before it sends
            for _ in hold_for(3 * WATCHDOG):  # a real duration is what is tested: three timeouts
                assert daemon.process.poll() is None
            assert [t for t in notify.times("WATCHDOG=1") if t > wedged] == [], \
                "WATCHDOG=1 sent while the loop was stuck in a call"
        finally:
            send_signal(ftmock.process, signal.SIGCONT)
        resumed = time.time()
        wait_until(lambda: [t for t in notify.times("WATCHDOG=1") if t > resumed], 40,
                   "WATCHDOG=1 again once the call returned")
        daemon.wait_log("report accepted", count=2, timeout=40)
        assert daemon.stop() == 0
    finally:
        notify.close()


def test_the_unit_arms_a_watchdog_longer_than_a_slow_call() -> None:
    """The shipped unit sets WatchdogSec, longer than a call may take on its three attempts (90 s),
    and restarts the daemon when the watchdog fires."""
    unit = configparser.RawConfigParser(strict=False)
    unit.read(REPO / "packaging" / "systemd" / "ftreport.service")
    value = unit.get("Service", "WatchdogSec")
    seconds = float(value[:-3]) * 60 if value.endswith("min") else float(value.rstrip("s"))
    assert seconds >= 3 * 90
    assert unit.get("Service", "Restart") in ("on-failure", "on-watchdog", "on-abnormal", "always")
