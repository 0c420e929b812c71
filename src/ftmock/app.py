"""Wiring: data directory, database, CA, API, job runner and HTTPS server, with a clean stop."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType

from ftagent.atomic import write_atomic

from .api import PREFIX, Api, create_owner
from .auth import set_password
from .ca import CertificateAuthority
from .errors import ConfigError, Unavailable
from .hypervisors import JobRunner
from .server import DEFAULT_REQUEST_TIMEOUT, FtmockHTTPServer, make_tls_context
from .store import Database

__all__ = ["DEFAULT_ADMIN_PASSWORD", "FtmockApp", "open_database"]

log = logging.getLogger(__name__)

DEFAULT_ADMIN_PASSWORD = "admin"  # noqa: S105 - the documented default of a test server


def open_database(data_dir: Path, admin_password: str | None = None) -> Database:
    """Open (creating on first use) the database with org `admin` and user `admin`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    db = Database(data_dir / "ftmock.db")
    with db.transaction() as tx:
        if tx.one("SELECT 1 FROM owners WHERE key = 'admin'") is None:
            create_owner(tx, "admin", "Admin Owner")
        has_admin = tx.one("SELECT 1 FROM users WHERE username = 'admin'") is not None
        if admin_password is not None or not has_admin:
            set_password(tx, "admin", admin_password or DEFAULT_ADMIN_PASSWORD)
    return db


class FtmockApp:
    """A running server; `serve()` blocks until `stop()` or SIGTERM/SIGINT."""

    def __init__(self, data_dir: Path, host: str, port: int, admin_password: str | None = None,
                 honour_csr: bool = True, request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self.data_dir = data_dir
        # The address first: a port in use fails here, before a first start writes a CA and a database.
        try:
            self.httpd = FtmockHTTPServer((host, port), request_timeout)
        except OSError as exc:
            raise Unavailable(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        try:
            self.db = open_database(data_dir, admin_password)
            self.ca = CertificateAuthority.load_or_create(data_dir)
            cert, key = self.ca.server_certificate(data_dir, host)
        except OSError as exc:
            self.httpd.server_close()
            raise ConfigError(f"cannot use data directory {data_dir}: {exc.strerror or exc}") from exc
        except BaseException:
            self.httpd.server_close()
            raise
        self.jobs = JobRunner(self.db, self.ca)
        self.api = Api(self.db, self.ca, self.jobs.enqueue, honour_csr=honour_csr)
        self.httpd.open(self.api, make_tls_context(cert, key, data_dir / "ca.pem"))
        bound_host, bound_port = str(self.httpd.server_address[0]), self.httpd.server_address[1]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"https://{shown}:{bound_port}{PREFIX}"
        self._stopped = threading.Event()

    def serve(self, install_signals: bool = True) -> None:
        self.jobs.start()
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="ftmock-http", daemon=True)
        thread.start()
        write_atomic(self.data_dir / "url", (self.url + "\n").encode(), mode=0o644)
        log.info("ftmock serving at %s (data in %s)", self.url, self.data_dir)
        print(self.url, flush=True)
        self._stopped.wait()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.jobs.stop()
        # Taking the lock waits for a request still inside its transaction to commit.
        self.db.close()
        thread.join(timeout=5)
        log.info("ftmock stopped")

    def stop(self) -> None:
        self._stopped.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        self.stop()
