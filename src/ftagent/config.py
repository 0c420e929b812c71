"""Configuration: an INI file, ``/etc/ftagent/ftagent.conf`` by default.

``--config PATH`` or the ``FTAGENT_CONFIG`` environment variable picks another file; ``FTAGENT_ROOT``
moves the default one (and every other system path) into a directory (:mod:`ftagent.sysroot`).
Sections::

    [server]  url, ca_cert (file or directory), insecure, timeout, proxy, no_proxy, retries
    [agent]   layout, identity_dir, entitlement_dir, state_dir, facts_dir, product_dir, lock_file,
              lock_timeout, log_file, metrics_file, rhsm_conf, rhsm_lock
    [content] repo_file, manage_repos, baseurl, repo_ca_cert, full_refresh_on_yum (the repository
              file, see ftagent.repos)
    [lease]   reserved for the heartbeat agent: kept as raw strings, never warned about

Relative paths are relative to the directory of the configuration file, so a test can run an agent
entirely inside a temporary directory; the built-in defaults are taken inside ``$FTAGENT_ROOT``.
Unknown sections and keys are logged as warnings; a bad value raises
:class:`~ftagent.errors.ConfigError` naming the file, section and key.

``[agent] layout = rhsm`` puts ftagent where subscription-manager keeps things (the identity in
``/etc/pki/consumer``, certificates in ``/etc/pki/entitlement``; see :mod:`ftagent.layout`) and takes
every ``[server]``, ``[agent]`` and ``[content]`` value this file leaves unset from ``rhsm.conf``
(:mod:`ftagent.rhsmconf`). :attr:`Config.origins` says where each value came from.
"""

from __future__ import annotations

import configparser
import dataclasses
import difflib
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ftagent.atomic import write_atomic
from ftagent.errors import ConfigError
from ftagent.rhsmconf import DEFAULT_PATH as DEFAULT_RHSM_CONF
from ftagent.rhsmconf import RhsmConf, read_rhsm_conf
from ftagent.rhsmlock import DEFAULT_PATH as DEFAULT_RHSM_LOCK
from ftagent.sysroot import rooted, system_root

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "LAYOUTS",
    "AgentConfig",
    "Config",
    "ContentConfig",
    "ServerConfig",
    "config_path",
    "describe",
    "load_config",
    "register_section",
    "save_server_options",
]

logger = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path("/etc/ftagent/ftagent.conf")
ENV_VAR = "FTAGENT_CONFIG"
#: The environment variable naming the system root (default ``/``).
ROOT_VAR = "FTAGENT_ROOT"

#: ``[agent] layout``: ftagent's own paths, or subscription-manager's.
LAYOUTS = ("ftagent", "rhsm")

#: Sections other components own: name -> validator of the raw key/value mapping (may be None).
_EXTRA_SECTIONS: dict[str, Callable[[Mapping[str, str]], None] | None] = {"lease": None}


def register_section(name: str, validator: Callable[[Mapping[str, str]], None] | None = None) -> None:
    """Let another component (e.g. the heartbeat agent) own a section; its keys are not warned about."""
    _EXTRA_SECTIONS[name] = validator


@dataclass
class ServerConfig:
    """``[server]``."""

    url: str | None = None
    ca_cert: Path | None = None
    insecure: bool = False
    timeout: float = 30.0
    proxy: str | None = None
    no_proxy: str | None = None
    retries: int = 3


@dataclass
class AgentConfig:
    """``[agent]``."""

    identity_dir: Path = Path("/var/lib/ftagent/identity")
    entitlement_dir: Path = Path("/var/lib/ftagent/entitlement")
    facts_dir: Path = Path("/etc/ftagent/facts.d")
    product_dir: Path = Path("/etc/ftagent/products.d")
    lock_file: Path = Path("/var/lib/ftagent/ftagent.lock")
    lock_timeout: float = 60.0
    log_file: Path | None = None
    metrics_file: Path | None = None
    layout: str = "ftagent"
    #: ftagent's own state where the layout keeps none beside the identity (``rhsm``).
    state_dir: Path = Path("/var/lib/ftagent")
    rhsm_conf: Path = DEFAULT_RHSM_CONF
    rhsm_lock: Path = DEFAULT_RHSM_LOCK

    @property
    def rhsm(self) -> bool:
        """Whether subscription-manager's layout is in use."""
        return self.layout == "rhsm"


