"""The reference server for tests: ``ftmock serve`` as a process on a free loopback port.

The fixtures in ``tests/conftest.py`` start it (one per run, or one per test that needs a clean
slate); benchmarks start it with :func:`start_ftmock`.  :func:`finished_job` waits for a check-in job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.kit.wait import wait_for_file, wait_until

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
        log = self.data_dir.parent / f"{self.data_dir.name}.log"
        env = dict(os.environ, FTMOCK_ADMIN_PASSWORD=self.admin_password)
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ftmock", "serve", "--listen", self.listen,
                 "--data-dir", str(self.data_dir), *self.extra_args],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        self.url = wait_for_file(url_file, self.process, timeout, "ftmock", log)
        # Keep the port across restarts so clients' configuration stays valid.
        self.listen = self.url.split("://", 1)[1].split("/", 1)[0]

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


def start_ftmock(tmp: Path, **kwargs: object) -> FtmockServer:
    """A started server with its data directory in ``tmp/ftmock``."""
    data = tmp / "ftmock"
    data.mkdir(parents=True, exist_ok=True)
    server = FtmockServer(data_dir=data, **kwargs)  # type: ignore[arg-type]
    server.start()
    return server


def finished_job(fetch: Callable[[str], Mapping[str, Any]], job_id: str, timeout: float = 30) -> dict[str, Any]:
    """A hypervisor check-in job once it has FINISHED or FAILED, read through ``fetch(job_id)``
    (whatever client the test uses: requests, python-rhsm)."""

    def done() -> dict[str, Any] | None:
        job = dict(fetch(job_id))
        return job if job["state"] in ("FINISHED", "FAILED") else None

    return wait_until(done, timeout, f"job {job_id} to finish")
