"""The one test guest: an ftagent installation in a directory, and the ways to run ftagent on it.

``make_guest`` lays out what a guest has (a configuration file, facts that give its ``virt.uuid``,
an installed product, the directories the agent writes) and returns a :class:`Guest`.  The guest
runs ftagent three ways, each for what it tests:

- ``run``/``ok``: the click command in this process (fast; what most CLI tests need);
- ``ftagent``/``json``: the installed ``ftagent`` command, as a user or a unit file runs it;
- ``start``: ``ftagent heartbeat`` as a daemon process, read back through ``status``/``state``/``fences``.

The configuration is kept as sections of keys: ``configure`` and ``write_config`` change keys and
rewrite the file, so a test says which setting it changes instead of editing text.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid as uuidlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import Result

from tests.clirunner import Runner
from tests.kit.ftmock import ADMIN_PASSWORD, ADMIN_USER, FtmockServer
from tests.kit.orgs import new_org, org_mode

__all__ = ["FTAGENT", "Guest", "any_guest", "cli_guest", "clone_guest", "copy_identity", "guest", "guests", "make_guest",
           "marker_command", "send_signal"]

FTAGENT = str(Path(sys.executable).parent / "ftagent")
SRC = Path(__file__).resolve().parents[2] / "src"
#: What a guest has installed when a test does not say: the product ftmock's test pools cover.
PRODUCT = ("100", "OS")


@dataclass
class Guest:
    """One agent installation under ``root``, configured for ``server`` (or a URL of its own)."""

    root: Path
    server: FtmockServer | None
    org: str
    virt_uuid: str
    settings: dict[str, dict[str, str]]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # -- files ------------------------------------------------------------------------------------

    @property
    def conf(self) -> Path:
        return self.root / "ftagent.conf"

    @property
    def id_dir(self) -> Path:
        return self.root / "identity"

    @property
    def ent_dir(self) -> Path:
        return self.root / "entitlements"

    @property
    def facts_file(self) -> Path:
        return self.root / "facts" / "guest.facts"

    @property
    def status_file(self) -> Path:
        return self.root / "lease.json"

    @property
    def marker(self) -> Path:
        """The file the test fence command appends ``TIME REASON`` lines to."""
        return self.root / "fenced.txt"

    @property
    def log(self) -> Path:
        return self.root / "heartbeat.log"

    @property
    def repo_file(self) -> Path:
        """The repository file ftagent writes (``[content] repo_file``)."""
        return self.root / "yum.repos.d" / "redhat.repo"

    # -- configuration ----------------------------------------------------------------------------

    @property
    def lease(self) -> dict[str, str]:
        """The ``[lease]`` section (empty: the guest has none)."""
        return self.settings.setdefault("lease", {})

    @lease.setter
    def lease(self, values: Mapping[str, str]) -> None:
        self.settings["lease"] = dict(values)

    def configure(self, section: str, **values: object) -> None:
        """Set keys of ``section`` (``None`` removes a key) and rewrite the file."""
        keys = self.settings.setdefault(section, {})
        for key, value in values.items():
            if value is None:
                keys.pop(key, None)
            else:
                keys[key] = str(value)
        self.write_config()

    def write_config(self, **lease: str) -> None:
        """Rewrite the configuration file, with ``lease`` keys set in ``[lease]`` first."""
        if lease:
            self.lease.update(lease)
        lines: list[str] = []
        for name, keys in self.settings.items():
            if keys or name != "lease":
                lines += [f"[{name}]", *(f"{k} = {v}" for k, v in keys.items()), ""]
        self.conf.write_text("\n".join(lines))

    def set_fact(self, key: str, value: str) -> None:
        data = json.loads(self.facts_file.read_text())
        data[key] = value
        self.facts_file.write_text(json.dumps(data))

    # -- running ftagent --------------------------------------------------------------------------

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of an ftagent process: this tree's sources, unbuffered, no systemd."""
        env = dict(os.environ, PYTHONPATH=str(SRC), PYTHONUNBUFFERED="1")
        env.pop("NOTIFY_SOCKET", None)
        env.update(extra or {})
        return env

    def run(self, *args: str, input: str | None = None, env: Mapping[str, str] | None = None) -> Result:
        """``ftagent --config CONF ARGS`` in this process (click's runner)."""
        return Runner().invoke(_cli(), ["--config", str(self.conf), *args], input=input, env=env)

    def ok(self, *args: str, **kw: Any) -> Any:
        """The JSON answer of ``run(*args, "--json")``, which must succeed."""
        res = self.run(*args, "--json", **kw)
        assert res.exit_code == 0, f"{args}: {res.exit_code} {res.output}"
        return json.loads(res.stdout)

    def ftagent(self, *args: str, env: Mapping[str, str] | None = None, check: bool = False,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The installed ``ftagent --config CONF ARGS``; with ``check``, it must succeed."""
        proc = subprocess.run([FTAGENT, "--config", str(self.conf), *args], capture_output=True, text=True,
                              timeout=timeout, env=self.env(env))
        if check and proc.returncode != 0:
            raise AssertionError(f"ftagent {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> Any:
        """The JSON answer of the installed command with ``--json``, which must succeed."""
        return json.loads(self.ftagent(*args, "--json", check=True).stdout)

    def start(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """``ftagent -v heartbeat ARGS`` as a daemon process, its output in ``log``."""
        with open(self.log, "ab") as log:
            proc = subprocess.Popen([FTAGENT, "--config", str(self.conf), "-v", "heartbeat", *args], stdout=log,
                                    stderr=subprocess.STDOUT, env=self.env(env))
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
        """SIGTERM (after SIGCONT, should it be stopped); its exit code."""
        if proc.poll() is None:
            send_signal(proc, signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                send_signal(proc, signal.SIGCONT)
                proc.kill()
                proc.wait()

    # -- talking to the server --------------------------------------------------------------------

    def register(self, *extra: str) -> dict[str, Any]:
        """``ftagent register`` in the guest's org as the server's admin; its JSON answer."""
        return dict(self.ok("register", "--org", self.org, "--username", ADMIN_USER, "--password", ADMIN_PASSWORD,
                            *extra))

    def admin_api(self, method: str, path: str, **kw: Any) -> requests.Response:
        """A call to the server's API as its admin (``path`` below ``/candlepin/``)."""
        assert self.server is not None
        return requests.request(method, f"{self.server.url}/{path}", auth=self.server.admin_auth,
                                verify=str(self.server.ca_path), timeout=30, **kw)

    @property
    def honours_csr(self) -> bool:
        return self.server is not None and "--no-csr" not in self.server.extra_args

    @property
    def expected_key_origin(self) -> str:
        """What `register` without --server-key reports: our CSR's key, or the server's."""
        return "local" if self.honours_csr else "server"

    # -- what the agent wrote ---------------------------------------------------------------------

    def uuid(self) -> str:
        from ftagent.identity import IdentityStore

        return IdentityStore(self.id_dir).load().uuid

    def identity_files(self) -> tuple[Path, Path]:
        return self.id_dir / "cert.pem", self.id_dir / "key.pem"

    def entitlement_serials(self) -> set[int]:
        return {int(p.name.split(".")[0]) for p in self.ent_dir.glob("*.pem") if not p.name.endswith("-key.pem")}

    def status(self) -> dict[str, Any]:
        """The heartbeat's status file (empty before the first write or while it is replaced)."""
        try:
            return dict(json.loads(self.status_file.read_text()))
        except (OSError, ValueError):
            return {}

    def state(self) -> str | None:
        return self.status().get("state")

    def fences(self) -> list[tuple[float, str]]:
        """(wall time, reason) of every run of the test fence command."""
        if not self.marker.exists():
            return []
        out = []
        for line in self.marker.read_text().splitlines():
            when, _, reason = line.partition(" ")
            out.append((float(when), reason))
        return out


def _cli() -> Any:
    from ftagent.cli import cli

    return cli


def send_signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    """``kill -SIG``; a process already gone is no error."""
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


def marker_command(marker: Path) -> str:
    """A fence command that appends ``TIME REASON`` to ``marker`` (see :meth:`Guest.fences`)."""
    return f"sh -c 'echo \"$(date +%s.%N) $1\" >> {marker}' fence"


#: The lease of a test guest when it has one: short timings, a status file and the marker fence.
LEASE_DEFAULTS = {"renew_interval": "0.5", "ttl": "3", "margin": "1", "fence_timeout": "0.5",
                  "status_file": "lease.json"}


def make_guest(root: Path, server: FtmockServer | None, org: str = "", *, virt_uuid: str | None = None,
               facts: Mapping[str, str] | None = None, product: tuple[str, str] | None = PRODUCT,
               url: str | None = None, ca: Path | None = None, timeout: float = 20,
               server_options: Mapping[str, object] | None = None, agent_options: Mapping[str, object] | None = None,
               lease: Mapping[str, str] | None = None, register: bool = False) -> Guest:
    """A guest under ``root`` for ``server`` (or ``url`` and ``ca``), in ``org``.

    ``virt_uuid`` defaults to a new one; ``facts`` are added to ``virt.uuid``, ``virt.is_guest`` and a
    hostname.  ``lease`` gives the guest a ``[lease]`` section over :data:`LEASE_DEFAULTS` (the fence
    command records into ``marker``).  ``register`` registers it at once through the library, as an
    installer would, for tests about what comes after registration."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "facts").mkdir(exist_ok=True)
    (root / "products").mkdir(exist_ok=True)
    virt = virt_uuid or str(uuidlib.uuid4()).upper()
    guest_facts = {"virt.uuid": virt, "virt.is_guest": "true", "network.hostname": f"{root.name}.test"}
    guest_facts.update(facts or {})
    if product is not None:
        (root / "products" / f"{product[0]}.json").write_text(
            json.dumps({"productId": product[0], "productName": product[1]}))
    if server is not None:
        url = url or server.url
        ca = ca or server.ca_path
    settings: dict[str, dict[str, str]] = {
        "server": {"url": str(url), "ca_cert": str(ca), "timeout": f"{timeout:g}"},
        "agent": {"identity_dir": "identity", "entitlement_dir": "entitlements", "facts_dir": "facts",
                  "product_dir": "products", "lock_file": "ftagent.lock"},
        # The repository file in the guest's tree: a test never writes /etc/yum.repos.d.
        "content": {"repo_file": "yum.repos.d/redhat.repo"},
    }
    settings["server"].update({k: str(v) for k, v in (server_options or {}).items()})
    settings["agent"].update({k: str(v) for k, v in (agent_options or {}).items()})
    if lease is not None:
        settings["lease"] = {**LEASE_DEFAULTS, "fence_command": marker_command(root / "fenced.txt"), **lease}
    (root / "yum.repos.d").mkdir(exist_ok=True)
    guest = Guest(root, server, org, virt, settings)
    guest.facts_file.write_text(json.dumps(guest_facts))
    guest.write_config()
    if register:
        _register_with_library(guest)
    return guest


def _register_with_library(guest: Guest) -> None:
    from ftagent.agent import Agent
    from ftagent.config import load_config

    assert guest.server is not None
    with Agent(load_config(guest.conf)) as agent:
        agent.register(guest.org, username=guest.server.admin_auth[0], password=guest.server.admin_auth[1],
                       name=guest.root.name)


def copy_identity(src: Guest, dst: Guest) -> None:
    """Give ``dst`` the identity and entitlements of ``src`` (FT instances share their disk)."""
    for directory in ("identity", "entitlements"):
        shutil.rmtree(dst.root / directory, ignore_errors=True)
        if (src.root / directory).exists():
            shutil.copytree(src.root / directory, dst.root / directory, symlinks=True)


def clone_guest(guest: Guest, root: Path, *, share_holder: bool = False, **lease: str) -> Guest:
    """Another instance of the same guest (same identity and facts), its own status and marker.

    ``share_holder`` copies the lease holder id too, as the two instances of one FT VM share memory
    and disk; ``lease`` keys override the original's."""
    settings = {name: dict(keys) for name, keys in guest.settings.items()}
    if "fence_command" in guest.lease:
        settings["lease"]["fence_command"] = marker_command(root / "fenced.txt")
    settings.setdefault("lease", {}).update(lease)
    root.mkdir(parents=True, exist_ok=True)
    (root / "yum.repos.d").mkdir(exist_ok=True)
    shutil.copytree(guest.root / "facts", root / "facts", dirs_exist_ok=True)
    shutil.copytree(guest.root / "products", root / "products", dirs_exist_ok=True)
    clone = Guest(root, guest.server, guest.org, guest.virt_uuid, settings)
    clone.write_config()
    copy_identity(guest, clone)
    if share_holder:
        shutil.copy(guest.root / "lease.holder", root / "lease.holder")
    return clone


@pytest.fixture
def guests() -> Iterator[list[Guest]]:
    """Guests a test starts heartbeats in; their processes are killed when it ends, whatever happened."""
    made: list[Guest] = []
    yield made
    for g in made:
        g.kill_all()


def cli_guest(root: Path, server: FtmockServer, org: str, ca: Path | None = None) -> Guest:
    """An unregistered guest for CLI tests: a command that finds the agent lock taken gives up
    after 0.3 s instead of the default minute."""
    return make_guest(root, server, org, ca=ca, agent_options={"lock_timeout": 0.3})


@pytest.fixture
def guest(tmp_path: Path, ftmock_session: FtmockServer, org: str) -> Guest:
    """An unregistered guest of its own org on the session's server."""
    return cli_guest(tmp_path / "guest", ftmock_session, org)


@pytest.fixture
def any_guest(tmp_path: Path, any_ftmock: FtmockServer, request: pytest.FixtureRequest) -> Guest:
    """A guest against each kind of server: CSR honoured (ftmock) and CSR ignored (stock Candlepin);
    its org's content access mode as the test's ``content_access`` mark says (see ``org_mode``)."""
    return cli_guest(tmp_path / "guest", any_ftmock, new_org(any_ftmock, mode=org_mode(request)))
