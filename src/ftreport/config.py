"""Configuration, compatible with virt-who's.

Files: ``/etc/ftreport.conf`` (``[global]``, ``[defaults]``) and ``/etc/ftreport.d/*.conf``, one
section per source with virt-who's keys. ``-c FILE`` (repeatable) replaces the directory.
The environment variables ``FTREPORT_CONFIG`` and ``FTREPORT_CONFIG_DIR`` move both.

Every error names the file, the section and the key at fault.
"""

from __future__ import annotations

import configparser
import logging
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from .environment import read_environment
from .errors import ConfigError, PasswordError
from .filters import HostFilter, parse_patterns
from .password import VIRTWHO_KEY_FILE, decrypt_password

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_CONFIG_DIR",
    "HYPERVISOR_ID_KINDS",
    "SOURCE_TYPES",
    "Config",
    "GlobalConfig",
    "ServerConfig",
    "SourceConfig",
    "config_paths",
    "default_state_dir",
    "esx_scheme",
    "load_config",
    "parse_esx_server",
]

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "/etc/ftreport.conf"
DEFAULT_CONFIG_DIR = "/etc/ftreport.d"
SOURCE_TYPES = ("esx", "libvirt", "fake")
HYPERVISOR_ID_KINDS = ("uuid", "hostname", "hwuuid")
_UNSUPPORTED_TYPES = ("hyperv", "rhevm", "xen", "kubevirt", "ahv", "vdsm")
_SPECIAL = ("global", "defaults", "system_environment")

_GLOBAL_KEYS = {
    "interval", "debug", "oneshot", "print", "print_", "reporter_id", "log_per_config", "log_dir",
    "log_file", "configs", "state_dir", "key_file", "max_backoff", "job_timeout", "settle", "first_report_wait",
    "processes", "virtwho_key_file", "background", "metrics_file",
}
_SOURCE_KEYS = {
    "type", "server", "username", "password", "encrypted_password", "owner", "env", "hypervisor_id",
    "filter_hosts", "exclude_hosts", "filter_host_parents", "exclude_host_parents",
    "filter_host_uuids", "exclude_host_uuids",  # old virt-who spellings
    "rhsm_hostname", "rhsm_port", "rhsm_prefix", "rhsm_username", "rhsm_password",
    "rhsm_encrypted_password", "rhsm_insecure", "rhsm_ca_cert", "rhsm_cert", "rhsm_key",
    "rhsm_proxy_hostname", "rhsm_proxy_port", "rhsm_proxy_user", "rhsm_proxy_password",
    "rhsm_no_proxy", "ca_cert", "insecure", "file", "is_hypervisor", "sm_type", "simplified_vim",
    "hypervisor_type", "timeout", "rhsm_encrypted_proxy_password", "filter_type", "decoder", "page_size",
}
# Satellite 5 (XML-RPC) destinations: ftreport reports to Candlepin's API only.
_SATELLITE5_KEYS = ("sat_server", "sat_username", "sat_password", "sat_encrypted_password")
FILTER_TYPES = ("wildcards", "regex")
ESX_DECODERS = ("stream", "pyvmomi")
_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off", ""}


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

    @property
    def key(self) -> str:
        """Identifies the destination: reports with the same key are merged into one check-in."""
        return f"{self.url}|{self.owner}|{self.username or ''}|{self.cert_file or ''}"


@dataclass(frozen=True)
class SourceConfig:
    """One source section."""

    name: str
    type: str
    file: str
    server: str | None = None
    username: str | None = None
    password: str | None = None
    owner: str | None = None
    hypervisor_id: str = "uuid"
    host_filter: HostFilter = field(default_factory=HostFilter)
    parent_filter: HostFilter = field(default_factory=HostFilter)
    ca_cert: str | None = None
    insecure: bool = False
    fake_file: str | None = None
    is_hypervisor: bool = True
    timeout: float = 60.0
    decoder: str = "stream"
    page_size: int = 2000
    destination: ServerConfig | None = None
    destination_error: ConfigError | None = None
    options: Mapping[str, str] = field(default_factory=dict)

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


