"""A server back before the lease deadline is used (issue 30): while DEGRADED the heartbeat retries every
``retry_interval``, not every ``renew_interval``, so an outage that ends a retry before the deadline
ends without fencing, a longer one fences, and the standby never holds while the holder does.

The issue's case: ttl 8 (margin 2, renew_interval 3: the deadline is 6 s after a renewal was sent), a
4.5 s outage. Retrying every renew_interval, the failed renewal 3 s in is retried at the deadline
itself, and the guest fenced although the server was back. Two trials here (one each side of the
window); ``bench/heartbeat_outage.py`` sweeps outage lengths across the window, both kinds of outage,
many times.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ftagent.outage_kit import OutageRig
from tests.ftagent.tcpgate import tcp_gate
from tests.kit.ftmock import FtmockServer
from tests.kit.lease import unique_vm
from tests.kit.orgs import new_org

#: The issue's timing, with retries every half second.
TIMING = {"ttl": "8", "margin": "2", "renew_interval": "3", "retry_interval": "0.5"}


@pytest.fixture
def rig(ftmock_session: FtmockServer, tmp_path: Path) -> Iterator[OutageRig]:
    server = ftmock_session
    with tcp_gate(("127.0.0.1", server.port)) as gate:
        made = OutageRig(server, tmp_path, new_org(server), unique_vm("outage"), gate, **TIMING)
        try:
            yield made
        finally:
            made.close()


def test_an_outage_ending_before_the_deadline_is_ridden_out_a_longer_one_fences(rig: OutageRig) -> None:
    # Ends 1.5 s before the deadline: three retries (0.5 s +/- 20 %) fit after it, and the first
    # renewal after the cut (3 s in) has long failed: only the short cadence can catch the server.
    short = rig.trial(lambda window: window - 1.5)
    assert short.window > 5.0, short  # the cut came right after a renewal
    assert not short.fenced and not short.overlap, short
    assert rig.a.state() == "HELD"
    # Ends 0.5 s after the deadline: fenced at the deadline; the standby only gets the lease later.
    long = rig.trial(lambda window: window + 0.5)
    assert long.fenced and not long.overlap, long
    assert "deadline" in rig.a.fences()[-1][1]
