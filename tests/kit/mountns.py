"""A RHEL host's own paths, for real: a private mount namespace with a tmpfs over each of ``/etc/pki``,
``/etc/rhsm``, ``/etc/yum.repos.d`` and ``/run/rhsm``.

A claim about those files (what ftagent's ``rhsm`` layout writes, what python-rhsm and dnf read there,
what ftreport falls back on) is tested at those paths, with no ``FTAGENT_ROOT``/``FTREPORT_ROOT``
prefix: :func:`rhel_namespace` starts a holder process with ``unshare --mount --propagation private``
(so that nothing mounted inside reaches the machine) that mounts the four tmpfs, copies a seed tree
into them (``rhsm.conf`` and its CA, written by the test under ``seed/etc/rhsm/``...) and then waits on
its standard input; :meth:`MountNamespace.run` runs a command in that namespace (``nsenter``), as one
more process of the host. The namespace, and everything written in it, is gone once the holder ends
(:meth:`MountNamespace.close`, or the test process's death closing the holder's input).

Where one of the four directories does not exist (Debian has none of them), its parent (``/etc``,
``/run``) is covered inside the namespace by an overlay whose upper layer is a tmpfs, so that the
mount point is made there and not on the machine. The mounts need root, which CI has: without it the
test fails saying so, never skips.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pytest

__all__ = ["MOUNTS", "MountNamespace", "require_root", "rhel_namespace"]

#: The directories each namespace has a tmpfs of its own over.
MOUNTS = ("/etc/pki", "/etc/rhsm", "/etc/yum.repos.d", "/run/rhsm")
#: What would move a program's system paths under a prefix: never set inside the namespace.
ROOT_VARIABLES = ("FTAGENT_ROOT", "FTREPORT_ROOT")

# $1: a directory of the test's for the namespace's own tmpfs (the overlays' layers); $2: the seed;
# then the directories to mount.
_SETUP = """
set -e
stage=$1
seed=$2
shift 2
mount -t tmpfs -o mode=0700 ftns-stage "$stage"
for d in "$@"; do
    if [ ! -d "$d" ]; then
        parent=$(dirname "$d")
        layers="$stage/overlay$parent"
        if [ ! -d "$layers" ]; then
            mkdir -p "$layers/upper" "$layers/work"
            mount -t overlay ftns-overlay -o "lowerdir=$parent,upperdir=$layers/upper,workdir=$layers/work" "$parent"
        fi
        mkdir "$d"
    fi
    mount -t tmpfs -o mode=0755 ftns "$d"
    if [ -d "$seed$d" ]; then
        cp -a "$seed$d/." "$d/"
    fi
done
echo ready
exec cat >/dev/null
"""


def require_root() -> None:
    """Fail (never skip) a test that needs root for its mount namespace when it runs without."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root (as CI runs the suite): it mounts tmpfs over /etc/pki, /etc/rhsm, "
                    "/etc/yum.repos.d and /run/rhsm in a private mount namespace (unshare --mount)", pytrace=False)


class MountNamespace:
    """A private mount namespace, alive while its holder process is."""

    def __init__(self, holder: subprocess.Popen[str], work: Path) -> None:
        self._holder = holder
        self.work = work

    @property
    def pid(self) -> int:
        return self._holder.pid

    @property
    def root(self) -> Path:
        """The namespace's ``/`` as seen from outside (``/proc/PID/root``): for reading what is there."""
        return Path(f"/proc/{self.pid}/root")

    def command(self, argv: Sequence[str], cwd: Path | None = None) -> list[str]:
        """``argv`` as a command that runs inside the namespace (in ``cwd``, by default the work directory)."""
        return ["nsenter", f"--target={self.pid}", "--mount", f"--wd={cwd or self.work}", "--", *argv]

    def environment(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """``env`` (the test's environment when None), checked to move no system path under a prefix."""
        environ = dict(os.environ if env is None else env)
        if env is None:
            for name in ROOT_VARIABLES:
                environ.pop(name, None)
        moved = [name for name in ROOT_VARIABLES if environ.get(name)]
        assert not moved, f"{moved} would move the system paths the namespace is there to test"
        return environ

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, input: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the namespace and wait for it; its output, as text."""
        return subprocess.run(self.command(argv), env=self.environment(env), input=input, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def popen(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, stdout: IO[Any] | int | None = None,
              stderr: IO[Any] | int | None = None) -> subprocess.Popen[str]:
        """Start ``argv`` in the namespace (the caller waits for it)."""
        return subprocess.Popen(self.command(argv), env=self.environment(env), stdout=stdout, stderr=stderr,
                                text=True)

    def files(self, *tops: str) -> dict[str, str]:
        """Every file below ``tops`` (absolute paths in the namespace), with its mode: path -> ``0o644``."""
        out = self.run(["find", *tops, "-mindepth", "1", "(", "-type", "f", "-o", "-type", "l", ")",
                        "-printf", "%p %m\\n"], timeout=30)
        assert out.returncode == 0, out.stderr
        return {path: f"0o{mode}" for path, mode in (line.rsplit(" ", 1) for line in out.stdout.splitlines())}

    def close(self) -> None:
        """End the holder: the namespace's mounts go with it."""
        if self._holder.stdin is not None and not self._holder.stdin.closed:
            self._holder.stdin.close()
        try:
            self._holder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._holder.kill()
            self._holder.wait()
        for stream in (self._holder.stdout, self._holder.stderr):
            if stream is not None:
                stream.close()


def rhel_namespace(seed: Path, work: Path) -> MountNamespace:
    """A namespace whose :data:`MOUNTS` hold what ``seed`` has at the same paths (``seed/etc/rhsm/...``);
    ``work`` is the test's own directory (the commands' working directory). Close it (the ``closing``
    fixture) when done."""
    require_root()
    strays = [p for p in seed.rglob("*") if p.is_file() and not any(
        str(p.relative_to(seed)).startswith(m.lstrip("/") + "/") for m in MOUNTS)]
    assert not strays, f"the seed may only fill {MOUNTS}: {strays}"
    stage = work / "ns-stage"
    stage.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", _SETUP, "ftns-setup",
                               str(stage), str(seed), *MOUNTS],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stderr is not None
    if holder.stdout.readline().strip() != "ready":
        holder.wait(timeout=30)
        error = holder.stderr.read()
        namespace = MountNamespace(holder, work)
        namespace.close()
        raise AssertionError(f"the mount namespace could not be set up (exit {holder.returncode}): {error}")
    return MountNamespace(holder, work)
