"""``[lease]`` of ``ftagent.conf``, validated: timing, fencing ladder, status file and backend.

The shared keys are validated here; the backend's own keys by the parser its module declares, found
in the registry (:mod:`ftagent.lease.backends`).  Errors name the file, the section and the key
(:class:`~ftagent.errors.ConfigError`, exit 78).  Standard library only, so ``ftagent status`` stays
cheap.
"""

from __future__ import annotations

import difflib
import logging
import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ftagent.errors import ConfigError
from ftagent.lease.backends import BACKENDS, DEFAULT_BACKEND, all_backends, backend_spec

if TYPE_CHECKING:
    from ftagent.config import Config

__all__ = ["DEFAULT_STATUS_FILE", "KEYS", "MAX_TTL", "LeaseSettings", "lease_keys", "parse_lease_settings"]

logger = logging.getLogger(__name__)

DEFAULT_STATUS_FILE = Path("/var/lib/ftagent/lease.json")
MAX_TTL = 300.0  # the server refuses longer leases (ftmock.leases.MAX_TTL)

#: The ``[lease]`` keys every backend shares.
KEYS = frozenset({
    "enabled", "renew_interval", "retry_interval", "ttl", "margin", "fence_command", "fence_units",
    "fence_signal", "fence_timeout", "status_file", "backend",
})


def lease_keys() -> frozenset[str]:
    """Every key ``[lease]`` knows: the shared ones and each backend's own."""
    return KEYS.union(*(spec.keys for spec in all_backends()))


@dataclass(frozen=True)
class LeaseSettings:
    """``[lease]``, validated.  Defaults follow sanlock's ratios (renew every ttl/4, fence at 3/4)."""

    enabled: bool = True
    renew_interval: float = 5.0
    #: Seconds between renewal attempts while DEGRADED (jittered, never past the deadline), so that a
    #: server back before the deadline is used; at most ``renew_interval`` (which it defaults below 1 s).
    retry_interval: float = 1.0
    ttl: float = 20.0
    margin: float = 5.0
    fence_command: str | None = None
    fence_units: tuple[str, ...] = ()
    fence_signal: str | None = None
    fence_timeout: float = 2.0
    status_file: Path = DEFAULT_STATUS_FILE
    backend: str = DEFAULT_BACKEND
    #: The backend's own keys, validated by the parser its module declares (``None`` without any).
    backend_options: object | None = None

    @property
    def lifetime(self) -> float:
        """Seconds from a renewal's send time to the local deadline (``ttl - margin``)."""
        return self.ttl - self.margin


def _number(raw: Mapping[str, str], key: str, default: float, err: Callable[[str, str], ConfigError]) -> float:
    value = raw.get(key, "").strip()
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise err(key, f"invalid number {value!r}") from None
    if not number > 0 or number != number or number == float("inf"):
        raise err(key, f"invalid value {value!r}: must be a positive number of seconds")
    return number


#: sanlock's proportions: renew every ttl/4, stop acting as the holder ttl/4 before the server's expiry.
_RATIO = {"renew_interval": 0.25, "ttl": 1.0, "margin": 0.25}


def _timing(raw: Mapping[str, str], defaults: LeaseSettings,
            err: Callable[[str, str], ConfigError]) -> tuple[float, float, float, str]:
    """(renew_interval, ttl, margin, what was derived): unset values follow the ones set, in sanlock's ratios.

    Setting only ``ttl = 60`` gives renewals every 15 s and a margin of 15 s; setting only
    ``renew_interval = 2`` gives ttl 8 and margin 2.  With none set the defaults apply.
    """
    given = {key: _number(raw, key, 0.0, err) for key in _RATIO if raw.get(key, "").strip()}
    if not given:
        return defaults.renew_interval, defaults.ttl, defaults.margin, ""
    # The scale comes from ttl when set, else from the first other value set.
    base = "ttl" if "ttl" in given else next(k for k in _RATIO if k in given)
    unit = given[base] / _RATIO[base]
    values = {key: given.get(key, unit * ratio) for key, ratio in _RATIO.items()}
    derived = [f"{key} = {values[key]:g}" for key in _RATIO if key not in given]
    note = f"derived from {base}: {', '.join(derived)}" if derived else ""
    return values["renew_interval"], values["ttl"], values["margin"], note


def _check_keys(raw: Mapping[str, str], own: tuple[str, ...], backend: str, where: str) -> None:
    """Warn about keys that are not ``[lease]``'s (a typo) or another backend's (ignored)."""
    strange = [key for key in raw if key not in KEYS and key not in own]
    if not strange:
        return  # the common case: the other backends' modules are not even loaded
    owners = {key: spec.name for spec in all_backends() for key in spec.keys}
    known = lease_keys()
    for key in strange:
        if key in owners:
            logger.warning("%s: [lease] %s is for backend %s; ignored with backend %s", where, key, owners[key],
                           backend)
        else:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            logger.warning("%s: [lease] unknown key %s ignored%s", where, key,
                           f"; did you mean {close[0]}?" if close else "")


