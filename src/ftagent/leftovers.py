"""Removal of what a crash leaves behind in the identity and entitlement directories.

An atomic write that dies before its rename leaves ``.NAME.tmp-XXXX`` (for an entitlement, possibly
holding a private key), and an identity swap that dies before its commit leaves a ``.gen-*``
directory that ``.current`` does not name. Commands clean them under the agent lock, and only those
older than :data:`MIN_AGE` seconds: the heartbeat swaps identities without that lock, and its
in-flight files are never that old.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path

from ftagent.atomic import fsync_dir

__all__ = ["MIN_AGE", "clean_leftovers"]

logger = logging.getLogger(__name__)

MIN_AGE = 60.0
_TEMP = re.compile(r"^\..+\.tmp-[0-9a-f]+$")
_GEN_PREFIX = ".gen-"
_CURRENT = ".current"


def _current_generation(directory: Path) -> str | None:
    try:
        return Path(str((directory / _CURRENT).readlink())).name
    except OSError:
        return None


def clean_leftovers(*directories: Path, min_age: float = MIN_AGE, now: float | None = None) -> list[Path]:
    """Remove crash leftovers older than ``min_age`` seconds; returns what was removed."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    for directory in directories:
        if not directory.is_dir():
            continue
        current = _current_generation(directory)
        touched = False
        for entry in directory.iterdir():
            is_temp = bool(_TEMP.match(entry.name))
            is_gen = entry.name.startswith(_GEN_PREFIX) and entry.name != current
            if not (is_temp or is_gen):
                continue
            try:
                if now - entry.lstat().st_mtime < min_age:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    if current is None and not is_temp:
                        continue  # no .current to compare with: a generation may be the only identity
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                logger.warning("cannot remove leftover %s: %s", entry, exc.strerror or exc)
                continue
            removed.append(entry)
            touched = True
        if touched:
            try:
                fsync_dir(directory)
            except OSError as exc:
                logger.warning("cannot fsync %s: %s", directory, exc.strerror or exc)
    if removed:
        logger.info("removed crash leftovers: %s", ", ".join(str(p) for p in removed))
    return removed