def esx_scheme(value: str) -> str:
    """``http`` for an esx ``server`` written as an ``http://`` URL (virt-who allows it), else ``https``."""
    text = value.strip()
    return "http" if text.lower().startswith("http://") else "https"


def parse_esx_server(value: str) -> tuple[str, int, str]:
    """vCenter address as host, host:port or http(s) URL (with or without /sdk) -> (host, port, path).

    The scheme is :func:`esx_scheme`; https is the default, and the default port follows it."""
    text = value.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise ValueError(f"vCenter is reached over https (or http), not {parts.scheme}")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise ValueError("bad port") from exc
    host = parts.hostname
    if not host:
        raise ValueError("no host name")
    path = parts.path.rstrip("/") or "/sdk"
    if not path.endswith("/sdk"):
        path += "/sdk"
    return host, port, path


def _strip(value: str) -> str:
    """virt-who's quoting: a value wholly inside one kind of quotes, not used inside, loses them."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" and value[0] not in value[1:-1]:
        value = value[1:-1]
    return value


class _Section:
    """Values of one section, with typed getters whose errors name file, section and key."""

    def __init__(self, name: str, values: Mapping[str, tuple[str, str]], origin: str = "<none>") -> None:
        self.name = name
        self.values = values  # key -> (value, file)
        self.origin = origin  # the file that defines the section

    def file_of(self, key: str | None = None) -> str:
        if key and key in self.values:
            return self.values[key][1]
        return self.origin

    def error(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(message, file=self.file_of(key), section=self.name, key=key)

    def get(self, key: str, default: str | None = None) -> str | None:
        if key in self.values:
            return self.values[key][0]
        return default

    def flag(self, key: str, default: bool = False) -> bool:
        raw = self.get(key)
        if raw is None:
            return default
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise self.error(key, f"expected a boolean (yes/no, true/false, 1/0), got {raw!r}")

    def number(self, key: str, default: float, *, minimum: float = 0.0, integer: bool = False) -> float:
        raw = self.get(key)
        if raw is None or raw.strip() == "":
            return default
        try:
            val = float(int(raw)) if integer else float(raw)
        except ValueError as exc:
            kind = "an integer" if integer else "a number"
            raise self.error(key, f"expected {kind}, got {raw!r}") from exc
        if val < minimum:
            raise self.error(key, f"must be at least {minimum:g}, got {raw!r}")
        return val


def config_paths(explicit: Sequence[str] = ()) -> list[Path]:
    """The files to read: the main file, then either the -c files or the directory's *.conf."""
    main = Path(os.environ.get("FTREPORT_CONFIG", DEFAULT_CONFIG))
    try:
        paths = [main] if main.is_file() else []
    except PermissionError:
        raise ConfigError(f"cannot reach {main}: permission denied for uid {os.geteuid()}; run as root or "
                          "make its directory accessible", file=str(main)) from None
    if explicit:
        paths.extend(Path(p) for p in explicit)
    else:
        directory = Path(os.environ.get("FTREPORT_CONFIG_DIR", DEFAULT_CONFIG_DIR))
        if directory.is_dir():
            try:
                names = os.listdir(directory)  # glob() would hide a permission error as "no files"
            except PermissionError:
                raise ConfigError(f"directory {directory} is not readable by uid {os.geteuid()}: its source "
                                  "sections cannot be read; run as root or make it readable",
                                  file=str(directory)) from None
            paths.extend(sorted(p for p in (directory / n for n in names)
                                if p.name.endswith(".conf") and p.is_file()))
    return paths


_Sections = dict[str, dict[str, tuple[str, str]]]


