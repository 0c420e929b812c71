"""Wiring: data directory, database, CA, API, job runner and HTTPS server, with a clean stop."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType

from ftagent.atomic import write_atomic

from .api import PREFIX, Api
from .auth import set_password
from .ca import IDENTITY_DAYS, IDENTITY_RENEW_DAYS, CertificateAuthority
from .cdn import CDN_URL_FILE, ContentServer
from .errors import ConfigError, Unavailable
from .housekeeping import Housekeeping
from .hypervisors import JobRunner
from .lifecycle import LifecycleSettings, save_settings
from .owners import create_owner, update_owner
from .server import DEFAULT_REQUEST_TIMEOUT, FtmockHTTPServer, make_tls_context
from .store import Database
from .takeover import DEFAULT_IDENTITY_WINDOW

__all__ = ["DEFAULT_ADMIN_PASSWORD", "FtmockApp", "open_database"]

log = logging.getLogger(__name__)

DEFAULT_ADMIN_PASSWORD = "admin"  # noqa: S105 - the documented default of a test server


def open_database(data_dir: Path, admin_password: str | None = None,
                  content_access_mode: str | None = None) -> Database:
    """Open (creating on first use) the database with org `admin` and user `admin`.

    ``content_access_mode`` is org ``admin``'s mode: on creation (default SCA), and when given, at
    every start.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    db = Database(data_dir / "ftmock.db")
    with db.transaction() as tx:
        if tx.one("SELECT 1 FROM owners WHERE key = 'admin'") is None:
            create_owner(tx, "admin", "Admin Owner", content_access_mode)
        elif content_access_mode is not None:
            update_owner(tx, "admin", {"contentAccessMode": content_access_mode})
        has_admin = tx.one("SELECT 1 FROM users WHERE username = 'admin'") is not None
        if admin_password is not None or not has_admin:
            set_password(tx, "admin", admin_password or DEFAULT_ADMIN_PASSWORD)
    return db


class FtmockApp:
    """A running server; `serve()` blocks until `stop()` or SIGTERM/SIGINT."""

    def __init__(self, data_dir: Path, host: str, port: int, admin_password: str | None = None,
                 honour_csr: bool = True, request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
                 content_access_mode: str | None = None, content_dir: Path | None = None,
                 lifecycle: LifecycleSettings | None = None, identity_cert_days: int = IDENTITY_DAYS,
                 identity_renew_days: int = IDENTITY_RENEW_DAYS,
                 identity_window: float = DEFAULT_IDENTITY_WINDOW) -> None:
        self.data_dir = data_dir
        # The address first: a port in use fails here, before a first start writes a CA and a database.
        try:
            self.httpd = FtmockHTTPServer((host, port), request_timeout)
        except OSError as exc:
            raise Unavailable(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        try:
            self.db = open_database(data_dir, admin_password, content_access_mode)
            self.ca = CertificateAuthority.load_or_create(data_dir)
            cert, key = self.ca.server_certificate(data_dir, host)
        except OSError as exc:
            self.httpd.server_close()
            raise ConfigError(f"cannot use data directory {data_dir}: {exc.strerror or exc}") from exc
        except BaseException:
            self.httpd.server_close()
            raise
        self.lifecycle = lifecycle or LifecycleSettings()
        with self.db.transaction() as tx:
            save_settings(tx, self.lifecycle)
        self.ca.identity_days = identity_cert_days
        self.jobs = JobRunner(self.db, self.ca, settings=self.lifecycle)
        self.housekeeping = Housekeeping(self.db, self.lifecycle)
        self.api = Api(self.db, self.ca, self.jobs.enqueue, honour_csr=honour_csr,
                       identity_renew_days=identity_renew_days, content_dir=content_dir,
                       identity_window=identity_window)
        self.content = ContentServer(content_dir, self.db) if content_dir is not None else None
        self.httpd.open(self.api, make_tls_context(cert, key, data_dir / "ca.pem"), self.content)
        bound_host, bound_port = str(self.httpd.server_address[0]), self.httpd.server_address[1]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        # The API under /candlepin; the content (when served) at the root, as the CDN serves /content/...
        self.cdn_url = f"https://{shown}:{bound_port}"
        self.url = self.cdn_url + PREFIX
        self._stopped = threading.Event()

    def serve(self, install_signals: bool = True) -> None:
        self.jobs.start()
        self.housekeeping.start()
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="ftmock-http", daemon=True)
        thread.start()
        cdn_file = self.data_dir / CDN_URL_FILE
        if self.content is not None:
            write_atomic(cdn_file, (self.cdn_url + "\n").encode(), mode=0o644)
            log.info("ftmock serving content of %s at %s", self.content.root, self.cdn_url)
        elif cdn_file.exists():
            cdn_file.unlink()  # no content served this time: a stale URL would mislead
        write_atomic(self.data_dir / "url", (self.url + "\n").encode(), mode=0o644)
        log.info("ftmock serving at %s (data in %s)", self.url, self.data_dir)
        print(self.url, flush=True)
        self._stopped.wait()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.jobs.stop()
        self.housekeeping.stop()
        # Taking the lock waits for a request still inside its transaction to commit.
        self.db.close()
        thread.join(timeout=5)
        log.info("ftmock stopped")

    def stop(self) -> None:
        self._stopped.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        self.stop()
