"""subscription-manager's configuration file, ``/etc/rhsm/rhsm.conf``, read as python-rhsm reads it.

ftagent's ``rhsm`` layout takes the ``[server]`` and ``[rhsm]`` values its own file leaves unset from
here, and ftreport, like virt-who, takes the entitlement server and the host's consumer certificate
from here when a source section does not name them. Both read it through this module:

- a key missing from the file, or left empty, has python-rhsm's default (``hostname`` is
  ``subscription.rhsm.redhat.com``, ``ca_cert_dir`` is ``/etc/rhsm/ca/``...);
- ``%(name)s`` is replaced by the value of ``name`` in the same section, defaults included, as
  rhsm.conf's own ``repo_ca_cert = %(ca_cert_dir)sredhat-uep.pem`` needs (``%%`` is a ``%``);
- key names are case-insensitive (``consumerCertDir`` is ``consumercertdir``);
- paths (``ca_cert_dir``, ``consumercertdir``...) are taken inside the system root
  (:mod:`ftagent.sysroot`), where the file itself was found.

A missing file is not an error: :attr:`RhsmConf.exists` says whether there was one, and every value is
then the default.
"""

from __future__ import annotations

import configparser
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ftagent.errors import ConfigError
from ftagent.sysroot import rooted

__all__ = ["DEFAULTS", "DEFAULT_PATH", "RhsmConf", "read_rhsm_conf"]

DEFAULT_PATH = Path("/etc/rhsm/rhsm.conf")

#: python-rhsm's defaults for the keys ftagent and ftreport read (its ``rhsm.config.DEFAULTS``).
DEFAULTS: Mapping[str, Mapping[str, str]] = {
    "server": {
        "hostname": "subscription.rhsm.redhat.com",
        "prefix": "/subscription",
        "port": "443",
        "insecure": "0",
        "proxy_hostname": "",
        "proxy_port": "",
        "proxy_user": "",
        "proxy_password": "",
        "no_proxy": "",
    },
    "rhsm": {
        "baseurl": "https://cdn.redhat.com",
        "ca_cert_dir": "/etc/rhsm/ca/",
        "repo_ca_cert": "%(ca_cert_dir)sredhat-uep.pem",
        "productcertdir": "/etc/pki/product",
        "entitlementcertdir": "/etc/pki/entitlement",
        "consumercertdir": "/etc/pki/consumer",
        "manage_repos": "1",
        "full_refresh_on_yum": "0",
    },
}

_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}
_NO_DEFAULT_SECTION = "\x00none"  # rhsm.conf has no [DEFAULT]: a section of that name is an ordinary one


@dataclass(frozen=True)
class RhsmConf:
    """The values of one rhsm.conf (or of none: the defaults)."""

    path: Path
    root: Path = Path("/")
    exists: bool = False
    _parser: configparser.ConfigParser = field(default_factory=configparser.ConfigParser, repr=False)
    _from_file: frozenset[tuple[str, str]] = frozenset()

    def is_set(self, section: str, key: str) -> bool:
        """Whether the file itself gives ``key`` a non-empty value."""
        return (section, key.lower()) in self._from_file

    def origin(self, section: str, key: str) -> str:
        """Where the value comes from: the file, or python-rhsm's defaults."""
        return str(self.path) if self.is_set(section, key) else "rhsm.conf default"

    def get(self, section: str, key: str) -> str:
        """The value, interpolated; the default when the file leaves it out or empty; ``""`` if none."""
        if not self._parser.has_option(section, key):
            return ""
        try:
            return self._parser.get(section, key).strip()
        except configparser.Error as exc:
            message = getattr(exc, "message", str(exc)).splitlines()[0]
            raise ConfigError(f"cannot interpolate: {message}", file=str(self.path), section=section,
                              key=key) from None

    def flag(self, section: str, key: str) -> bool:
        value = self.get(section, key).lower()
        if value in _TRUE:
            return True
        if value in _FALSE or value == "":
            return False
        raise ConfigError(f"expected a boolean (1/0, yes/no), got {value!r}", file=str(self.path),
                          section=section, key=key)

    def number(self, section: str, key: str) -> int | None:
        value = self.get(section, key)
        if value == "":
            return None
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"expected an integer, got {value!r}", file=str(self.path), section=section,
                              key=key) from None

    def path_of(self, section: str, key: str) -> Path:
        """A path value, inside the root the file was found in."""
        return rooted(self.root, self.get(section, key))


def read_rhsm_conf(root: Path = Path("/"), path: Path | None = None) -> RhsmConf:
    """Read rhsm.conf (``path``, else ``/etc/rhsm/rhsm.conf`` inside ``root``); a missing file gives
    the defaults. Raises :class:`~ftagent.errors.ConfigError` for a file that cannot be read or parsed."""
    file = path if path is not None else rooted(root, DEFAULT_PATH)
    parser = configparser.ConfigParser(interpolation=configparser.BasicInterpolation(), strict=False,
                                       default_section=_NO_DEFAULT_SECTION)
    exists = True
    try:
        with open(file, encoding="utf-8") as fh:
            parser.read_file(fh, source=str(file))
    except FileNotFoundError:
        exists = False
    except PermissionError:
        raise ConfigError("cannot read: permission denied; run as root", file=str(file)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(file)) from None
    except configparser.Error as exc:
        message = getattr(exc, "message", str(exc)).splitlines()[0]
        raise ConfigError(f"cannot parse: {message}", file=str(file)) from None
    from_file = set()
    for section in parser.sections():
        for key, value in parser.items(section, raw=True):
            if value.strip():
                from_file.add((section, key))
            else:
                parser.remove_option(section, key)  # empty: the default applies, as python-rhsm's items() has it
    for section, values in DEFAULTS.items():
        if not parser.has_section(section):
            parser.add_section(section)
        for key, value in values.items():
            if not parser.has_option(section, key):
                parser.set(section, key, value)
    return RhsmConf(path=file, root=root, exists=exists, _parser=parser, _from_file=frozenset(from_file))
