"""The configuration as the rest of ftreport uses it: frozen values, already validated.

:mod:`ftreport.config` reads the files into these; each source module reads its own keys into its
own settings (:attr:`SourceConfig.settings`). Nothing here reads a file.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .filters import HostFilter
from .password import VIRTWHO_KEY_FILE

__all__ = [
    "Config",
    "GlobalConfig",
    "ServerConfig",
    "SourceConfig",
    "default_state_dir",
]


def default_state_dir() -> Path:
    """Where sent-report hashes and the password key live by default."""
    env = os.environ.get("FTREPORT_STATE_DIR")
    if env:
        return Path(env)
    system = Path("/var/lib/ftreport")
    if os.geteuid() == 0 or (system.is_dir() and os.access(system, os.W_OK)):
        return system
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ftreport"


def _default_reporter_id() -> str:
    host = socket.gethostname() or "localhost"
    try:
        machine = Path("/etc/machine-id").read_text().strip()
    except OSError:
        machine = ""
    return f"{host}-{machine}" if machine else host


@dataclass(frozen=True)
class GlobalConfig:
    """The ``[global]`` section."""

    interval: float = 3600.0
    reporter_id: str = field(default_factory=_default_reporter_id)
    debug: bool = False
    oneshot: bool = False
    print_: bool = False
    state_dir: Path = field(default_factory=default_state_dir)
    key_file: Path | None = None
    max_backoff: float = 60.0
    job_timeout: float = 120.0
    settle: float = 0.3
    first_report_wait: float = 10.0
    processes: int = 0  # one-shot collection; 0: automatic
    virtwho_key_file: Path = VIRTWHO_KEY_FILE
    log_dir: Path | None = None
    log_file: str | None = None
    log_per_config: bool = False
    configs: tuple[str, ...] = ()
    metrics_file: Path | None = None

    @property
    def password_key_file(self) -> Path:
        return self.key_file if self.key_file is not None else self.state_dir / "key"


@dataclass(frozen=True)
class ServerConfig:
    """Where a source's reports go (the entitlement server and the owner)."""

    url: str
    owner: str
    username: str | None = None
    password: str | None = None
    ca_cert: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False
    proxy: str | None = None
    no_proxy: str | None = None
    #: The consumer whose guests the reports are (virt-who's guest list of the host it runs on,
    #: ``PUT /consumers/{uuid}``); None: hypervisor check-ins for ``owner``.
    guests_of: str | None = None
    ca_origin: str = "rhsm_ca_cert"  # where ca_cert was configured, for messages

    @property
    def key(self) -> str:
        """Identifies the destination: reports with the same key are merged into one check-in."""
        return f"{self.url}|{self.owner}|{self.username or ''}|{self.cert_file or ''}|{self.guests_of or ''}"

    @property
    def label(self) -> str:
        """The destination in messages: ``OWNER@URL``, or the host's consumer and the URL."""
        if self.guests_of:
            return f"consumer {self.guests_of}@{self.url}"
        return f"{self.owner}@{self.url}"


@dataclass(frozen=True)
class SourceConfig:
    """One source section: the keys every source type shares, and the type's own settings.

    ``settings`` is what the type's module read from the section (``EsxSettings``,
    ``LibvirtSettings``, ``FakeSettings``); ``None`` gives the type's defaults."""

    name: str
    type: str
    file: str
    owner: str | None = None
    hypervisor_id: str = "uuid"
    host_filter: HostFilter = field(default_factory=HostFilter)
    parent_filter: HostFilter = field(default_factory=HostFilter)
    settings: object = None
    destination: ServerConfig | None = None
    destination_error: ConfigError | None = None
    options: Mapping[str, str] = field(default_factory=dict)  # the section's values as written

    def require_destination(self) -> ServerConfig:
        """The destination, or the error explaining why the section has none."""
        if self.destination is None:
            raise self.destination_error or ConfigError(
                "no entitlement server configured", file=self.file, section=self.name)
        return self.destination


@dataclass(frozen=True)
class Config:
    """Everything ftreport needs to run."""

    global_: GlobalConfig
    sources: tuple[SourceConfig, ...]
    files: tuple[str, ...]
