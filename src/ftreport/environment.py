"""virt-who's environment variables (``VIRTWHO_*``), as ``/etc/sysconfig/virt-who`` sets them.

virt-who reads a variable per command-line flag: a boolean one is on when its value is ``1`` or
``true`` (any case), a valued one when it is not empty. ftreport reads the same variables (the
unit reads ``/etc/sysconfig/ftreport``, so an existing sysconfig file can be copied there) and
applies them over ``[global]``, under the command line. Variables that configured a source or a
Satellite 5 destination (deprecated by virt-who) are reported as unsupported, never silently
dropped.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["BACKEND_TYPES", "FLAGS", "IGNORED", "VALUES", "EnvSettings", "read_environment"]

# variable -> GlobalConfig field, on when "1" or "true"
FLAGS = {
    "VIRTWHO_DEBUG": "debug",
    "VIRTWHO_ONE_SHOT": "oneshot",
    "VIRTWHO_PRINT": "print_",
    "VIRTWHO_LOG_PER_CONFIG": "log_per_config",
}
# variable -> GlobalConfig field, set when not empty
VALUES = {
    "VIRTWHO_INTERVAL": "interval",
    "VIRTWHO_REPORTER_ID": "reporter_id",
    "VIRTWHO_LOG_DIR": "log_dir",
    "VIRTWHO_LOG_FILE": "log_file",
}
# Accepted with no effect, and why.
IGNORED = {
    "VIRTWHO_BACKGROUND": "ftreport's daemon mode always watches for changes",
    "VIRTWHO_SAM": "reporting to Candlepin (SAM, Satellite 6, RHSM) is what ftreport does",
    "VIRTWHO_SATELLITE6": "reporting to Candlepin (SAM, Satellite 6, RHSM) is what ftreport does",
}
BACKEND_TYPES = ("LIBVIRT", "VDSM", "ESX", "XEN", "RHEVM", "HYPERV", "KUBEVIRT", "AHV")
_BACKEND_KEYS = ("OWNER", "ENV", "SERVER", "USERNAME", "PASSWORD")
_SATELLITE5 = ("VIRTWHO_SATELLITE5", "VIRTWHO_SATELLITE", "VIRTWHO_SATELLITE_SERVER",
               "VIRTWHO_SATELLITE_USERNAME", "VIRTWHO_SATELLITE_PASSWORD")
_TRUE = ("1", "true")


@dataclass(frozen=True)
class EnvSettings:
    """What the environment sets, and what it asks for that ftreport does not do."""

    overrides: Mapping[str, Any] = field(default_factory=dict)  # GlobalConfig field -> value
    unsupported: tuple[str, ...] = ()  # one message per variable
    ignored: tuple[str, ...] = ()

    def apply(self, glob: Any) -> Any:
        return dataclasses.replace(glob, **self.overrides) if self.overrides else glob


def _unsupported(name: str) -> str | None:
    if name in _SATELLITE5:
        return f"{name}: Satellite 5 destinations are not supported (ftreport reports to Candlepin)"
    suffix = name[len("VIRTWHO_"):]
    if suffix in BACKEND_TYPES or any(suffix == f"{t}_{k}" for t in BACKEND_TYPES for k in _BACKEND_KEYS):
        return (f"{name}: configuring a source through the environment is not supported (virt-who "
                "deprecated it); write a source section in /etc/ftreport.d/*.conf")
    return None


def read_environment(environ: Mapping[str, str] | None = None) -> EnvSettings:
    """Read every ``VIRTWHO_*`` variable; raises ConfigError for a malformed value."""
    env = os.environ if environ is None else environ
    overrides: dict[str, Any] = {}
    unsupported: list[str] = []
    ignored: list[str] = []
    for name in sorted(k for k in env if k.startswith("VIRTWHO_")):
        raw = env[name].strip()
        if name in FLAGS:
            if raw.lower() in _TRUE:
                overrides[FLAGS[name]] = True
        elif name in VALUES:
            if not raw:
                continue
            target = VALUES[name]
            if target == "interval":
                try:
                    value = int(raw)
                except ValueError as exc:
                    raise ConfigError(f"expected a whole number of seconds, got {raw!r}", file="environment",
                                      key=name) from exc
                if value < 1:
                    raise ConfigError(f"must be at least 1, got {raw!r}", file="environment", key=name)
                overrides[target] = float(value)
            elif target == "log_dir":
                overrides[target] = Path(raw)
            else:
                overrides[target] = raw
        elif name in IGNORED:
            if raw:
                ignored.append(f"{name}: {IGNORED[name]}")
        else:
            if not raw or raw.lower() in ("0", "false", "no"):
                continue
            unsupported.append(_unsupported(name) or f"{name}: unknown virt-who variable, ignored")
    return EnvSettings(overrides=overrides, unsupported=tuple(unsupported), ignored=tuple(ignored))
