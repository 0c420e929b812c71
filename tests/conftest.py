"""Shared fixtures: real servers on loopback, started on port 0 and torn down after use, and the
fixtures of the test kit (``tests/kit``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dnfkit import cdn_server, rpm_repo
from tests.kit.closing import closing
from tests.kit.ftmock import ADMIN_PASSWORD, ADMIN_USER, FtmockServer, start_ftmock
from tests.kit.guest import any_guest, guest, guests
from tests.kit.orgs import org

__all__ = ["ADMIN_PASSWORD", "ADMIN_USER", "FtmockServer", "any_guest", "cdn_server", "closing", "guest", "guests",
           "org", "rpm_repo"]


@pytest.fixture(scope="session")
def ftmock_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtmockServer]:
    """One server shared by a whole run; tests isolate themselves with their own orgs."""
    server = start_ftmock(tmp_path_factory.mktemp("ftmock-session"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ftmock_nocsr_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtmockServer]:
    """A shared server started with --no-csr: it ignores CSRs and generates keys, as stock Candlepin."""
    server = start_ftmock(tmp_path_factory.mktemp("ftmock-nocsr-session"), extra_args=["--no-csr"])
    yield server
    server.stop()


@pytest.fixture(params=["csr", "no-csr"])
def any_ftmock(request: pytest.FixtureRequest) -> FtmockServer:
    """Each kind of server in turn: one that honours CSRs (ftmock) and one that ignores them (Candlepin)."""
    name = "ftmock_session" if request.param == "csr" else "ftmock_nocsr_session"
    server: FtmockServer = request.getfixturevalue(name)
    return server


@pytest.fixture
def ftmock(tmp_path: Path) -> Iterator[FtmockServer]:
    """A fresh server with an empty database, for tests that restart it or need a clean slate."""
    server = start_ftmock(tmp_path)
    yield server
    server.stop()
