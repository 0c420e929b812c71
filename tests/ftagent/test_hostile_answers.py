"""Issue 10, item 2: the installed commands against a hostile server on loopback.

Endless bodies, a gzip bomb, and answers trickled one byte at a time just inside the per-read
timeout must end each command promptly with exit 69 and bounded memory; the heartbeat's light
renewal path must give up within its timeout (inside the fencing margin) whatever the server does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ftagent.errors import BadAnswer, ConnectionFailed
from tests.conftest import FtmockServer
from tests.ftagent.hostile import hostile_server
from tests.kit.guest import FTAGENT, Guest
from tests.kit.lease import lease_guest
from tests.kit.wait import wait_until

TIMEOUT = 2.0
RETRIES = 1
# Python start-up and loaded CI machines: generous, but far below the minutes the bug took.
SLACK = 15.0
MAX_RSS_MB = 300


@pytest.fixture
def guest(tmp_path: Path, ftmock_session: FtmockServer, org: str) -> Guest:
    return lease_guest(ftmock_session, tmp_path / "guest", org, str(uuid.uuid4()))


def point_at(guest: Guest, url: str) -> None:
    guest.configure("server", url=url, timeout=TIMEOUT, retries=RETRIES)


def run_measured(guest: Guest, *args: str) -> tuple[int, float, float, str]:
    """Run the installed ftagent; (exit code, seconds, peak RSS in MB, stderr)."""
    started = time.monotonic()
    proc = subprocess.Popen([FTAGENT, "--config", str(guest.conf), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=guest.env())

    def exited() -> tuple[int, Any] | None:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        return (status, usage) if pid else None

    try:
        status, usage = wait_until(exited, 120, f"ftagent {' '.join(args)} to exit")
    except AssertionError:
        proc.kill()
        _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stdout:
        proc.stdout.close()
    if proc.stderr:
        proc.stderr.close()
    rss_mb = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2**20
    return proc.returncode, elapsed, rss_mb, stderr


# Worst case: every attempt waits out its whole-answer deadline, plus urllib3's backoff between them.
BOUND = (RETRIES + 1) * TIMEOUT + 2.0 + SLACK


@pytest.mark.parametrize("mode", ["endless", "gzip-bomb", "trickle-headers", "trickle-body"])
@pytest.mark.parametrize("command", [("checkin",), ("heartbeat", "--once")])
def test_hostile_answers_end_the_command(guest: Guest, ftmock_session: FtmockServer, mode: str,
                                         command: tuple[str, ...]) -> None:
    with hostile_server(ftmock_session.data_dir, mode) as (url, served):
        point_at(guest, url)
        code, elapsed, rss_mb, stderr = run_measured(guest, *command)
    assert served, "the command never reached the hostile server"
    assert code == 69, (code, stderr[-2000:])
    assert "Traceback" not in stderr and "internal error" not in stderr.lower(), stderr[-2000:]
    assert elapsed < BOUND, f"{command} took {elapsed:.1f} s against {mode}"
    assert rss_mb < MAX_RSS_MB, f"{command} grew to {rss_mb:.0f} MB against {mode}"
    if mode in ("endless", "gzip-bomb"):
        assert "refused" in stderr, stderr[-2000:]


def test_checkin_lock_is_free_after_a_trickling_server(guest: Guest, ftmock_session: FtmockServer) -> None:
    """The agent lock held by a hung checkin was the real damage: the next command must get it."""
    with hostile_server(ftmock_session.data_dir, "trickle-body") as (url, _):
        point_at(guest, url)
        assert run_measured(guest, "checkin")[0] == 69
    point_at(guest, ftmock_session.url)
    code, _, _, stderr = run_measured(guest, "checkin")
    assert code == 0, stderr[-2000:]


@pytest.mark.parametrize("mode", ["trickle-headers", "trickle-body", "endless", "gzip-bomb"])
def test_light_renewal_gives_up_within_its_timeout(guest: Guest, ftmock_session: FtmockServer, mode: str) -> None:
    """The heartbeat's renewals: a call given 1 s (what is left before the fencing margin) ends by then."""
    from ftagent.light_transport import LightTransport

    with hostile_server(ftmock_session.data_dir, mode) as (url, _):
        client = LightTransport(url, ca_cert=ftmock_session.ca_path, insecure=False,
                                cert_file=guest.id_dir / "cert.pem", key_file=guest.id_dir / "key.pem")
        started = time.monotonic()
        with pytest.raises(ConnectionFailed) as info:
            client.send("POST", "consumers/x/lease", body=b'{"holder": "h"}', headers={}, timeout=1.0)
        elapsed = time.monotonic() - started
        client.close()
    assert elapsed < 1.5, f"{mode}: {elapsed:.2f} s"
    if mode in ("endless", "gzip-bomb"):
        assert isinstance(info.value, BadAnswer)

