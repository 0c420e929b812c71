"""A guest agent environment in a temporary directory, configured against an ftmock server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import Result

from ftagent.cli import cli
from tests.clirunner import Runner
from tests.conftest import ADMIN_PASSWORD, FtmockServer

FTAGENT = str(Path(sys.executable).parent / "ftagent")


@dataclass
class Guest:
    root: Path
    server: FtmockServer
    org: str
    virt_uuid: str

    @property
    def honours_csr(self) -> bool:
        return "--no-csr" not in self.server.extra_args

    @property
    def expected_key_origin(self) -> str:
        """What `register` without --server-key reports: our CSR's key, or the server's."""
        return "local" if self.honours_csr else "server"

    @property
    def conf(self) -> Path:
        return self.root / "ftagent.conf"

    @property
    def id_dir(self) -> Path:
        return self.root / "id"

    @property
    def ent_dir(self) -> Path:
        return self.root / "ent"

    def run(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        return Runner().invoke(cli, ["--config", str(self.conf), *args], input=input, env=env)

    def ok(self, *args: str, **kw: Any) -> Any:
        res = self.run(*args, "--json", **kw)
        assert res.exit_code == 0, f"{args}: {res.exit_code} {res.output}"
        return json.loads(res.stdout)

    def register(self, *extra: str) -> dict[str, Any]:
        return self.ok("register", "--org", self.org, "--username", "admin", "--password", ADMIN_PASSWORD, *extra)

    def admin_api(self, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(method, f"{self.server.url}/{path}", auth=self.server.admin_auth,
                                verify=str(self.server.ca_path), timeout=30, **kw)

    def set_fact(self, key: str, value: str) -> None:
        path = self.root / "facts" / "test.facts"
        data = json.loads(path.read_text())
        data[key] = value
        path.write_text(json.dumps(data))


def make_guest(root: Path, server: FtmockServer, org: str, ca: Path | None = None) -> Guest:
    root.mkdir(parents=True, exist_ok=True)
    (root / "facts").mkdir()
    virt = str(uuidlib.uuid4()).upper()
    (root / "facts" / "test.facts").write_text(json.dumps({"virt.uuid": virt, "network.hostname": f"{root.name}.test"}))
    (root / "products").mkdir()
    (root / "products" / "os.json").write_text(json.dumps({"productId": "100", "productName": "OS"}))
    (root / "ftagent.conf").write_text(textwrap.dedent(f"""
        [server]
        url = {server.url}
        ca_cert = {ca or server.ca_path}
        timeout = 20
        [agent]
        identity_dir = id
        entitlement_dir = ent
        facts_dir = facts
        product_dir = products
        lock_file = ftagent.lock
        lock_timeout = 0.3
        """))
    return Guest(root, server, org, virt)


@pytest.fixture
def org(ftmock_session: FtmockServer) -> str:
    key = f"org-{uuidlib.uuid4().hex[:10]}"
    ftmock_session.admin("org", "create", key)
    return key


@pytest.fixture
def guest(tmp_path: Path, ftmock_session: FtmockServer, org: str) -> Guest:
    return make_guest(tmp_path / "guest", ftmock_session, org)


@pytest.fixture
def any_guest(tmp_path: Path, any_ftmock: FtmockServer) -> Guest:
    """A guest against each kind of server: CSR honoured (ftmock) and CSR ignored (stock Candlepin)."""
    key = f"org-{uuidlib.uuid4().hex[:10]}"
    any_ftmock.admin("org", "create", key)
    return make_guest(tmp_path / "guest", any_ftmock, key)


def make_pool(server: FtmockServer, org: str, pid: str = "100", quantity: int = 10, *attrs: str) -> str:
    try:
        server.admin("product", "create", "--org", org, "--id", pid, "--name", f"Product {pid}",
                     *[a for attr in attrs for a in ("--attribute", attr)])
    except subprocess.CalledProcessError:
        pass  # already exists in this org
    return str(json.loads(server.admin("pool", "create", "--org", org, "--product", pid, "--quantity", str(quantity)))["id"])