@dataclass
class ContentConfig:
    """``[content]``: the repository file written from the certificates (see :mod:`ftagent.repos`)."""

    repo_file: Path = Path("/etc/yum.repos.d/redhat.repo")
    manage_repos: bool = True
    baseurl: str = "https://cdn.redhat.com"
    repo_ca_cert: Path | None = None  # None: [server] ca_cert when that is a file
    #: Fetch the content overrides from the server at every check-in, not only when certificates
    #: changed (rhsm.conf's full_refresh_on_yum, which subscription-manager's dnf plugin honours).
    full_refresh_on_yum: bool = False


@dataclass
class Config:
    """The whole configuration.  ``path`` is the file read (``None`` if none existed);
    ``looked_for`` the file that was looked for when there was none."""

    path: Path | None = None
    server: ServerConfig = field(default_factory=ServerConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    content: ContentConfig = field(default_factory=ContentConfig)
    sections: dict[str, dict[str, str]] = field(default_factory=dict)
    looked_for: Path | None = None
    #: ``"section.key"`` -> where its value came from: this file, rhsm.conf, or ``"default"``.
    origins: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """The file a message about a setting names: the one read, or the one looked for in vain."""
        if self.path is not None:
            return str(self.path)
        if self.looked_for is not None:
            return f"{self.looked_for} (there is no such file: the built-in defaults apply)"
        return "the configuration"

    @property
    def lease(self) -> dict[str, str]:
        """The raw ``[lease]`` section (parsed by the heartbeat agent)."""
        return dict(self.sections.get("lease", {}))

    def section(self, name: str) -> dict[str, str]:
        """Any section as raw strings (empty if absent)."""
        return dict(self.sections.get(name, {}))


_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off", ""}


class _Reader:
    def __init__(self, file: str, base: Path, parser: configparser.RawConfigParser) -> None:
        self.file = file
        self.base = base
        self.parser = parser

    def error(self, section: str, key: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, section=section, key=key)

    def raw(self, section: str, key: str) -> str | None:
        if not self.parser.has_option(section, key):
            return None
        return self.parser.get(section, key).strip()

    def boolean(self, section: str, key: str, default: bool) -> bool:
        value = self.raw(section, key)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise self.error(section, key, f"invalid boolean {value!r} (use yes/no, true/false, 1/0)")

    def number(self, section: str, key: str, default: float, *, integer: bool = False) -> Any:
        value = self.raw(section, key)
        if value is None or value == "":
            return default
        try:
            parsed: float = int(value) if integer else float(value)
        except ValueError:
            kind = "integer" if integer else "number"
            raise self.error(section, key, f"invalid {kind} {value!r}") from None
        if parsed < 0 or (not integer and parsed == 0):
            raise self.error(section, key, f"invalid value {value!r}: must be positive")
        return parsed

    def path(self, section: str, key: str, default: Path | None) -> Path | None:
        value = self.raw(section, key)
        if value is None or value == "":
            return default
        p = Path(os.path.expandvars(os.path.expanduser(value)))
        return p if p.is_absolute() else self.base / p

    def text(self, section: str, key: str) -> str | None:
        value = self.raw(section, key)
        return value or None


_SERVER_KEYS = {"url", "ca_cert", "insecure", "timeout", "proxy", "no_proxy", "retries"}
_AGENT_KEYS = {
    "layout",
    "state_dir",
    "rhsm_conf",
    "rhsm_lock",
    "identity_dir",
    "entitlement_dir",
    "facts_dir",
    "product_dir",
    "lock_file",
    "lock_timeout",
    "log_file",
    "metrics_file",
}
_CONTENT_KEYS = {"repo_file", "manage_repos", "baseurl", "repo_ca_cert", "full_refresh_on_yum"}


def config_path(explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The configuration file to read: explicit, else ``$FTAGENT_CONFIG``, else the default (inside
    ``$FTAGENT_ROOT``)."""
    environ = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if environ.get(ENV_VAR):
        return Path(environ[ENV_VAR])
    return rooted(system_root(ROOT_VAR, environ), DEFAULT_CONFIG_PATH)


def _rooted_defaults(root: Path) -> tuple[AgentConfig, ContentConfig]:
    """The built-in defaults, their system paths inside ``root``."""
    agent, content = AgentConfig(), ContentConfig()
    for obj in (agent, content):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if isinstance(value, Path):
                setattr(obj, f.name, rooted(root, value))
    return agent, content


def load_config(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> Config:
    """Read and validate the configuration.

    A file named explicitly (argument or ``FTAGENT_CONFIG``) must exist; a missing default file
    means built-in defaults.
    """
    environ = os.environ if env is None else env
    explicit = bool(path) or bool(environ.get(ENV_VAR))
    root = system_root(ROOT_VAR, environ)
    file = config_path(path, environ)
    parser = configparser.RawConfigParser(strict=True, default_section="\x00none")
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    found = True
    try:
        with open(file, encoding="utf-8") as fh:
            parser.read_file(fh, source=str(file))
    except FileNotFoundError:
        if explicit:
            raise ConfigError("configuration file not found", file=str(file)) from None
        logger.debug("no configuration file %s; using defaults", file)
        found = False
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration: {exc}", file=str(file)) from exc
    except configparser.Error as exc:
        raise ConfigError(f"syntax error: {exc.message}", file=str(file)) from exc

    reader = _Reader(str(file), file.resolve().parent, parser)
    for section in parser.sections():
        known = {"server": _SERVER_KEYS, "agent": _AGENT_KEYS, "content": _CONTENT_KEYS}.get(section)
        if known is None:
            if section not in _EXTRA_SECTIONS:
                logger.warning("%s: unknown section [%s] ignored", file, section)
            continue
        for key in parser.options(section):
            if key not in known:
                logger.warning("%s: [%s] unknown key %s ignored%s", file, section, key, _nearest(key, known))

    server = ServerConfig(
        url=reader.text("server", "url"),
        ca_cert=reader.path("server", "ca_cert", None),
        insecure=reader.boolean("server", "insecure", False),
        timeout=float(reader.number("server", "timeout", 30.0)),
        proxy=reader.text("server", "proxy"),
        no_proxy=reader.text("server", "no_proxy"),
        retries=int(reader.number("server", "retries", 3, integer=True)),
    )
    defaults, content_defaults = _rooted_defaults(root)
    layout = (reader.text("agent", "layout") or defaults.layout).lower()
    if layout not in LAYOUTS:
        raise reader.error("agent", "layout", f"unknown layout {layout!r} (use {' or '.join(LAYOUTS)})")
    agent = AgentConfig(
        identity_dir=reader.path("agent", "identity_dir", defaults.identity_dir) or defaults.identity_dir,
        entitlement_dir=reader.path("agent", "entitlement_dir", defaults.entitlement_dir)
        or defaults.entitlement_dir,
        facts_dir=reader.path("agent", "facts_dir", defaults.facts_dir) or defaults.facts_dir,
        product_dir=reader.path("agent", "product_dir", defaults.product_dir) or defaults.product_dir,
        lock_file=reader.path("agent", "lock_file", defaults.lock_file) or defaults.lock_file,
        lock_timeout=float(reader.number("agent", "lock_timeout", defaults.lock_timeout)),
        log_file=reader.path("agent", "log_file", None),
        metrics_file=reader.path("agent", "metrics_file", None),
        layout=layout,
        state_dir=reader.path("agent", "state_dir", defaults.state_dir) or defaults.state_dir,
        rhsm_conf=reader.path("agent", "rhsm_conf", defaults.rhsm_conf) or defaults.rhsm_conf,
        rhsm_lock=reader.path("agent", "rhsm_lock", defaults.rhsm_lock) or defaults.rhsm_lock,
    )
    content = ContentConfig(
        repo_file=reader.path("content", "repo_file", content_defaults.repo_file) or content_defaults.repo_file,
        manage_repos=reader.boolean("content", "manage_repos", True),
        baseurl=reader.text("content", "baseurl") or content_defaults.baseurl,
        repo_ca_cert=reader.path("content", "repo_ca_cert", None),
        full_refresh_on_yum=reader.boolean("content", "full_refresh_on_yum", False),
    )
    origins = {f"{section}.{key}": str(file) for section in ("server", "agent", "content")
               if parser.has_section(section) for key in parser.options(section) if parser.get(section, key).strip()}
    if agent.rhsm:
        rhsm = read_rhsm_conf(root, agent.rhsm_conf)
        _from_rhsm_conf(rhsm, server, agent, content, origins)
    if server.url is not None and server.url.startswith("http://"):
        raise _error_at(origins, reader, "server", "url", f"{server.url!r} is plain HTTP: the server is only reached "
                        "over TLS; use https://HOST[:PORT]/PATH")
    if server.url is not None and not server.url.startswith("https://"):
        raise _error_at(origins, reader, "server", "url", f"invalid URL {server.url!r}: expected "
                        "https://HOST[:PORT]/PATH")
    if server.proxy is not None and "://" not in server.proxy:
        raise _error_at(origins, reader, "server", "proxy", f"invalid proxy URL {server.proxy!r}")
    if not content.baseurl.startswith(("https://", "http://")):
        raise _error_at(origins, reader, "content", "baseurl", f"invalid URL {content.baseurl!r}: expected "
                        "https://HOST[/PATH]")
    sections = {name: dict(parser.items(name)) for name in parser.sections()}
    for name, validator in _EXTRA_SECTIONS.items():
        if validator is not None and name in sections:
            try:
                validator(sections[name])
            except ConfigError:
                raise
            except ValueError as exc:
                raise ConfigError(str(exc), file=str(file), section=name) from exc
    return Config(path=file if found else None, server=server, agent=agent, content=content, sections=sections,
                  looked_for=None if found else file, origins=origins)


def _error_at(origins: Mapping[str, str], reader: _Reader, section: str, key: str, message: str) -> ConfigError:
    """An error naming where the value came from (this file, or rhsm.conf's key)."""
    origin = origins.get(f"{section}.{key}", reader.file)
    if origin == reader.file:
        return reader.error(section, key, message)
    return ConfigError(message, file=origin.split(" ", 1)[0], section=section, key=key)


def _from_rhsm_conf(rhsm: RhsmConf, server: ServerConfig, agent: AgentConfig, content: ContentConfig,
                    origins: dict[str, str]) -> None:
    """The ``rhsm`` layout: each value ftagent.conf leaves unset, from rhsm.conf (its defaults included)."""

    def take(section: str, key: str, value: Any, rhsm_section: str, *rhsm_keys: str) -> Any:
        name = f"{section}.{key}"
        if name in origins:
            return None
        given = [k for k in rhsm_keys if rhsm.is_set(rhsm_section, k)]
        where = str(rhsm.path) if given else "rhsm.conf default"
        origins[name] = f"{where} [{rhsm_section}] {', '.join(given or rhsm_keys)}"
        return value

    def set_(obj: Any, section: str, key: str, value: Any, rhsm_section: str, *rhsm_keys: str) -> None:
        if take(section, key, value, rhsm_section, *rhsm_keys) is not None:
            setattr(obj, key, value)

    host = rhsm.get("server", "hostname")
    port = rhsm.number("server", "port") or 443
    prefix = rhsm.get("server", "prefix") or "/"
    hostpart = f"[{host}]" if ":" in host else host
    set_(server, "server", "url", f"https://{hostpart}:{port}/{prefix.strip('/')}".rstrip("/"), "server",
         "hostname", "port", "prefix")
    ca_dir = rhsm.path_of("rhsm", "ca_cert_dir")
    if ca_dir.is_dir():
        set_(server, "server", "ca_cert", ca_dir, "rhsm", "ca_cert_dir")
    set_(server, "server", "insecure", rhsm.flag("server", "insecure"), "server", "insecure")
    proxy_host = rhsm.get("server", "proxy_hostname")
    if proxy_host:
        user = rhsm.get("server", "proxy_user")
        secret = rhsm.get("server", "proxy_password")
        cred = f"{quote(user, safe='')}:{quote(secret, safe='')}@" if user else ""
        scheme = rhsm.get("server", "proxy_scheme") or "http"
        proxy = f"{scheme}://{cred}{proxy_host}:{rhsm.number('server', 'proxy_port') or 3128}"
        set_(server, "server", "proxy", proxy, "server", "proxy_hostname", "proxy_port", "proxy_user",
             "proxy_password")
    if rhsm.get("server", "no_proxy"):
        set_(server, "server", "no_proxy", rhsm.get("server", "no_proxy"), "server", "no_proxy")
    set_(agent, "agent", "identity_dir", rhsm.path_of("rhsm", "consumerCertDir"), "rhsm", "consumercertdir")
    set_(agent, "agent", "entitlement_dir", rhsm.path_of("rhsm", "entitlementCertDir"), "rhsm",
         "entitlementcertdir")
    set_(content, "content", "baseurl", rhsm.get("rhsm", "baseurl"), "rhsm", "baseurl")
    set_(content, "content", "repo_ca_cert", rhsm.path_of("rhsm", "repo_ca_cert"), "rhsm", "repo_ca_cert")
    set_(content, "content", "manage_repos", rhsm.flag("rhsm", "manage_repos"), "rhsm", "manage_repos")
    set_(content, "content", "full_refresh_on_yum", rhsm.flag("rhsm", "full_refresh_on_yum"), "rhsm",
         "full_refresh_on_yum")


def _nearest(key: str, known: set[str]) -> str:
    """``"; did you mean X?"`` for a likely typo of a known key, else nothing."""
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def describe(config: Config) -> list[dict[str, Any]]:
    """The effective ``[server]``, ``[agent]`` and ``[content]`` values, each with where it came from:
    this file, rhsm.conf (file, section and key, or its default) in the ``rhsm`` layout, or ``default``."""
    out = []
    for section, obj in (("server", config.server), ("agent", config.agent), ("content", config.content)):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            out.append({"section": section, "key": f.name, "value": None if value is None else str(value),
                        "source": config.origins.get(f"{section}.{f.name}", "default")})
    return out


def save_server_options(path: Path, values: Mapping[str, str]) -> None:
    """Set keys of ``[server]`` in the configuration file, keeping every other line (and comments).

    Used by ``register --serverurl/--insecure``, so later commands talk to the same server.
    """

    owner: tuple[int, int] | None = None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        st = path.stat()
        mode = st.st_mode & 0o777
        if os.geteuid() == 0:
            owner = (st.st_uid, st.st_gid)  # the rewritten file keeps its owner, as an edit in place would
    except FileNotFoundError:
        lines, mode = [], 0o644
    except OSError as exc:
        raise ConfigError(f"cannot read configuration: {exc.strerror or exc}", file=str(path)) from None
    pending = dict(values)
    out: list[str] = []
    section = None
    header = re.compile(r"^\s*\[([^\]]+)\]")
    for line in lines:
        m = header.match(line)
        if m:
            if section == "server":
                out.extend(f"{k} = {v}" for k, v in pending.items())
                pending.clear()
            section = m.group(1).strip()
        elif section == "server":
            key = re.split(r"\s*[=:]", line.strip(), maxsplit=1)[0]
            if key in pending:
                out.append(f"{key} = {pending.pop(key)}")
                continue
        out.append(line)
    if pending:
        if section != "server":
            out.append("[server]")
        out.extend(f"{k} = {v}" for k, v in pending.items())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, ("\n".join(out) + "\n").encode(), mode=mode, owner=owner)
    except OSError as exc:
        raise ConfigError(f"cannot save the server options: {exc.strerror or exc}", file=str(path)) from None
