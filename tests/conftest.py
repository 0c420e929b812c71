"""Shared fixtures: real servers on loopback, started on port 0 and torn down after use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin-secret"


@dataclass
class FtmockServer:
    """An `ftmock serve` process on loopback with its data directory."""

    data_dir: Path
    listen: str = "127.0.0.1:0"
    admin_password: str = ADMIN_PASSWORD
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    url: str = ""

    @property
    def ca_path(self) -> Path:
        return self.data_dir / "ca.pem"

    @property
    def admin_auth(self) -> tuple[str, str]:
        return (ADMIN_USER, self.admin_password)

    @property
    def port(self) -> int:
        return int(self.url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])

    def start(self, timeout: float = 30.0) -> None:
        url_file = self.data_dir / "url"
        if url_file.exists():
            url_file.unlink()
        log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")  # noqa: SIM115
        env = dict(os.environ, FTMOCK_ADMIN_PASSWORD=self.admin_password)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ftmock", "serve", "--listen", self.listen,
             "--data-dir", str(self.data_dir), *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if url_file.exists() and url_file.read_text().strip():
                self.url = url_file.read_text().strip()
                # Keep the port across restarts so clients' configuration stays valid.
                self.listen = self.url.split("://", 1)[1].split("/", 1)[0]
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"ftmock exited with {self.process.returncode}; see {log.name}")
            time.sleep(0.05)
        raise RuntimeError("ftmock did not become ready")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        rc = self.process.returncode
        self.process = None
        return rc

    def restart(self) -> None:
        self.stop()
        self.start()

    def admin(self, *args: str) -> str:
        """Run the `ftmock` admin CLI against this server's data directory; return stdout."""
        out = subprocess.run(
            [sys.executable, "-m", "ftmock", "--data-dir", str(self.data_dir), *args],
            check=True, capture_output=True, text=True,
        )
        return out.stdout


def _start(tmp: Path, **kwargs: object) -> FtmockServer:
    data = tmp / "ftmock"
    data.mkdir(parents=True, exist_ok=True)
    server = FtmockServer(data_dir=data, **kwargs)  # type: ignore[arg-type]
    server.start()
    return server


@pytest.fixture(scope="session")
def ftmock_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtmockServer]:
    """One server shared by a whole run; tests isolate themselves with their own orgs."""
    server = _start(tmp_path_factory.mktemp("ftmock-session"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ftmock_nocsr_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtmockServer]:
    """A shared server started with --no-csr: it ignores CSRs and generates keys, as stock Candlepin."""
    server = _start(tmp_path_factory.mktemp("ftmock-nocsr-session"), extra_args=["--no-csr"])
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
    server = _start(tmp_path)
    yield server
    server.stop()
