"""The one atomic-write function of the three packages: mode from birth, owner, first writer wins,
and a failed write that leaves the old content whole."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from ftagent.atomic import write_atomic


def test_replaces_whole_with_mode_regardless_of_umask(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    target.write_bytes(b"old")
    old_umask = os.umask(0o077)
    try:
        assert write_atomic(target, b"new", mode=0o644)
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]  # no temporary file left


def test_exclusive_keeps_the_first_writers_file(tmp_path: Path) -> None:
    target = tmp_path / "holder"
    assert write_atomic(target, b"first\n", exclusive=True)
    assert not write_atomic(target, b"second\n", exclusive=True)
    assert target.read_bytes() == b"first\n"
    assert [p.name for p in tmp_path.iterdir()] == ["holder"]


def test_failed_write_leaves_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "cert.pem"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes", mode=0o644)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["cert.pem"]


def test_owner_is_set_before_the_file_has_its_name(tmp_path: Path) -> None:
    # Giving a file to another account needs root (CI runs as root); otherwise our own ids.
    nobody = pwd.getpwnam("nobody")
    owner = (nobody.pw_uid, nobody.pw_gid) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    target = tmp_path / "ftagent.conf"
    write_atomic(target, b"[server]\n", mode=0o640, owner=owner)
    st = target.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (*owner, 0o640)
