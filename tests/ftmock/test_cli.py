"""ftmock's command line as a user meets it: exit codes (ftmock.cli.exit_code_for), one-line errors,
``--version``, and a failed start that leaves the data directory as it was."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from ftmock import __version__


def ftmock(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTMOCK_")}
    return subprocess.run([sys.executable, "-m", "ftmock", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=60)


def test_serve_on_a_port_in_use_exits_69_before_writing_anything(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = ftmock("serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data))
    assert out.returncode == 69
    assert out.stderr.splitlines() == [f"ftmock: error: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert not data.exists()  # no CA, no database, no directory: a later start is a first start


def test_admin_command_without_a_database_names_the_directory_it_looked_in(tmp_path: Path) -> None:
    out = ftmock("org", "create", "acme", cwd=tmp_path)
    assert out.returncode == 78
    assert out.stderr.splitlines() == [f"ftmock: error: no ftmock database in {tmp_path.resolve() / 'ftmock-data'} "
                                       "(--data-dir, FTMOCK_DATA_DIR); run 'ftmock serve' there first"]


def test_usage_errors_exit_64(tmp_path: Path) -> None:
    out = ftmock("--no-such-option")
    assert out.returncode == 64 and "no such option" in out.stderr.lower()  # click 7 writes it lower-case
    out = ftmock("serve", "--listen", "nonsense", "--data-dir", str(tmp_path / "d"))
    assert out.returncode == 64 and "expected HOST:PORT" in out.stderr
    assert not (tmp_path / "d").exists()


def test_version() -> None:
    out = ftmock("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"ftmock, version {__version__}"
