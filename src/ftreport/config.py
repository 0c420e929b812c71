"""Configuration, compatible with virt-who's.

Files: ``/etc/ftreport.conf`` (``[global]``, ``[defaults]``) and ``/etc/ftreport.d/*.conf``, one
section per source with virt-who's keys. ``-c FILE`` (repeatable) replaces the directory.
The environment variables ``FTREPORT_CONFIG`` and ``FTREPORT_CONFIG_DIR`` move them;
``FTREPORT_ROOT`` moves every system path, these two included (:mod:`ftagent.sysroot`).

As virt-who: connection keys a section leaves out come from the host's rhsm.conf, and without a user
and password it authenticates with the host's consumer certificate (:mod:`ftreport.hostreg`); with
no source configured anywhere, ftreport reports the local libvirt (:data:`LOCAL_SOURCE`).

This module reads the file format, ``[global]``, ``[defaults]`` and the keys every source section
shares (type, owner, hypervisor id, filters, the ``rhsm_*`` destination); a section's other keys are
its type's, read by the type's module (:func:`ftreport.sources.source_type`). The values land in
:mod:`ftreport.settings`. Every error names the file, the section and the key at fault.
"""

from __future__ import annotations

import configparser
import dataclasses
import difflib
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from urllib.parse import quote, urlsplit

from ftagent.sysroot import rooted, system_root

from .environment import read_environment
from .errors import ConfigError
from .filters import HostFilter
from .hostreg import ROOT_VARIABLE, HostRegistration
from .password import decrypt_password
from .section import Section
from .settings import Config, GlobalConfig, ServerConfig, SourceConfig
from .sources import SOURCE_TYPE_NAMES, SourceType, source_type

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_CONFIG_DIR",
    "HYPERVISOR_ID_KINDS",
    "LOCAL_SOURCE",
    "SHARED_KEYS",
    "config_paths",
    "load_config",
    "no_sources_error",
    "source_keys",
]

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "/etc/ftreport.conf"
DEFAULT_CONFIG_DIR = "/etc/ftreport.d"
HYPERVISOR_ID_KINDS = ("uuid", "hostname", "hwuuid")
_UNSUPPORTED_TYPES = ("hyperv", "rhevm", "xen", "kubevirt", "ahv", "vdsm")
_SPECIAL = ("global", "defaults", "system_environment")
#: The name of the source ftreport reports when no source is configured: the local libvirt.
LOCAL_SOURCE = "local-libvirt"

_GLOBAL_KEYS = {
    "interval", "debug", "oneshot", "print", "print_", "reporter_id", "log_per_config", "log_dir",
    "log_file", "configs", "state_dir", "key_file", "max_backoff", "job_timeout", "settle", "first_report_wait",
    "processes", "virtwho_key_file", "background", "metrics_file",
}
#: The keys every source section has, whatever its type (each type adds its own: SourceType.keys).
SHARED_KEYS = frozenset({
    "type", "owner", "env", "hypervisor_id",
    "filter_hosts", "exclude_hosts", "filter_host_parents", "exclude_host_parents", "filter_type",
    "filter_host_uuids", "exclude_host_uuids",  # old virt-who spellings
    "rhsm_hostname", "rhsm_port", "rhsm_prefix", "rhsm_username", "rhsm_password",
    "rhsm_encrypted_password", "rhsm_insecure", "rhsm_ca_cert", "rhsm_cert", "rhsm_key",
    "rhsm_proxy_hostname", "rhsm_proxy_port", "rhsm_proxy_user", "rhsm_proxy_password",
    "rhsm_encrypted_proxy_password", "rhsm_no_proxy", "sm_type", "hypervisor_type",
})
# Satellite 5 (XML-RPC) destinations: ftreport reports to Candlepin's API only.
_SATELLITE5_KEYS = ("sat_server", "sat_username", "sat_password", "sat_encrypted_password")
FILTER_TYPES = ("wildcards", "regex")