def _read_files(paths: Iterable[Path]) -> tuple[_Sections, list[str], dict[str, str]]:
    """Read files in order; later files override global/defaults keys, sources must be unique."""
    sections: _Sections = {}
    order: list[str] = []
    origin: dict[str, str] = {}
    for path in paths:
        # strict=False: virt-who reads a key given twice in a section as its last value, and a
        # section given twice in one file as one section (later keys win).
        parser = configparser.RawConfigParser(strict=False, default_section="__none__")
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            with open(path, encoding="utf-8") as fh:
                parser.read_file(fh, source=str(path))
        except FileNotFoundError as exc:
            raise ConfigError("file does not exist", file=str(path)) from exc
        except PermissionError as exc:
            raise ConfigError(f"cannot read: permission denied for uid {os.geteuid()}; run as root or make "
                              "the file readable", file=str(path)) from exc
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror}", file=str(path)) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError("not UTF-8 text", file=str(path)) from exc
        except configparser.MissingSectionHeaderError as exc:
            raise ConfigError(f"line {exc.lineno}: a key outside any [section]", file=str(path)) from exc
        except configparser.ParsingError as exc:
            lines = ", ".join(str(n) for n, _ in exc.errors)
            raise ConfigError(f"cannot parse line(s) {lines}", file=str(path)) from exc
        for name in parser.sections():
            lname = name.lower() if name.lower() in _SPECIAL else name
            if lname not in _SPECIAL and lname in sections:
                raise ConfigError(f"source section also defined in {origin[lname]}",
                                  file=str(path), section=name)
            target = sections.setdefault(lname, {})
            origin.setdefault(lname, str(path))
            if lname not in order:
                order.append(lname)
            for key, value in parser.items(name):
                target[key.lower()] = (_strip(value), str(path))
    return sections, order, origin


def _nearest(key: str, known: set[str]) -> str:
    """``"; did you mean X?"`` for a likely typo of a known key."""
    import difflib

    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _global(sec: _Section) -> GlobalConfig:
    for key in sec.values:
        if key not in _GLOBAL_KEYS:
            log.warning("%s: [%s] unknown key %s ignored%s", sec.file_of(key), sec.name, key,
                        _nearest(key, _GLOBAL_KEYS))
    defaults = GlobalConfig()
    state = sec.get("state_dir")
    key_file = sec.get("key_file")
    vw_key = sec.get("virtwho_key_file")
    log_dir = sec.get("log_dir")
    try:
        configs = parse_patterns(sec.get("configs") or "")
    except ValueError as exc:
        raise sec.error("configs", str(exc)) from exc
    interval = sec.number("interval", defaults.interval, minimum=1, integer=True)
    if interval < 60:
        log.info("interval %g s is below virt-who's minimum of 60 s; using it anyway", interval)
    return GlobalConfig(
        interval=interval,
        reporter_id=sec.get("reporter_id") or defaults.reporter_id,
        debug=sec.flag("debug"),
        oneshot=sec.flag("oneshot"),
        print_=sec.flag("print") or sec.flag("print_"),
        state_dir=Path(state) if state else defaults.state_dir,
        key_file=Path(key_file) if key_file else None,
        max_backoff=sec.number("max_backoff", defaults.max_backoff, minimum=0.1),
        job_timeout=sec.number("job_timeout", defaults.job_timeout, minimum=1),
        settle=sec.number("settle", defaults.settle, minimum=0),
        first_report_wait=sec.number("first_report_wait", defaults.first_report_wait, minimum=0),
        processes=int(sec.number("processes", defaults.processes, minimum=0, integer=True)),
        virtwho_key_file=Path(vw_key) if vw_key else defaults.virtwho_key_file,
        log_dir=Path(log_dir) if log_dir else None,
        log_file=sec.get("log_file") or None,
        log_per_config=sec.flag("log_per_config"),
        configs=configs,
        metrics_file=Path(sec.get("metrics_file") or "") if sec.get("metrics_file") else None,
    )


def _secret(sec: _Section, plain: str, encrypted: str, glob: GlobalConfig) -> str | None:
    value = sec.get(plain)
    if value:
        return value
    enc = sec.get(encrypted)
    if enc:
        try:
            return decrypt_password(enc, glob.password_key_file, glob.virtwho_key_file)
        except PasswordError as exc:
            raise sec.error(encrypted, str(exc)) from exc
    return value


