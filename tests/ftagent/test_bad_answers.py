"""Issue 10, item 5: bad answers and bad local files change nothing and end with a clear error.

Through the installed ``ftagent`` command, against ftmock over mutual TLS and a hostile server on
loopback: a serial list with a malformed entry deletes no certificate, a failover answer nested
deeper than a JSON parser goes is an error (not an internal error), a corrupt lease holder file is
a configuration error, and crash leftovers are removed at the next command.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import FtmockServer
from tests.ftagent.hostile import hostile_server
from tests.kit.guest import Guest, cli_guest
from tests.kit.lease import lease_guest
from tests.kit.orgs import make_pool


def no_crash(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 70, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr.lower(), result.stderr


@pytest.fixture
def entitled(tmp_path: Path, ftmock_session: FtmockServer, org: str) -> Guest:
    guest = cli_guest(tmp_path / "guest", ftmock_session, org)
    make_pool(ftmock_session, org, "100")
    guest.register()
    guest.ok("attach", "--auto")
    assert list(guest.ent_dir.glob("*-key.pem")), "no entitlement to protect"
    return guest


def unavailable(guest: Guest, server: FtmockServer, mode: str, *commands: str) -> tuple[list[str], bool]:
    """Each command against the hostile server in ``mode`` ends with exit 69, without a crash;
    (their error output, whether the server was reached)."""
    errors = []
    with hostile_server(server.data_dir, mode) as (url, served):
        guest.configure("server", url=url)
        for command in commands:
            result = guest.ftagent(command)
            no_crash(result)
            assert result.returncode == 69, result.stderr
            errors.append(result.stderr)
    return errors, bool(served)


def test_malformed_serial_list_deletes_nothing(entitled: Guest, ftmock_session: FtmockServer) -> None:
    before = sorted(p.name for p in entitled.ent_dir.iterdir())
    errors, served = unavailable(entitled, ftmock_session, "bad-serials", "refresh", "checkin")
    assert served
    assert all("malformed" in stderr for stderr in errors), errors
    assert sorted(p.name for p in entitled.ent_dir.iterdir()) == before


def test_deeply_nested_failover_answer_is_a_clear_error(entitled: Guest, ftmock_session: FtmockServer) -> None:
    identity_before = (entitled.id_dir / "cert.pem").read_bytes()
    unavailable(entitled, ftmock_session, "deep-308", "checkin", "refresh")
    assert (entitled.id_dir / "cert.pem").read_bytes() == identity_before


@pytest.mark.parametrize("content", [b"x" * 10240, b"holder\x00evil", b"\xff\xfe\xfd", b"line\nbreak\x07"])
def test_corrupt_holder_file_is_a_config_error(tmp_path: Path, ftmock_session: FtmockServer, org: str,
                                               content: bytes) -> None:
    guest = lease_guest(ftmock_session, tmp_path / "lease-guest", org, str(uuid.uuid4()))
    holder = guest.root / "lease.holder"
    holder.write_bytes(content)
    result = guest.ftagent("heartbeat", "--once")
    no_crash(result)
    assert result.returncode == 78, (result.returncode, result.stderr)
    assert "holder file" in result.stderr and "corrupt" in result.stderr
    assert holder.read_bytes() == content  # reported, not used or rewritten
    status = guest.ftagent("status", "--json")
    no_crash(status)
    assert status.returncode == 3, status.stderr  # readable, and the lease is not held
    assert json.loads(status.stdout)["lease"]["holder_fingerprint"] is None


def test_crash_leftovers_are_removed_at_the_next_command(entitled: Guest) -> None:
    old = time.time() - 3600
    ent_tmp = entitled.ent_dir / ".5-key.pem.tmp-0123456789ab"
    ent_tmp.write_text("-----BEGIN PRIVATE KEY-----\nleftover\n")
    id_tmp = entitled.id_dir / ".checkin.json.tmp-abcdef012345"
    id_tmp.write_text("{}")
    dead_gen = entitled.id_dir / ".gen-1-deadbeef"
    dead_gen.mkdir()
    fresh_gen = entitled.id_dir / ".gen-2-cafecafe"  # maybe a heartbeat's swap in flight: kept
    fresh_gen.mkdir()
    for path in (ent_tmp, id_tmp, dead_gen):
        os.utime(path, (old, old))
    current = os.readlink(entitled.id_dir / ".current")
    result = entitled.ftagent("checkin")
    assert result.returncode == 0, result.stderr
    assert not ent_tmp.exists() and not id_tmp.exists() and not dead_gen.exists()
    assert fresh_gen.exists()
    assert os.readlink(entitled.id_dir / ".current") == current
    assert (entitled.id_dir / current).is_dir()
    assert entitled.ok("identity")["uuid"]