def parse_lease_settings(config: Config | None = None, raw: Mapping[str, str] | None = None,
                         *, file: str | None = None, base: Path | None = None) -> LeaseSettings:
    """Validate ``[lease]`` of ``config`` (or a raw mapping); errors name file, section and key."""
    if raw is None:
        raw = config.lease if config is not None else {}
    if config is not None:
        file = file or config.where
        if config.path is not None:
            base = base or config.path.resolve().parent
    where = file or "the configuration"

    def err(key: str, message: str) -> ConfigError:
        return ConfigError(message, file=where, section="lease", key=key)

    backend = raw.get("backend", "").strip().lower() or DEFAULT_BACKEND
    if backend not in BACKENDS:
        raise err("backend", f"unknown lease backend {raw.get('backend', '').strip()!r} "
                             f"(known: {', '.join(BACKENDS)})")
    spec = backend_spec(backend)
    _check_keys(raw, spec.keys, backend, where)
    enabled_raw = raw.get("enabled", "yes").strip().lower()
    if enabled_raw in ("1", "yes", "true", "on"):
        enabled = True
    elif enabled_raw in ("0", "no", "false", "off"):
        enabled = False
    else:
        raise err("enabled", f"invalid boolean {raw.get('enabled')!r} (use yes/no, true/false, 1/0)")
    defaults = LeaseSettings()
    options = spec.parse(raw, err, base) if spec.parse is not None else None
    if spec.own_ttl is not None:
        # The backend's own timing replaces [lease] ttl: renew_interval and margin are derived from it
        # and checked against it.
        own, why = spec.own_ttl(options)
        if raw.get("ttl", "").strip():
            logger.warning("%s: [lease] ttl is ignored by the %s backend (%s)", where, backend, why)
        raw = dict(raw, ttl=f"{own:g}")
    renew, ttl, margin, derived = _timing(raw, defaults, err)
    fence_timeout = _number(raw, "fence_timeout", defaults.fence_timeout, err)
    retry = _number(raw, "retry_interval", min(defaults.retry_interval, renew), err)
    if retry > renew:
        raise err("retry_interval", f"retry_interval {retry:g} must not be longer than renew_interval {renew:g}: "
                                    "it is how soon a failed renewal is tried again")
    note = f" ({derived})" if derived else ""
    if not 1 <= ttl <= MAX_TTL:
        raise err("ttl", f"ttl {ttl:g} out of range: the server accepts 1 to {MAX_TTL:g} seconds{note}")
    if margin >= ttl - renew:
        raise err("margin", f"margin {margin:g} must be below ttl - renew_interval ({ttl - renew:g}), "
                            f"or no renewal could ever land before the deadline{note}")
    if 2 * renew > ttl - margin:
        raise err("renew_interval", f"renew_interval {renew:g} is too long for ttl {ttl:g} and margin "
                                    f"{margin:g}: at least two renewals must fit before the deadline "
                                    f"(renew_interval <= (ttl - margin) / 2 = {(ttl - margin) / 2:g}){note}")
    if fence_timeout > margin:
        logger.warning("%s: [lease] fence_timeout %g exceeds margin %g: a slow fence hook may still run "
                       "when the server can grant the lease to another instance", where, fence_timeout, margin)
    command = raw.get("fence_command", "").strip() or None
    if command is not None:
        try:
            if not shlex.split(command):
                command = None
        except ValueError as exc:
            raise err("fence_command", f"cannot split command: {exc}") from None
    units = tuple(u for u in raw.get("fence_units", "").replace(",", " ").split() if u)
    signal_text = raw.get("fence_signal", "").strip() or None
    if signal_text is not None:
        # Imported only when a signal rung is set: fencing loads subprocess, which `ftagent status`
        # (the monitoring command, run often) does not need otherwise (about 2.5 ms, python -X importtime).
        from ftagent.lease.fencing import parse_signal_spec

        try:
            parse_signal_spec(signal_text)
        except ValueError as exc:
            raise err("fence_signal", str(exc)) from None
    status_raw = raw.get("status_file", "").strip()
    status = defaults.status_file
    if status_raw:
        status = Path(os.path.expandvars(os.path.expanduser(status_raw)))
        if not status.is_absolute():
            status = (base or Path.cwd()) / status
    return LeaseSettings(enabled=enabled, renew_interval=renew, retry_interval=retry, ttl=ttl, margin=margin,
                         fence_command=command, fence_units=units, fence_signal=signal_text,
                         fence_timeout=fence_timeout, status_file=status, backend=backend,
                         backend_options=options)