def _destination(sec: _Section, glob: GlobalConfig) -> ServerConfig:
    host = sec.get("rhsm_hostname")
    owner = sec.get("owner")
    if not host:
        raise sec.error("rhsm_hostname", "no entitlement server: set rhsm_hostname (here or in [defaults])")
    if not owner:
        raise sec.error("owner", "no owner (organization) to report to")
    if "://" in host:
        parts = urlsplit(host)
        if parts.scheme != "https":
            raise sec.error("rhsm_hostname", f"the server is reached over https, not {parts.scheme}")
        url = host.rstrip("/")
        if not parts.path.strip("/"):
            url += sec.get("rhsm_prefix") or "/candlepin"
    else:
        port = int(sec.number("rhsm_port", 443, minimum=1, integer=True))
        if port > 65535:
            raise sec.error("rhsm_port", f"not a TCP port: {port}")
        prefix = sec.get("rhsm_prefix") or "/candlepin"
        if not prefix.startswith("/"):
            prefix = "/" + prefix
        hostpart = f"[{host}]" if ":" in host else host
        url = f"https://{hostpart}:{port}{prefix.rstrip('/')}"
    proxy = None
    proxy_host = sec.get("rhsm_proxy_hostname")
    if proxy_host:
        proxy_port = int(sec.number("rhsm_proxy_port", 3128, minimum=1, integer=True))
        cred = ""
        if sec.get("rhsm_proxy_user"):
            secret = _secret(sec, "rhsm_proxy_password", "rhsm_encrypted_proxy_password", glob) or ""
            cred = f"{quote(sec.get('rhsm_proxy_user') or '', safe='')}:{quote(secret, safe='')}@"
        proxy = f"http://{cred}{proxy_host}:{proxy_port}"
    for key in ("rhsm_ca_cert", "rhsm_cert", "rhsm_key"):
        path = sec.get(key)
        if path and not Path(path).is_file():
            raise sec.error(key, f"no such file: {path}")
    return ServerConfig(
        url=url,
        owner=owner,
        username=sec.get("rhsm_username") or None,
        password=_secret(sec, "rhsm_password", "rhsm_encrypted_password", glob),
        ca_cert=sec.get("rhsm_ca_cert") or None,
        cert_file=sec.get("rhsm_cert") or None,
        key_file=sec.get("rhsm_key") or None,
        insecure=sec.flag("rhsm_insecure"),
        proxy=proxy,
        no_proxy=sec.get("rhsm_no_proxy") or None,
    )


def _libvirt_uri(server: str | None, username: str | None) -> str | None:
    if not server:
        return None
    if "://" in server or server.endswith(":///"):
        return server
    user = f"{username}@" if username else ""
    return f"qemu+ssh://{user}{server}/system"


