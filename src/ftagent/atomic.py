"""Atomic, durable file operations.

A file is written to a temporary name in the same directory, flushed and fsynced, renamed over
the target with ``os.replace`` and the directory is fsynced, so that after a crash the target holds
either the old or the new content, never a torn mix.  Only the standard library is used here.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["fsync_dir", "remove_durably", "replace_symlink", "write_atomic"]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so that renames and unlinks in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{secrets.token_hex(6)}")


def write_atomic(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644, sync_dir: bool = True
) -> None:
    """Replace ``path`` with ``data`` atomically and durably; the file gets ``mode`` from birth."""
    target = Path(path)
    tmp = _temp_name(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # not subject to the umask
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    try:
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync_dir:
        fsync_dir(target.parent)


def replace_symlink(link: str | os.PathLike[str], target: str, *, sync_dir: bool = True) -> None:
    """Point symlink ``link`` at ``target`` atomically (create a temporary link, rename it over)."""
    path = Path(link)
    tmp = _temp_name(path)
    tmp.symlink_to(target)
    try:
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync_dir:
        fsync_dir(path.parent)


def remove_durably(*paths: str | os.PathLike[str]) -> None:
    """Unlink files (missing ones are ignored) and fsync their directories."""
    dirs: set[Path] = set()
    for item in paths:
        p = Path(item)
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            dirs.add(p.parent)
    for d in dirs:
        with contextlib.suppress(OSError):
            fsync_dir(d)