def _strip(value: str) -> str:
    """virt-who's quoting: a value wholly inside one kind of quotes, not used inside, loses them."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" and value[0] not in value[1:-1]:
        value = value[1:-1]
    return value


def _main_path() -> Path:
    """The main file: ``$FTREPORT_CONFIG``, else ``/etc/ftreport.conf`` inside the system root."""
    env = os.environ.get("FTREPORT_CONFIG")
    return Path(env) if env else rooted(system_root(ROOT_VARIABLE), DEFAULT_CONFIG)


def _directory_path() -> Path:
    """The directory: ``$FTREPORT_CONFIG_DIR``, else ``/etc/ftreport.d`` inside the system root."""
    env = os.environ.get("FTREPORT_CONFIG_DIR")
    return Path(env) if env else rooted(system_root(ROOT_VARIABLE), DEFAULT_CONFIG_DIR)


def config_paths(explicit: Sequence[str] = ()) -> list[Path]:
    """The files to read: the main file, then either the -c files or the directory's *.conf."""
    main = _main_path()
    try:
        paths = [main] if main.is_file() else []
    except PermissionError:
        raise ConfigError(f"cannot reach {main}: permission denied for uid {os.geteuid()}; run as root or "
                          "make its directory accessible", file=str(main)) from None
    if explicit:
        paths.extend(Path(p) for p in explicit)
    else:
        directory = _directory_path()
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


def no_sources_error(files: Sequence[str]) -> ConfigError:
    """The error for a configuration without a source section, naming where it was looked for."""
    if files:
        return ConfigError(f"no sources configured (files read: {', '.join(files)})")
    return ConfigError(f"no sources configured: no configuration file found ({_looked_for()}; -c FILE names one)")


def _looked_for() -> str:
    return f"looked for {_main_path()} and {_directory_path()}/*.conf"


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


def _nearest(key: str, known: Iterable[str]) -> str:
    """``"; did you mean X?"`` for a likely typo of a known key."""
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _global(sec: Section) -> GlobalConfig:
    for key in sec.values:
        if key not in _GLOBAL_KEYS:
            log.warning("%s: [%s] unknown key %s ignored%s", sec.file_of(key), sec.name, key,
                        _nearest(key, _GLOBAL_KEYS))
    defaults = GlobalConfig()
    state = sec.get("state_dir")
    key_file = sec.get("key_file")
    vw_key = sec.get("virtwho_key_file")
    log_dir = sec.get("log_dir")
    configs = sec.patterns("configs")
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


#: The ``rhsm_*`` connection keys that a section may leave to rhsm.conf's ``[server]``, as virt-who does.
_RHSM_SERVER_KEYS = {
    "rhsm_hostname": "hostname", "rhsm_port": "port", "rhsm_prefix": "prefix", "rhsm_insecure": "insecure",
    "rhsm_proxy_hostname": "proxy_hostname", "rhsm_proxy_port": "proxy_port", "rhsm_proxy_user": "proxy_user",
    "rhsm_proxy_password": "proxy_password", "rhsm_no_proxy": "no_proxy",
}
#: Destination keys whose absence is an error only when sending (``--print`` needs no server).
_DEFERRED_KEYS = ("rhsm_hostname", "owner")


class _ServerKeys:
    """A section's ``rhsm_*`` connection keys, each one the section leaves out taken from the host's
    rhsm.conf (:mod:`ftreport.hostreg`); errors name the file the value came from."""

    def __init__(self, sec: Section, host: HostRegistration) -> None:
        self.sec = sec
        self.host = host

    def get(self, key: str) -> str | None:
        return self.sec.get(key) or self.host.server_value(_RHSM_SERVER_KEYS[key])

    def error(self, key: str, message: str) -> ConfigError:
        if self.sec.get(key):
            return self.sec.error(key, message)
        return ConfigError(message, file=str(self.host.conf_path), section="server", key=_RHSM_SERVER_KEYS[key])

    def number(self, key: str, default: int) -> int:
        if self.sec.get(key):
            return int(self.sec.number(key, default, minimum=1, integer=True))
        raw = self.get(key)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise self.error(key, f"expected an integer, got {raw!r}") from None
        if value < 1:
            raise self.error(key, f"must be at least 1, got {raw!r}")
        return value

    def flag(self, key: str) -> bool:
        if self.sec.get(key):
            return self.sec.flag(key)
        raw = (self.get(key) or "").strip().lower()
        if raw in ("", "0", "no", "false", "off"):
            return False
        if raw in ("1", "yes", "true", "on"):
            return True
        raise self.error(key, f"expected a boolean (1/0, yes/no), got {raw!r}")


def _no_server(sec: Section, host: HostRegistration) -> ConfigError:
    if sec.name == LOCAL_SOURCE and "rhsm_hostname" not in sec.values:
        return sec.error("rhsm_hostname", f"this host is not registered (there is no {host.conf_path})")
    return sec.error("rhsm_hostname", "no entitlement server: set rhsm_hostname (here or in [defaults]), or "
                     f"register this host with subscription-manager (there is no {host.conf_path})")


