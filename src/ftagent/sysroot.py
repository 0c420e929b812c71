"""The system root: where the well-known system paths (``/etc/rhsm``, ``/etc/pki``...) are looked up.

On a real host the root is ``/``. A variable of the environment moves it (``FTAGENT_ROOT`` for
ftagent, ``FTREPORT_ROOT`` for ftreport), so that a test, or an administrator preparing an image,
can work on a tree such as ``/tmp/t/etc/rhsm/rhsm.conf`` without touching the host's own files and
without any code being patched: every built-in system path, and every path read from a system file
found under the root (rhsm.conf's ``ca_cert_dir``, say), is taken inside the root.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["rooted", "system_root"]


def system_root(variable: str, env: Mapping[str, str] | None = None) -> Path:
    """The root named by ``variable`` in the environment (``/`` when unset or empty)."""
    environ = os.environ if env is None else env
    value = environ.get(variable, "").strip()
    return Path(value) if value else Path("/")


def rooted(root: Path, path: str | os.PathLike[str]) -> Path:
    """``path`` (an absolute system path) inside ``root``; a relative path is taken as it is."""
    p = Path(path)
    if not p.is_absolute() or root == Path("/"):
        return p
    return root.joinpath(*p.parts[1:])
