"""Organisations and users on a test server: each test works in an org of its own.

The session's ftmock is shared by the whole run, so a test isolates itself by creating its own
organisation (``new_org``, or the ``org`` fixture), with users of that org in a role (``org_user``)
and pools of products (``make_pool``) where it needs them.

New orgs use the server's default content access mode, Simple Content Access (``SCA``); a test
that relies on content from attached pools asks for ``ENTITLEMENT``: ``new_org(server,
mode=ENTITLEMENT)``, or ``@pytest.mark.content_access("entitlement")`` for the ``org`` fixture.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest
import requests

from tests.kit.ftmock import FtmockServer

__all__ = ["ENTITLEMENT", "SCA", "make_pool", "new_org", "org", "org_mode", "org_user"]

ENTITLEMENT = "entitlement"
SCA = "org_environment"

_numbers = itertools.count()


def new_org(server: FtmockServer, prefix: str = "org", *, mode: str | None = None) -> str:
    """A new organisation on ``server`` (created by its admin), in content access ``mode``; its key."""
    key = f"{prefix}{next(_numbers)}-{uuid.uuid4().hex[:8]}"
    r = _admin(server, "POST", "/owners", json={"key": key, **({"contentAccessMode": mode} if mode else {})})
    assert r.status_code == 200, r.text
    return key


def org_user(server: FtmockServer, org: str, role: str = "admin") -> tuple[str, str]:
    """A user of ``org`` with ``role`` (``ftmock user create``, as an operator does); (name, password)."""
    name = f"{role}-{org}"
    password = f"pw-{name}"
    server.admin("user", "create", name, "--org", org, "--role", role, "--password", password)
    return name, password


def org_mode(request: pytest.FixtureRequest) -> str | None:
    """The content access mode a test asks for with ``@pytest.mark.content_access(MODE)``, if any."""
    marker = request.node.get_closest_marker("content_access")
    return str(marker.args[0]) if marker else None


@pytest.fixture
def org(ftmock_session: FtmockServer, request: pytest.FixtureRequest) -> str:
    """An organisation of the test's own on the session's server (see ``org_mode``)."""
    return new_org(ftmock_session, mode=org_mode(request))


def _admin(server: FtmockServer, method: str, path: str, **kw: Any) -> requests.Response:
    return requests.request(method, server.url + path, auth=server.admin_auth, verify=str(server.ca_path),
                            timeout=30, **kw)


def make_pool(server: FtmockServer, org: str, pid: str = "100", quantity: int = 10,
              attributes: dict[str, str] | None = None) -> str:
    """A pool of ``quantity`` of product ``pid`` in ``org``; its id.  The product is created (with
    ``attributes``) unless the org has it already, which is then left as it is."""
    r = _admin(server, "GET", f"/owners/{org}/products")
    assert r.status_code == 200, r.text
    if pid not in {p["id"] for p in r.json()}:
        r = _admin(server, "POST", f"/owners/{org}/products",
                   json={"id": pid, "name": f"Product {pid}", "attributes": attributes or {}})
        assert r.status_code == 200, r.text
    r = _admin(server, "POST", f"/owners/{org}/pools", json={"productId": pid, "quantity": quantity})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])