def _server_url(keys: _ServerKeys, host_name: str) -> str:
    sec = keys.sec
    if "://" in host_name:
        parts = urlsplit(host_name)
        if parts.scheme != "https":
            raise keys.error("rhsm_hostname", f"the server is reached over https, not {parts.scheme}")
        url = host_name.rstrip("/")
        if not parts.path.strip("/"):
            url += sec.get("rhsm_prefix") or "/candlepin"
        return url
    port = keys.number("rhsm_port", 443)
    if port > 65535:
        raise keys.error("rhsm_port", f"not a TCP port: {port}")
    prefix = keys.get("rhsm_prefix") or "/candlepin"
    if not prefix.startswith("/"):
        prefix = "/" + prefix
    hostpart = f"[{host_name}]" if ":" in host_name else host_name
    return f"https://{hostpart}:{port}{prefix.rstrip('/')}"


def _proxy(keys: _ServerKeys) -> str | None:
    sec = keys.sec
    proxy_host = keys.get("rhsm_proxy_hostname")
    if not proxy_host:
        return None
    proxy_port = keys.number("rhsm_proxy_port", 3128)
    cred = ""
    user = keys.get("rhsm_proxy_user")
    if user:
        secret = sec.secret("rhsm_proxy_password", "rhsm_encrypted_proxy_password") or keys.get(
            "rhsm_proxy_password") or ""
        cred = f"{quote(user, safe='')}:{quote(secret, safe='')}@"
    return f"http://{cred}{proxy_host}:{proxy_port}"


def _destination(sec: Section, host: HostRegistration, *, host_guests: bool = False) -> ServerConfig:
    """Where a section's reports go; keys it leaves out come from the host's registration.

    ``host_guests``: the section reports the guests of the host ftreport runs on (a libvirt source
    without ``server`` nor ``owner``), as virt-who does: the host's own consumer gets them."""
    keys = _ServerKeys(sec, host)
    host_name = keys.get("rhsm_hostname")
    owner = sec.get("owner")
    if not host_name:
        raise _no_server(sec, host)
    if not owner and not host_guests:
        raise sec.error("owner", "no owner (organization) to report to")
    url = _server_url(keys, host_name)
    for key in ("rhsm_ca_cert", "rhsm_cert", "rhsm_key"):
        path = sec.get(key)
        if path and not Path(path).is_file():
            raise sec.error(key, f"no such file: {path}")
    username = sec.get("rhsm_username") or None
    password = sec.secret("rhsm_password", "rhsm_encrypted_password")
    cert_file = sec.get("rhsm_cert") or None
    key_file = sec.get("rhsm_key") or None
    guests_of = None
    if host_guests:
        identity = host.consumer()
        if not identity.present():
            raise sec.error("owner", f"this host is not registered (no consumer certificate {identity.cert}): "
                            "register it with subscription-manager, or set owner to report the local libvirt "
                            "as a hypervisor")
        guests_of, org = identity.subject()
        owner = owner or org or ""
        username = password = None
        cert_file, key_file = str(identity.cert), str(identity.key)
    elif not username and not cert_file:
        identity = host.consumer()
        if identity.present():  # virt-who: without a user, the host's consumer certificate
            cert_file, key_file = str(identity.cert), str(identity.key)
    ca_cert, ca_origin = sec.get("rhsm_ca_cert") or None, "rhsm_ca_cert"
    if ca_cert is None:
        ca_dir = host.ca_dir()
        if ca_dir is not None:
            ca_cert, ca_origin = str(ca_dir), f"ca_cert_dir in {host.conf_path}"
    return ServerConfig(
        url=url,
        owner=owner or "",
        username=username,
        password=password,
        ca_cert=ca_cert,
        cert_file=cert_file,
        key_file=key_file,
        insecure=keys.flag("rhsm_insecure"),
        proxy=_proxy(keys),
        no_proxy=keys.get("rhsm_no_proxy") or None,
        guests_of=guests_of,
        ca_origin=ca_origin,
    )


def _types() -> list[SourceType]:
    return [t for t in map(source_type, SOURCE_TYPE_NAMES) if t is not None]


def source_keys() -> frozenset[str]:
    """Every key a source section may have, whatever its type."""
    return SHARED_KEYS.union(*(t.keys for t in _types()))


