"""Atomic, durable file writes: the one way ftagent, ftreport and ftmock put a file on disk.

:func:`write_atomic` writes to a temporary name in the same directory, fsyncs it, renames it over the
target with ``os.replace`` (or links it into place, ``exclusive``: the first writer wins) and fsyncs
the directory, so that after a crash the target holds either the old or the new content, never a
torn mix.  The file has its mode (and, when asked, its owner) from before it gets its name.  Only the
standard library is used here: ftmock imports this module, and of the rest of ftagent only
:mod:`ftagent.cliexit` (with the two small modules it needs) for its command line; no protocol code.
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
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int = 0o644,
    owner: tuple[int, int] | None = None,
    sync_dir: bool = True,
    durable: bool = True,
    exclusive: bool = False,
) -> bool:
    """Replace ``path`` with ``data`` atomically; the file gets ``mode`` (and ``owner``) from birth.

    ``owner`` is a ``(uid, gid)`` pair given to the file before it is renamed into place (changing it
    to anyone else needs root).  ``durable`` fsyncs the file and, unless ``sync_dir`` is false (a
    caller writing several files fsyncs the directory once), its directory; ``durable=False`` still
    replaces atomically but leaves the flush to the kernel (a status file rewritten every second).
    ``exclusive`` creates the file only if it does not exist yet: returns ``False``, writing
    nothing, when another writer was first.  Returns ``True`` once the file is in place.
    """
    target = Path(path)
    tmp = _temp_name(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # not subject to the umask
        if owner is not None:
            os.fchown(fd, owner[0], owner[1])
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    try:
        if exclusive:
            try:
                os.link(tmp, target)  # fails if the target exists: the first writer wins
            except FileExistsError:
                return False
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        else:
            tmp.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable and sync_dir:
        fsync_dir(target.parent)
    return True


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
