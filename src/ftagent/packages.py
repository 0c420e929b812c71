"""The package profile: the RPM packages installed on this system, as the server keeps them.

Read from the RPM database with the ``rpm`` Python bindings (the system's ``python3-rpm``), as
subscription-manager reads it: for each package its ``name``, ``version``, ``release``, ``arch``,
``epoch`` (``None`` when it has none) and ``vendor``, sorted. The database is the one under the system
root (``FTAGENT_ROOT``, default ``/``). Without the bindings there is no profile: the check-in says
so in a debug line and sends none.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ftagent.config import ROOT_VAR
from ftagent.sysroot import system_root

__all__ = ["rpm_profile"]

logger = logging.getLogger(__name__)

_FIELDS = ("name", "version", "release", "arch", "epoch", "vendor")


def _text(value: Any) -> Any:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def rpm_profile(root: Path | None = None) -> list[dict[str, Any]] | None:
    """The installed packages under ``root`` (default: the system root); None without the bindings."""
    try:
        import rpm  # type: ignore[import-not-found]  # the system's binding: absent, there is no profile
    except ImportError:
        logger.debug("no rpm Python bindings (python3-rpm): the package profile is not sent")
        return None
    where = str(root if root is not None else system_root(ROOT_VAR))
    ts = rpm.TransactionSet(where)
    ts.setVSFlags(-1)  # reading the database: no signature checks of every header
    packages = []
    for header in ts.dbMatch():
        package = {key: _text(header[key]) for key in _FIELDS}
        if package["name"] == "gpg-pubkey":  # imported signing keys, not packages
            continue
        packages.append(package)
    packages.sort(key=lambda p: tuple(str(p[k]) for k in _FIELDS))
    return packages
