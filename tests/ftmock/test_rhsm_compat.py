"""The classic client library (python-rhsm 1.19.2) works against ftmock unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FtmockServer


@pytest.mark.content_access("entitlement")  # a new consumer of this org holds no certificate at all
def test_python_rhsm_registers_and_reads_back_with_identity(server: FtmockServer, org: str, tmp_path: Path,
                                                            rhsm_common: dict[str, Any]) -> None:
    import rhsm.connection as rc

    common = rhsm_common

    admin = rc.UEPConnection(username="admin", password=server.admin_password, **common)
    assert admin.ping()["result"] is True
    consumer = admin.registerConsumer(name="rhsm-client", type="system",
                                      facts={"virt.uuid": "5c4b3a29-1111-2222-3333-444455556666"}, owner=org)
    assert consumer["owner"]["key"] == org
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_text(consumer["idCert"]["cert"])
    key_file.write_text(consumer["idCert"]["key"])

    identity = rc.UEPConnection(cert_file=str(cert_file), key_file=str(key_file), **common)
    back = identity.getConsumer(consumer["uuid"])
    assert back["uuid"] == consumer["uuid"]
    assert back["name"] == "rhsm-client"
    assert back["facts"]["virt.uuid"] == "5c4b3a29-1111-2222-3333-444455556666"
    assert identity.getCertificateSerials(consumer["uuid"]) == []

    # Wrong password: python-rhsm reports the server's 401 and its message.
    bad = rc.UEPConnection(username="admin", password="wrong", **common)
    try:
        bad.getOwnerList("admin")
    except rc.RestlibException as exc:
        assert exc.code == 401
        assert "Invalid Credentials" in str(exc)
    else:
        raise AssertionError("a wrong password was accepted")
