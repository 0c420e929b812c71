"""A registration that cannot complete locally leaves no consumer behind on the server.

Each test registers against a real ftmock (both kinds: CSR honoured, CSR ignored as by stock
Candlepin), then makes the local half fail after the server created the consumer: a bad answer, a
full disk, Ctrl-C.  The consumer is deleted again, or, when that is impossible, its UUID and the
command that removes it are printed.
"""

from __future__ import annotations

import errno
import re
from typing import Any

import pytest

import ftagent.identity
from ftagent.connection import Connection
from ftagent.errors import ConnectionFailed
from ftagent.identity import IdentityStore
from tests.conftest import ADMIN_PASSWORD
from tests.kit.guest import Guest
from tests.kit.orgs import make_pool


def _consumers(guest: Guest) -> list[dict[str, Any]]:
    r = guest.admin_api("GET", f"owners/{guest.org}/consumers")
    assert r.status_code == 200, r.text
    return list(r.json())


def _register(guest: Guest, *extra: str) -> Any:
    return guest.run("register", "--org", guest.org, "--username", "admin", "--password", ADMIN_PASSWORD, *extra)


def _break_answer(guest: Guest, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    real_post = Connection.post

    def post(self: Connection, path: str, **kw: Any) -> Any:
        answer = real_post(self, path, **kw)
        if path == "consumers" and isinstance(answer, dict):
            if how == "no certificate":
                answer["idCert"] = {"serial": answer["idCert"]["serial"]}
            else:  # a certificate for another key than the one that comes with it (or ours)
                other = real_post(self, path, params=kw["params"], json=dict(kw["json"], csr=None))
                answer["idCert"]["cert"] = other["idCert"]["cert"]
                # the second consumer is a test artefact: remove it as the admin
                assert guest.admin_api("DELETE", f"consumers/{other['uuid']}").status_code == 204
        return answer

    monkeypatch.setattr(Connection, "post", post)


@pytest.mark.parametrize("how", ["no certificate", "certificate for another key"])
def test_bad_answer_deletes_the_new_consumer(any_guest: Guest, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    _break_answer(any_guest, monkeypatch, how)
    res = _register(any_guest)
    assert res.exit_code == 1, res.output
    assert "key key" not in res.stderr and "certificate certificate" not in res.stderr
    assert re.search(r"deleted consumer [0-9a-f-]{36} on the server", res.stderr), res.stderr
    assert _consumers(any_guest) == []
    assert any_guest.run("identity").exit_code == 1


def test_full_disk_deletes_the_new_consumer(any_guest: Guest, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_a: Any, **_k: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ftagent.identity, "write_atomic", full)
    res = _register(any_guest)
    assert res.exit_code == 1, res.output
    assert "cannot store the identity" in res.stderr and "No space left on device" in res.stderr
    assert _consumers(any_guest) == []


def test_ctrl_c_after_the_server_answered_deletes_the_new_consumer(
    any_guest: Guest, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_a: Any, **_k: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(IdentityStore, "save", interrupted)
    res = _register(any_guest)
    assert res.exit_code == 130, res.output
    assert _consumers(any_guest) == []


def test_activation_key_registration_deletes_as_the_consumer(
    any_guest: Guest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No username: the consumer deletes itself with the certificate from the answer."""
    pool = make_pool(any_guest.server, any_guest.org)
    any_guest.server.admin("activation-key", "create", "--org", any_guest.org, "--name", "ak", "--pool", pool)

    def full(*_a: Any, **_k: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ftagent.identity, "write_atomic", full)
    res = any_guest.run("register", "--org", any_guest.org, "--activationkey", "ak")
    assert res.exit_code == 1, res.output
    assert _consumers(any_guest) == []
    # its entitlement went with it
    assert any_guest.admin_api("GET", f"pools/{pool}").json()["consumed"] == 0


def test_when_the_consumer_cannot_be_deleted_its_uuid_and_removal_command_are_printed(
    any_guest: Guest, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_a: Any, **_k: Any) -> None:
        raise KeyboardInterrupt

    def unreachable(self: Connection, path: str, **_k: Any) -> Any:
        raise ConnectionFailed("connection refused")

    monkeypatch.setattr(IdentityStore, "save", interrupted)
    monkeypatch.setattr(Connection, "delete", unreachable)
    res = _register(any_guest)
    assert res.exit_code == 130
    [left] = _consumers(any_guest)
    uuid = left["uuid"]
    assert f"created consumer {uuid}" in res.stderr
    command = f"curl --cacert {any_guest.server.ca_path} -u admin -X DELETE {any_guest.server.url}/consumers/{uuid}"
    assert command in res.stderr, res.stderr