def _source(sec: _Section, glob: GlobalConfig) -> SourceConfig:
    for key in sec.values:
        if key in _SATELLITE5_KEYS:
            raise sec.error(key, "Satellite 5 destinations are not supported: ftreport reports to "
                            "Candlepin's API (rhsm_hostname, owner)")
        if key not in _SOURCE_KEYS:
            log.warning("%s: [%s] unknown key %s ignored%s", sec.file_of(key), sec.name, key,
                        _nearest(key, _SOURCE_KEYS))
    typ = (sec.get("type") or "libvirt").lower()
    if typ in _UNSUPPORTED_TYPES:
        raise sec.error("type", f"type {typ!r} is not supported by ftreport "
                        f"(supported: {', '.join(SOURCE_TYPES)})")
    if typ not in SOURCE_TYPES:
        raise sec.error("type", f"unknown source type {typ!r} (supported: {', '.join(SOURCE_TYPES)})")
    hv_id = (sec.get("hypervisor_id") or "uuid").lower()
    if hv_id not in HYPERVISOR_ID_KINDS:
        raise sec.error("hypervisor_id", f"must be one of {', '.join(HYPERVISOR_ID_KINDS)}, got {hv_id!r}")
    server = sec.get("server") or None
    username = sec.get("username") or None
    password = _secret(sec, "password", "encrypted_password", glob)
    if typ == "esx":
        if not server:
            raise sec.error("server", "an esx source needs the vCenter address")
        try:
            parse_esx_server(server)
        except ValueError as exc:
            raise sec.error("server", f"not a vCenter address ({exc}): {server!r}") from exc
        if esx_scheme(server) == "http":
            log.warning("%s: [%s] server %s is plain HTTP: the vCenter password and inventory travel "
                        "unencrypted; use https://", sec.file_of("server"), sec.name, server)
        if not username:
            raise sec.error("username", "an esx source needs a user name")
        if password is None:
            raise sec.error("password", "an esx source needs password or encrypted_password")
    ca_cert = sec.get("ca_cert") or None
    if ca_cert and not Path(ca_cert).is_file():
        raise sec.error("ca_cert", f"no such file: {ca_cert}")
    fake_file = sec.get("file") or None
    if typ == "fake" and fake_file and not fake_file.startswith("builtin:") and not Path(fake_file).is_file():
        raise sec.error("file", f"no such file: {fake_file}")
    if typ == "fake" and not sec.flag("is_hypervisor", True):
        raise sec.error("is_hypervisor", "only hypervisor reports (is_hypervisor=true) are supported")
    def patterns(*keys: str) -> tuple[str, ...]:
        for key in keys:
            raw = sec.get(key)
            if raw:
                try:
                    return parse_patterns(raw)
                except ValueError as exc:
                    raise sec.error(key, str(exc)) from exc
        return ()

    filter_type = (sec.get("filter_type") or "").strip().lower()
    if filter_type and filter_type not in FILTER_TYPES:
        raise sec.error("filter_type", f"must be one of {', '.join(FILTER_TYPES)}, got {filter_type!r}")
    include = patterns("filter_hosts", "filter_host_uuids")
    exclude = patterns("exclude_hosts", "exclude_host_uuids")
    decoder = (sec.get("decoder") or os.environ.get("FTREPORT_ESX_DECODER") or "stream").strip().lower()
    if decoder not in ESX_DECODERS:
        raise sec.error("decoder", f"must be one of {', '.join(ESX_DECODERS)}, not {decoder!r}")
    destination: ServerConfig | None = None
    dest_error: ConfigError | None = None
    try:
        destination = _destination(sec, glob)
    except ConfigError as exc:
        if exc.key in ("rhsm_hostname", "owner"):
            dest_error = exc  # only fatal when sending; --print needs no server
        else:
            raise
    return SourceConfig(
        name=sec.name,
        type=typ,
        file=sec.origin,
        server=_libvirt_uri(server, username) if typ == "libvirt" else server,
        username=username,
        password=password,
        owner=sec.get("owner") or None,
        hypervisor_id=hv_id,
        host_filter=HostFilter(include, exclude, filter_type),
        parent_filter=HostFilter(patterns("filter_host_parents"), patterns("exclude_host_parents"), filter_type),
        ca_cert=ca_cert,
        insecure=sec.flag("insecure"),
        fake_file=fake_file,
        is_hypervisor=sec.flag("is_hypervisor", True),
        timeout=sec.number("timeout", 60.0, minimum=1),
        decoder=decoder,
        page_size=int(sec.number("page_size", 2000, minimum=1, integer=True)),
        destination=destination,
        destination_error=dest_error,
        options={k: v for k, (v, _) in sec.values.items()},
    )


def load_config(explicit: Sequence[str] = (), *, paths: Sequence[Path] | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the configuration; raises ConfigError naming file, section and key.

    ``VIRTWHO_*`` environment variables apply over ``[global]`` (see :mod:`ftreport.environment`);
    unsupported ones are logged as warnings. Without ``-c`` files, ``[global] configs`` (virt-who's
    list of files) replaces the configuration directory, as ``-c`` does."""
    files = list(paths) if paths is not None else config_paths(explicit)
    sections, order, origin = _read_files(files)
    gsec = _Section("global", sections.get("global", {}), origin.get("global", "<none>"))
    glob = _global(gsec)
    if paths is None and not explicit and glob.configs:
        files = config_paths(glob.configs)
        sections, order, origin = _read_files(files)
        gsec = _Section("global", sections.get("global", {}), origin.get("global", "<none>"))
        glob = _global(gsec)
    env = read_environment(environ)
    for message in env.unsupported:
        log.warning("environment %s", message)
    for message in env.ignored:
        log.debug("environment %s", message)
    glob = env.apply(glob)
    defaults = sections.get("defaults", {})
    sources = []
    for name in order:
        if name in _SPECIAL:
            continue
        merged = {**defaults, **sections[name]}
        sources.append(_source(_Section(name, merged, origin[name]), glob))
    return Config(global_=glob, sources=tuple(sources), files=tuple(str(f) for f in files))
