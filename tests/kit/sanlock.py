"""Real sanlock daemons for the lease tests: two simulated hosts sharing one lease file on local disk.

Each :class:`SanlockDaemon` is ``sanlock daemon -D -w 0 -l 0`` (no watchdog, no mlock) with
``SANLOCK_PRIVILEGED=0`` (a container cannot raise the memlock limit) and its own short
``SANLOCK_RUN_DIR`` (unix socket paths are short), so two of them play two hosts.

Debian's ``python3-sanlock`` is compiled for Debian's ``python3`` (bookworm: CPython 3.11); a venv
on another minor version cannot load it.  :func:`require_binding` fails when the binding should load
here and does not, and skips, saying why, only on an interpreter the binding was not built for.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kit.guest import clone_guest
from tests.kit.lease import boottime, holding, lease_guest
from tests.kit.wait import hold_for, wait_until

DEBIAN_BINDINGS = "/usr/lib/python3/dist-packages/sanlock.cpython-*.so"


def binding_version() -> tuple[int, int] | None:
    """The CPython version Debian's ``sanlock`` module is compiled for (``None``: not installed)."""
    for path in glob.glob(DEBIAN_BINDINGS):
        m = re.search(r"cpython-(\d)(\d+)-", path)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


def require_binding() -> Any:
    """``import sanlock`` for the tests: fail if it should load here, skip (loudly) on another ABI."""
    version = binding_version()
    if version is None:
        pytest.fail("Debian's python3-sanlock is not installed: run scripts/install-deps.sh all")
    if shutil.which("sanlock") is None:
        pytest.fail("the sanlock daemon is not installed (Debian package sanlock): run scripts/install-deps.sh all")
    if sys.version_info[:2] != version:
        pytest.skip(f"SANLOCK TESTS NOT RUN ON THIS LEG: Debian's python3-sanlock is compiled for CPython "
                    f"{version[0]}.{version[1]}, this is {sys.version_info[0]}.{sys.version_info[1]}; they run on "
                    f"the {version[0]}.{version[1]} venv", allow_module_level=True)
    try:
        import sanlock  # type: ignore[import-not-found]
    except ImportError as exc:
        pytest.fail(f"python3-sanlock does not import in this venv ({exc}): run scripts/sanlock-binding.sh")
    return sanlock


class SanlockDaemon:
    """One simulated host's sanlock daemon (started by :meth:`start`, killed by :meth:`stop`)."""

    def __init__(self, name: str, log: Path) -> None:
        self.name = name
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"sl{name}", dir="/tmp"))
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {"SANLOCK_RUN_DIR": str(self.run_dir), "SANLOCK_PRIVILEGED": "0"}

    def start(self, timeout: float = 10) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ["sanlock", "daemon", "-D", "-w", "0", "-l", "0", "-U", str(os.getuid()), "-G", str(os.getgid())],
                stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, **self.env))
        sock = self.run_dir / "sanlock.sock"
        wait_until(lambda: sock.exists() or self.proc is None or self.proc.poll() is not None, timeout, "sanlock socket")
        if not sock.exists():
            raise AssertionError(f"sanlock daemon {self.name} did not start: {self.log.read_text()[-2000:]}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def client(self, *args: str, timeout: float = 10) -> str:
        """``sanlock client ARGS`` against this daemon; its output."""
        done = subprocess.run(["sanlock", "client", *args], capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, **self.env))
        return done.stdout + done.stderr

    def held_resources(self) -> list[str]:
        """``r ...`` lines of ``sanlock client status``: resources this daemon holds for a process."""
        return [line for line in self.client("status").splitlines() if line.startswith("r ")]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)
        # The daemon's helper child may outlive it for a moment; it exits on its own.
        shutil.rmtree(self.run_dir, ignore_errors=True)


def read_leader(path: Path, lockspace: str, resource: str) -> dict[str, str]:
    """``sanlock direct read_leader -r`` of the group's resource: sanlock's own view of its owner."""
    from ftagent.lease.backends.sanlock import RESOURCE_OFFSET

    done = subprocess.run(["sanlock", "direct", "read_leader", "-r", f"{lockspace}:{resource}:{path}:{RESOURCE_OFFSET}"],
                          capture_output=True, text=True, timeout=30)
    out = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        out[key] = value.strip()
    return out


class SanlockSite:
    """Two hosts (daemons ``a`` and ``b``) sharing one lease file, with one agent each."""

    def __init__(self, server: Any, root: Path, org: str, vm: str, io_timeout: int = 1, **lease: str) -> None:
        self.root = root
        self.lease_file = root / "ftgroup.lease"
        self.vm = vm
        self.daemons = {name: SanlockDaemon(name, root / f"sanlock-{name}.log") for name in ("a", "b")}
        settings = {"backend": "sanlock", "sanlock_path": str(self.lease_file), "sanlock_io_timeout": str(io_timeout),
                    "renew_interval": "1", "margin": "5", "fence_timeout": "1", "ttl": ""}
        settings.update(lease)
        a = lease_guest(server, root / "a", org, vm, sanlock_host_id="1", **settings)
        b = clone_guest(a, root / "b", sanlock_host_id="2")
        self.guests = {"a": a, "b": b}
        for guest in self.guests.values():
            # Calls into a frozen daemon time out after 1 s (the [server] timeout bounds every lease call).
            guest.configure("server", timeout=1)
        self.violations: list[str] = []

    def start_daemons(self) -> None:
        for daemon in self.daemons.values():
            daemon.start()

    def ftagent(self, host: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.guests[host].ftagent(*args, env=self.daemons[host].env, timeout=timeout)

    def init(self) -> None:
        done = self.ftagent("a", "sanlock-init", "--json")
        assert done.returncode == 0, done.stderr

    def start(self, host: str) -> subprocess.Popen[bytes]:
        return self.guests[host].start(env=self.daemons[host].env)

    def holders(self) -> list[str]:
        """Hosts whose agent may act as the holder now, by their status files; records overlaps."""
        now = boottime()
        out = [name for name, guest in self.guests.items() if holding(guest, now)]
        if len(out) > 1:
            self.violations.append(f"two holders by their status files at {now:.2f}: {out}")
        return out

    def leader(self) -> dict[str, str]:
        return read_leader(self.lease_file, "ftagent", self.vm)

    def check(self) -> list[str]:
        """One sample of "no two holders": by the status files, and sanlock's on-disk owner agrees."""
        holders = self.holders()
        if holders:
            owner = self.leader().get("owner_id")
            expected = str(self.guests[holders[0]].lease["sanlock_host_id"])
            if owner != expected:
                self.violations.append(f"{holders[0]} says it holds the lease, sanlock's owner is host id {owner}")
        return holders

    def watch(self, seconds: float, step: float = 0.2) -> Iterator[list[str]]:
        """The holders, sampled (with :meth:`check`) every ``step`` during ``seconds``."""
        for _ in hold_for(seconds, step=step):
            yield self.check()

    def close(self) -> None:
        for guest in self.guests.values():
            guest.kill_all()
        for daemon in self.daemons.values():
            daemon.stop()
