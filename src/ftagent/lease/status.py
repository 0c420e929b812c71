"""This instance's holder id and the heartbeat's status file (``ftagent status`` reads it).

The holder id is a secret of this instance (with the server backend, knowing it is part of what a
claim of the lease rests on): it is kept 0600 beside the status file and shown, logged or written
elsewhere only as its fingerprint (:func:`holder_fingerprint`, the one ftmock shows). Standard
library only (plus ftagent's atomic writes), so ``ftagent status`` stays cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftagent.atomic import write_atomic
from ftagent.errors import ConfigError, FtagentError
from ftagent.lease.clock import Clock, SystemClock, boot_id
from ftagent.lease.states import LeaseState

if TYPE_CHECKING:
    from ftagent.lease.settings import LeaseSettings

__all__ = ["holder_fingerprint", "holder_path", "load_or_create_holder", "read_holder", "read_status",
           "shown_holder", "status_summary", "write_status"]

logger = logging.getLogger(__name__)

#: The holder id file's mode: only its owner (root) reads the secret.
HOLDER_MODE = 0o600


def holder_fingerprint(holder: str) -> str:
    """What is shown of a holder id: the first 8 hex digits of its SHA-256 (as ftmock shows it)."""
    return hashlib.sha256(holder.encode()).hexdigest()[:8]


def shown_holder(reported: str | None, own: str) -> str | None:
    """A holder a backend reported, fit to show: this instance's own id as its fingerprint, another
    holder as the backend names it (backends name others by fingerprint or their own id, such as a
    sanlock host id: never by holder id)."""
    return holder_fingerprint(own) if reported == own else reported


def holder_path(status_file: Path) -> Path:
    """Where the holder id is kept: beside the status file (``lease.json`` -> ``lease.holder``)."""
    return status_file.with_suffix(".holder") if status_file.suffix else status_file.with_name(
        status_file.name + ".holder")


MAX_HOLDER = 255  # what the server accepts


def read_holder(path: Path) -> str | None:
    """The holder id in ``path`` (``None`` if absent or empty); a corrupt file is a ConfigError."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_HOLDER + 2)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the lease holder file {path}: {exc.strerror or exc}") from exc
    problem = None
    value = ""
    if len(raw) > MAX_HOLDER + 1:
        problem = f"longer than {MAX_HOLDER} bytes"
    elif b"\0" in raw:
        problem = "it holds a NUL byte"
    else:
        try:
            value = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            problem = "it is not UTF-8 text"
        else:
            if not value.isprintable():
                problem = "it holds control characters"
    if problem is not None:
        raise ConfigError(f"the lease holder file {path} is corrupt ({problem}); remove it to get a new holder id")
    return value or None


def load_or_create_holder(status_file: Path) -> str:
    """This instance's holder id, created once (race-free) and reused by every later run."""
    path = holder_path(status_file)
    value = read_holder(path)
    if value:
        _restrict(path)
        return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = f"{socket.gethostname()[:64]}:{secrets.token_hex(8)}"
    if not write_atomic(path, (value + "\n").encode(), mode=HOLDER_MODE, exclusive=True):
        value = read_holder(path) or value  # another run created it first: theirs wins
    return value


def _restrict(path: Path) -> None:
    """Take group and other access away from a holder file an earlier version wrote 0644."""
    try:
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            os.chmod(path, mode & 0o700)
            logger.warning("lease holder file %s was readable by others (mode %o); now %o", path, mode, mode & 0o700)
    except OSError as exc:
        logger.warning("cannot restrict the lease holder file %s to its owner: %s", path, exc.strerror or exc)


def write_status(path: Path, data: Mapping[str, Any], *, durable: bool) -> None:
    """Replace the status file atomically (and durably on state changes)."""
    payload = (json.dumps(data, sort_keys=True, indent=1) + "\n").encode()
    if durable:
        path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, payload, mode=0o644, durable=durable)


def read_status(path: Path) -> dict[str, Any] | None:
    """The status file's content, or ``None`` when there is none (or it is unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status_summary(settings: LeaseSettings, clock: Clock | None = None) -> dict[str, Any]:
    """The ``lease`` object of ``ftagent status --json``: state, generation, holder and more.

    ``holder_fingerprint`` is the fingerprint of this instance's holder id, ``held_by`` the holder
    the backend last reported (a fingerprint, or the sanlock host id; never a holder id),
    ``deadline_in`` the seconds left before this instance fences (recomputed now, same boot only),
    ``running`` whether the heartbeat process that wrote the file is alive.
    """
    data = read_status(settings.status_file)
    shown: str | None = None
    with contextlib.suppress(FtagentError):
        holder = read_holder(holder_path(settings.status_file))
        shown = None if holder is None else holder_fingerprint(holder)
    if data is None:
        return {"state": LeaseState.DISABLED.value if not settings.enabled else None, "generation": None,
                "holder_fingerprint": shown, "held_by": None, "running": False, "enabled": settings.enabled,
                "status_file": str(settings.status_file)}
    out = {key: data.get(key) for key in (
        "state", "observed", "generation", "holder_fingerprint", "held_by", "consumer", "renewals", "reason", "updated",
        "enabled", "mode", "backend", "ttl", "margin", "backend_timing")}
    out["status_file"] = str(settings.status_file)
    same_boot = data.get("boot_id") is not None and data.get("boot_id") == boot_id()
    deadline = data.get("deadline")
    clk = clock or SystemClock()
    if same_boot and isinstance(deadline, (int, float)):
        out["deadline_in"] = round(deadline - clk.now(), 3)
    else:
        out["deadline_in"] = None
    out["running"] = same_boot and data.get("mode") == "daemon" and _pid_alive(data.get("pid"))
    if data.get("fence"):
        out["fence"] = data["fence"]
    stale = _stale_reason(out, same_boot)
    if stale is not None:
        # The file claims the lease, but nothing renews it any more: saying HELD would be a lie.
        out["recorded_state"], out["state"], out["stale_reason"] = out["state"], LeaseState.STALE.value, stale
    return out


def _stale_reason(out: Mapping[str, Any], same_boot: bool) -> str | None:
    if out.get("state") not in (LeaseState.HELD.value, LeaseState.DEGRADED.value):
        return None
    if not same_boot:
        return "written before the last boot"
    deadline_in = out.get("deadline_in")
    if deadline_in is None:
        return "no deadline recorded"
    if deadline_in < 0:
        return f"its deadline passed {-deadline_in:.0f} s ago"
    if out.get("mode") == "daemon" and not out.get("running"):
        return "the heartbeat that wrote it is no longer running"
    return None
