"""A registration that cannot complete locally leaves no consumer behind on the server.

Each test registers against a real ftmock (both kinds: CSR honoured, CSR ignored as by stock
Candlepin), then makes the local half fail after the server created the consumer: a bad answer, a
full disk, Ctrl-C.  The consumer is deleted again, or, when that is impossible, its UUID and the
command that removes it are printed.  A consumer the registration did not create (an FT group's
primary, made by a hypervisor report) is never deleted.
"""

from __future__ import annotations

import errno
import re
import uuid as uuidlib
from typing import Any

import pytest

import ftagent.identity
from ftagent.connection import Connection
from ftagent.errors import ConnectionFailed
from ftagent.identity import IdentityStore
from tests.conftest import ADMIN_PASSWORD
from tests.ftmock.conftest import checkin, hypervisor
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


def _ft_group(guest: Guest) -> dict[str, str]:
    """A hypervisor report makes the guest's VM an FT group (primary and backup on two hosts); the
    consumer uuid of each instance by role."""
    a, b = str(uuidlib.uuid4()), str(uuidlib.uuid4())

    def instance(inst: str, role: int) -> dict[str, Any]:
        return {"guestId": guest.virt_uuid, "state": 1,
                "attributes": {"instanceUUID": inst, "ftinfo.role": str(role), "ftinfo.instanceUUIDs": [a, b]}}

    assert guest.server is not None
    hosts = [f"esx-{n}-{uuidlib.uuid4().hex[:6]}" for n in "ab"]
    job = checkin(guest.server, guest.org, {"hypervisors": [hypervisor(hosts[0], [instance(a, 0)]),
                                                            hypervisor(hosts[1], [instance(b, 1)])]})
    assert job["state"] == "FINISHED", job
    roles = {c["facts"].get("instanceUUID"): c["uuid"] for c in _consumers(guest)}
    return {"primary": roles[a], "backup": roles[b]}


def test_an_ft_groups_primary_is_left_in_place_saying_what_to_do(
    any_guest: Guest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server answers an FT VM's registration with its group's role-0 consumer, which a report made
    before: deleting it would end the whole group. A failed local install leaves it and says how to finish."""
    group = _ft_group(any_guest)

    def full(*_a: Any, **_k: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(ftagent.identity, "write_atomic", full)
        res = _register(any_guest)
    assert res.exit_code == 1, res.output
    assert f"returned consumer {group['primary']}, the primary of the FT group" in res.stderr, res.stderr
    assert "it is left in place" in res.stderr and "deleted consumer" not in res.stderr
    command = f"ftagent register --force --org {any_guest.org} --username ADMIN"
    assert command in res.stderr
    # The group is whole: both instances, the primary still the group's, no tombstone.
    for uuid in group.values():
        assert any_guest.admin_api("GET", f"consumers/{uuid}").status_code == 200
    # Done as told, the registration completes, as the group's primary.
    res = any_guest.run("register", "--org", any_guest.org, "--username", "admin", "--password", ADMIN_PASSWORD,
                        "--force")
    assert res.exit_code == 0, res.output
    assert IdentityStore(any_guest.id_dir).load().uuid == group["primary"]
