"""The heartbeat warns when systemd's watchdog is too slow to stop a hung agent within its lease."""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace

import pytest

from ftagent.lease.heartbeat import Heartbeat


def check(margin: float, env: dict[str, str]) -> float | None:
    fake = SimpleNamespace(settings=SimpleNamespace(margin=margin))
    return Heartbeat._check_watchdog(fake, env)  # type: ignore[arg-type]


def test_watchdog_longer_than_margin_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ftagent.lease.heartbeat"):
        assert check(5, {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}) == 20.0
    assert "WatchdogSec (20 s) is longer than the lease margin (5 s)" in caplog.text


def test_watchdog_within_margin_or_absent_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ftagent.lease.heartbeat"):
        assert check(5, {"WATCHDOG_USEC": "5000000"}) == 5.0
        assert check(5, {}) is None
        assert check(5, {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None  # armed for another pid
    assert caplog.text == ""