def _check_keys(sec: Section, kind: SourceType) -> None:
    """Refuse Satellite 5 keys; warn about keys no source type reads.

    A key of another type is ignored quietly: ``[defaults]`` gives its keys to sections of every type."""
    for key in sec.values:
        if key in _SATELLITE5_KEYS:
            raise sec.error(key, "Satellite 5 destinations are not supported: ftreport reports to "
                            "Candlepin's API (rhsm_hostname, owner)")
        if key in SHARED_KEYS or key in kind.keys:
            continue
        known = source_keys()  # imports the other types' modules: only for such a key
        if key not in known:
            log.warning("%s: [%s] unknown key %s ignored%s", sec.file_of(key), sec.name, key, _nearest(key, known))


def _source(sec: Section, host: HostRegistration) -> SourceConfig:
    """The shared keys of a source section, then its type's own (SourceType.read_settings)."""
    typ = (sec.get("type") or "libvirt").lower()
    supported = ", ".join(SOURCE_TYPE_NAMES)
    if typ in _UNSUPPORTED_TYPES:
        raise sec.error("type", f"type {typ!r} is not supported by ftreport (supported: {supported})")
    kind = source_type(typ)
    if kind is None:
        raise sec.error("type", f"unknown source type {typ!r} (supported: {supported})")
    _check_keys(sec, kind)
    hv_id = (sec.get("hypervisor_id") or "uuid").lower()
    if hv_id not in HYPERVISOR_ID_KINDS:
        raise sec.error("hypervisor_id", f"must be one of {', '.join(HYPERVISOR_ID_KINDS)}, got {hv_id!r}")
    settings = kind.read_settings(sec)
    filter_type = (sec.get("filter_type") or "").strip().lower()
    if filter_type and filter_type not in FILTER_TYPES:
        raise sec.error("filter_type", f"must be one of {', '.join(FILTER_TYPES)}, got {filter_type!r}")
    include = sec.patterns("filter_hosts", "filter_host_uuids")
    exclude = sec.patterns("exclude_hosts", "exclude_host_uuids")
    destination: ServerConfig | None = None
    dest_error: ConfigError | None = None
    try:
        destination = _destination(sec, host, host_guests=kind.is_local(settings) and not sec.get("owner"))
    except ConfigError as exc:
        if exc.key in _DEFERRED_KEYS:
            dest_error = exc  # only fatal when sending; --print needs no server
        else:
            raise
    return SourceConfig(
        name=sec.name,
        type=typ,
        file=sec.origin,
        owner=sec.get("owner") or None,
        hypervisor_id=hv_id,
        host_filter=HostFilter(include, exclude, filter_type),
        parent_filter=HostFilter(sec.patterns("filter_host_parents"), sec.patterns("exclude_host_parents"),
                                 filter_type),
        settings=settings,
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
    gsec = Section("global", sections.get("global", {}), origin.get("global", "<none>"))
    glob = _global(gsec)
    if paths is None and not explicit and glob.configs:
        files = config_paths(glob.configs)
        sections, order, origin = _read_files(files)
        gsec = Section("global", sections.get("global", {}), origin.get("global", "<none>"))
        glob = _global(gsec)
    env = read_environment(environ)
    for message in env.unsupported:
        log.warning("environment %s", message)
    for message in env.ignored:
        log.debug("environment %s", message)
    glob = env.apply(glob)

    def decrypt(value: str) -> str:
        return decrypt_password(value, glob.password_key_file, glob.virtwho_key_file)

    defaults = sections.get("defaults", {})
    host = HostRegistration()
    sources = []
    for name in order:
        if name in _SPECIAL:
            continue
        merged = {**defaults, **sections[name]}
        sources.append(_source(Section(name, merged, origin[name], decrypt), host))
    if not sources and paths is None and not explicit and not glob.configs:
        # virt-who's rule: no source configured anywhere means the local libvirt.
        where = f"(no source configured: {_looked_for()})"
        log.info("no source configured (%s): reporting the local libvirt, as virt-who does", _looked_for())
        local = {**defaults, "type": ("libvirt", where)}
        source = _source(Section(LOCAL_SOURCE, local, where, decrypt), host)
        if source.destination_error is not None:
            reason = source.destination_error.reason
            source = dataclasses.replace(source, destination_error=ConfigError(
                f"no sources configured ({_looked_for()}; -c FILE names one), and the local libvirt, reported "
                f"instead as virt-who does, has nowhere to go: {reason}"))
        sources.append(source)
    return Config(global_=glob, sources=tuple(sources), files=tuple(str(f) for f in files))
