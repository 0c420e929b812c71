"""The ``sanlock`` lease backend: the FT group's lease as a sanlock resource on shared storage.

Layout of the lease file (one per FT group, on storage both instances see, as they see their disk):

- offset 0: the lockspace ``[lease] sanlock_lockspace`` (host ids 1..2000, one delta lease each);
- offset 1 MiB (:data:`RESOURCE_OFFSET`): the resource named by the group's ``virt.uuid``;
- sanlock's default 512-byte sectors and 1 MiB alignment, so the file is 2 MiB
  (:data:`LEASE_FILE_SIZE`).  :func:`initialise` (``ftagent sanlock-init``) writes both, as
  ``sanlock direct init -s`` and ``-r`` do.

Calls, through Debian's ``python3-sanlock`` binding and the local sanlock daemon:

- grant = register this process with the daemon (with :data:`KILLPATH` so that a lost lockspace
  makes the daemon signal the heartbeat, whose fencing ladder then runs, instead of SIGKILLing it),
  join the lockspace as ``sanlock_host_id`` (the daemon then renews it on its own), acquire the
  resource; generation = the resource's lease version ``lver``;
- renew = ask the daemon that the lockspace and the resource are still ours at ``generation``; the
  promise started at the daemon's last lockspace renewal (:attr:`Grant.age`);
- handover = as renew (the lease is keyed on ``virt.uuid``, not on the consumer identity);
- release = release the resource and leave the lockspace.

:attr:`SanlockBackend.ttl` is sanlock's host_dead bound for the lockspace's io timeout (another host
may take the resource only after our delta lease went unrenewed that long).  Every call runs in a
worker thread bounded by the state machine's timeout: the binding blocks while the daemon does not
answer (a frozen daemon), and the guard thread must keep its deadline then.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftagent.errors import ConfigError, ConnectionFailed, FtagentError, InvalidUsage
from ftagent.lease.backend import BackendSpec, Grant, LeaseRefused

if TYPE_CHECKING:
    from ftagent.config import Config
    from ftagent.connection import Connection
    from ftagent.identity import IdentityStore
    from ftagent.lease.settings import LeaseSettings

__all__ = [
    "ALIGN",
    "BACKEND",
    "KEYS",
    "KILLPATH_SIGNAL",
    "LEASE_FILE_SIZE",
    "RESOURCE_OFFSET",
    "SECTOR",
    "SanlockBackend",
    "SanlockSettings",
    "SanlockTiming",
    "import_sanlock",
    "initialise",
    "open_sanlock_backend",
    "parse_sanlock_settings",
    "sanlock_options",
    "sanlock_ttl",
]

logger = logging.getLogger(__name__)

ALIGN = 1048576
SECTOR = 512
LOCKSPACE_OFFSET = 0
RESOURCE_OFFSET = ALIGN
LEASE_FILE_SIZE = 2 * ALIGN
#: The signal the daemon's kill path sends the heartbeat when the lockspace is lost.
KILLPATH_SIGNAL = "USR1"
#: The ``[lease]`` keys of this backend.
KEYS = ("sanlock_path", "sanlock_lockspace", "sanlock_host_id", "sanlock_io_timeout")
#: sanlock's limits: host ids 1..2000 (512-byte sectors, 1 MiB alignment), names up to 48 bytes.
MAX_HOST_ID = 2000
NAME_MAX = 48
#: sanlock's fixed watchdog fire timeout, part of its host_dead bound (see ``sanlock_ttl``).
WATCHDOG_FIRE_TIMEOUT = 60.0


def sanlock_ttl(io_timeout: float) -> float:
    """sanlock's host_dead bound: renewal failure (8 x io_timeout) + the watchdog fire timeout (60 s)."""
    return 8 * io_timeout + WATCHDOG_FIRE_TIMEOUT


@dataclass(frozen=True)
class SanlockSettings:
    """The ``sanlock_*`` keys of ``[lease]``, validated."""

    sanlock_path: Path
    sanlock_host_id: int
    sanlock_lockspace: str = "ftagent"
    sanlock_io_timeout: int = 10


def parse_sanlock_settings(raw: Mapping[str, str], err: Callable[[str, str], ConfigError],
                           base: Path | None) -> SanlockSettings:
    """Validate the ``sanlock_*`` keys; ``err(key, message)`` makes the error naming file and key."""
    path_raw = raw.get("sanlock_path", "").strip()
    if not path_raw:
        raise err("sanlock_path", "the sanlock backend needs sanlock_path (the FT group's lease file or device)")
    path = Path(os.path.expandvars(os.path.expanduser(path_raw)))
    name = raw.get("sanlock_lockspace", "").strip() or SanlockSettings.sanlock_lockspace
    if len(name.encode()) > NAME_MAX or ":" in name:
        raise err("sanlock_lockspace", f"invalid lockspace name {name!r}: at most {NAME_MAX} bytes, no ':'")
    host_raw = raw.get("sanlock_host_id", "").strip()
    if not host_raw:
        raise err("sanlock_host_id", f"the sanlock backend needs sanlock_host_id (1..{MAX_HOST_ID}, "
                                     "different for each instance of the FT group)")
    try:
        host_id = int(host_raw)
    except ValueError:
        raise err("sanlock_host_id", f"invalid host id {host_raw!r}: an integer 1..{MAX_HOST_ID}") from None
    if not 1 <= host_id <= MAX_HOST_ID:
        raise err("sanlock_host_id", f"host id {host_id} out of range 1..{MAX_HOST_ID}")
    io_timeout = SanlockSettings.sanlock_io_timeout
    io_raw = raw.get("sanlock_io_timeout", "").strip()
    if io_raw:
        try:
            io_timeout = int(io_raw)
        except ValueError:
            raise err("sanlock_io_timeout", f"invalid io timeout {io_raw!r}: whole seconds, 1..60") from None
        if not 1 <= io_timeout <= 60:
            raise err("sanlock_io_timeout", f"io timeout {io_timeout} out of range 1..60 seconds")
    return SanlockSettings(sanlock_path=path if path.is_absolute() else (base or Path.cwd()) / path,
                           sanlock_lockspace=name, sanlock_host_id=host_id, sanlock_io_timeout=io_timeout)


def _own_ttl(options: Any) -> tuple[float, str]:
    """sanlock's own timing (its host_dead bound) replaces ``[lease] ttl``: (seconds, why)."""
    io_timeout = options.sanlock_io_timeout if isinstance(options, SanlockSettings) else \
        SanlockSettings.sanlock_io_timeout
    host_dead = sanlock_ttl(io_timeout)
    return host_dead, f"its host_dead bound is {host_dead:g} s for sanlock_io_timeout {io_timeout}"


def sanlock_options(settings: LeaseSettings, *, needed_by: str = "the sanlock backend") -> SanlockSettings:
    """The validated ``sanlock_*`` keys of ``settings``; a :class:`ConfigError` when the backend is another."""
    options = settings.backend_options
    if not isinstance(options, SanlockSettings):
        raise ConfigError(f"{needed_by} needs [lease] backend = sanlock and its sanlock_path and sanlock_host_id",
                          section="lease", key="sanlock_path")
    return options


# sanlock's answers to acquire that mean "someone else holds it" (sanlock.h: SANLK_ACQUIRE_*).
_HELD_ELSEWHERE = {-243, -244, -245, -246, -247, -errno.EAGAIN, errno.EAGAIN}
_ALREADY = {-errno.EEXIST, errno.EEXIST}


# The lease holder: a small child process registered with the daemon, on whose behalf the resource
# is acquired.  sanlock kills the *registered* process when the lockspace is lost: first through the
# kill path (which signals the heartbeat, so the fencing ladder runs), and with SIGKILL once its grace
# is over or when a frozen host resumes after host_dead.  That SIGKILL then hits this child, not the
# heartbeat, which survives to run its ladder.  It exits when the heartbeat writes "release" and
# closes its stdin; if the heartbeat dies instead (nobody ran the ladder), it keeps the lease for
# ``linger`` seconds more (``margin``: the time the service manager has to stop the protected units)
# so that the other instance does not start while this one's workload may still run.
_HOLDER = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
import sanlock
linger = float(sys.argv[1])
fd = sanlock.register()
if len(sys.argv) > 3:
    sanlock.killpath(sys.argv[2], sys.argv[3:], slkfd=fd)
sys.stdout.write("%d\\n" % os.getpid())
sys.stdout.flush()
if not sys.stdin.buffer.read().startswith(b"release"):
    time.sleep(linger)
"""


def import_sanlock() -> Any:
    """Debian's ``sanlock`` binding, or a :class:`~ftagent.errors.ConfigError` saying how to get it."""
    try:
        import sanlock  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ConfigError(
            "the sanlock lease backend needs Debian's python3-sanlock binding in this Python "
            f"({exc}); install it and run scripts/sanlock-binding.sh for a virtualenv",
            section="lease", key="backend") from exc
    return sanlock


class SanlockTiming:
    """sanlock's timing for one io timeout (its ``timeouts.c`` ratios), all in seconds."""

    def __init__(self, io_timeout: float) -> None:
        self.io_timeout = io_timeout
        self.renewal = 2 * io_timeout
        self.renewal_fail = 8 * io_timeout
        self.host_dead = sanlock_ttl(io_timeout)

    def as_dict(self) -> dict[str, float]:
        return {"io_timeout": self.io_timeout, "renewal": self.renewal, "renewal_fail": self.renewal_fail,
                "host_dead": self.host_dead}


def _errno(exc: BaseException) -> int | None:
    value = getattr(exc, "errno", None)
    return value if isinstance(value, int) else None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class SanlockBackend:
    """A :class:`~ftagent.lease.backend.LeaseBackend` over the local sanlock daemon (module docstring)."""

    name = "sanlock"

    def __init__(self, settings: LeaseSettings, resource: str, *, sanlock: Any = None,
                 killpath: Callable[[], tuple[str, list[str]] | None] | None = None) -> None:
        options = sanlock_options(settings)
        self.settings = settings
        self.options = options
        self.path = str(options.sanlock_path)
        self.lockspace = options.sanlock_lockspace.encode()
        self.resource = resource.encode()
        self.host_id = options.sanlock_host_id
        self.sanlock = sanlock if sanlock is not None else import_sanlock()
        self.timing = SanlockTiming(options.sanlock_io_timeout)
        self._killpath = killpath if killpath is not None else default_killpath
        self._holder: Any = None  # subprocess.Popen of the lease holder child
        self._busy: threading.Thread | None = None
        self._busy_what = ""
        self._lock = threading.Lock()
        self.calls = 0

    @property
    def disks(self) -> list[tuple[str, int]]:
        return [(self.path, RESOURCE_OFFSET)]

    @property
    def ttl(self) -> float:
        return self.timing.host_dead

    # -- bounded calls into the binding -------------------------------------------------------

    def _bounded(self, what: str, timeout: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` in a worker thread; :class:`ConnectionFailed` after ``timeout``.

        A call that does not come back (a frozen daemon) keeps its thread; until it returns, further
        calls fail at once instead of piling up threads.
        """
        with self._lock:
            busy = self._busy
            if busy is not None and busy.is_alive():
                raise ConnectionFailed(f"the sanlock daemon has not answered an earlier call ({self._busy_what})")
            box: dict[str, Any] = {}

            def run() -> None:
                try:
                    box["value"] = fn(*args, **kwargs)
                except BaseException as exc:  # handed to the caller's thread
                    box["error"] = exc

            worker = threading.Thread(target=run, name=f"sanlock-{what}", daemon=True)
            self._busy, self._busy_what = worker, what
            self.calls += 1
            worker.start()
        worker.join(max(0.05, timeout))
        if worker.is_alive():
            raise ConnectionFailed(f"sanlock {what}: no answer from the sanlock daemon within {timeout:.3g} s")
        if "error" in box:
            exc = box["error"]
            if isinstance(exc, self.sanlock.SanlockException):
                raise _Failed(what, exc) from exc
            raise exc
        return box.get("value")

    def _call(self, what: str, deadline: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._bounded(what, deadline - time.monotonic(), fn, *args, **kwargs)

    # -- the lease ------------------------------------------------------------------------

    def _register(self, deadline: float) -> int:
        """The lease holder child's pid, started and registered with the daemon if need be."""
        holder = self._holder
        if holder is not None and holder.poll() is None:
            return int(holder.pid)
        self._holder = None
        import subprocess  # here, not at the top: see _stop

        killpath = self._killpath()
        argv = [sys.executable, "-c", _HOLDER, f"{self.settings.margin:g}"]
        if killpath is not None:
            argv += [killpath[0], *killpath[1]]
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
                                 start_new_session=True)
        assert child.stdout is not None
        try:
            line = self._call("register", deadline, child.stdout.readline)
        except FtagentError:
            _stop(child)
            raise
        if not line.strip().isdigit():
            _stop(child)
            raise ConnectionFailed("the sanlock lease holder process could not register with the sanlock daemon")
        self._holder = child
        return child.pid

    def _join(self, deadline: float) -> None:
        joined = self._call("inq_lockspace", deadline, self.sanlock.inq_lockspace, self.lockspace, self.host_id,
                            self.path, LOCKSPACE_OFFSET)
        if joined:
            return
        if joined is None:
            raise ConnectionFailed(f"still joining lockspace {self.options.sanlock_lockspace} as host id "
                                   f"{self.host_id}")
        logger.info("joining sanlock lockspace %s on %s as host id %d (io timeout %d s)",
                    self.options.sanlock_lockspace, self.path, self.host_id, self.options.sanlock_io_timeout)
        try:
            self._call("add_lockspace", deadline, self.sanlock.add_lockspace, self.lockspace, self.host_id,
                       self.path, LOCKSPACE_OFFSET, iotimeout=self.options.sanlock_io_timeout)
        except _Failed as exc:
            if exc.code not in _ALREADY:
                raise ConnectionFailed(f"cannot join lockspace {self.options.sanlock_lockspace} as host id "
                                       f"{self.host_id}: {exc}") from exc

    def _our_renewal_age(self, deadline: float) -> float:
        """Seconds since the daemon's last renewal of our delta lease (sanlock's monotonic clock).

        Right after joining the daemon answers EAGAIN until it has read every host once: retried
        within ``deadline``.  Also learns the lockspace's io timeout, hence :attr:`ttl`.
        """
        while True:
            try:
                hosts = self._call("get_hosts", deadline, self.sanlock.get_hosts, self.lockspace, self.host_id)
                break
            except _Failed as exc:
                if exc.code not in (errno.EAGAIN, -errno.EAGAIN) or time.monotonic() + 0.2 >= deadline:
                    raise ConnectionFailed(f"cannot read our host status in lockspace "
                                           f"{self.options.sanlock_lockspace}: {exc}") from exc
                time.sleep(0.2)
        ours = [h for h in hosts or [] if h.get("host_id") == self.host_id]
        if not ours or not ours[0].get("timestamp"):
            raise ConnectionFailed(f"the sanlock daemon reports no renewal of host id {self.host_id}")
        io_timeout = ours[0].get("io_timeout")
        if isinstance(io_timeout, int) and io_timeout > 0 and io_timeout != self.timing.io_timeout:
            logger.warning("lockspace %s runs with io timeout %d s, not the configured %d s: ttl is %g s",
                           self.options.sanlock_lockspace, io_timeout, self.options.sanlock_io_timeout,
                           sanlock_ttl(io_timeout))
            self.timing = SanlockTiming(io_timeout)
            for warning in margin_warnings(self.settings, self.timing):
                logger.warning("%s", warning)
        # sanlock's timestamps are whole seconds of CLOCK_MONOTONIC, rounded down: an older
        # start, so a safe one.
        return max(0.0, time.monotonic() - float(ours[0]["timestamp"]))

    def _owner(self, deadline: float) -> tuple[str | None, int | None]:
        """Who holds the resource on disk: ("sanlock host id N", lver), best effort."""
        try:
            owners = self._call("read_resource_owners", deadline, self.sanlock.read_resource_owners,
                                self.lockspace, self.resource, self.disks, align=ALIGN, sector=SECTOR)
            info = self._call("read_resource", deadline, self.sanlock.read_resource, self.path, RESOURCE_OFFSET,
                              align=ALIGN, sector=SECTOR)
        except FtagentError:
            return None, None
        holder = ", ".join(f"sanlock host id {o.get('host_id')}" for o in owners or []) or None
        version = info.get("version") if isinstance(info, dict) else None
        return holder, version if isinstance(version, int) else None

    def _alive_holder(self) -> int | None:
        holder = self._holder
        return holder.pid if holder is not None and holder.poll() is None else None

    def _held(self, deadline: float) -> int | None:
        """The ``lver`` of our resource as the daemon holds it for the holder child, or ``None``."""
        pid = self._alive_holder()
        if pid is None:
            return None
        for res in self._call("inquire", deadline, self.sanlock.inquire, pid=pid) or []:
            if res.get("lockspace") == self.lockspace and res.get("resource") == self.resource:
                version = res.get("version")
                return int(version) if isinstance(version, int) else None
        return None

    def grant(self, consumer: str, holder: str, timeout: float) -> Grant:
        deadline = time.monotonic() + timeout
        pid = self._register(deadline)
        self._join(deadline)
        version = self._held(deadline)
        if version is None:
            try:
                self._call("acquire", deadline, self.sanlock.acquire, self.lockspace, self.resource, self.disks,
                           pid=pid)
            except _Failed as exc:
                if exc.code in _HELD_ELSEWHERE:
                    owner, lver = self._owner(deadline)
                    raise LeaseRefused(f"the sanlock resource {_text(self.resource)} is held: {exc}", holder=owner,
                                       generation=lver) from exc
                if exc.code not in _ALREADY:
                    raise ConnectionFailed(f"cannot acquire sanlock resource {_text(self.resource)}: {exc}") from exc
            version = self._held(deadline)
            if version is None:
                raise ConnectionFailed("the sanlock daemon acquired the resource but does not list it")
        age = self._our_renewal_age(deadline)
        return Grant(holder=holder, generation=version, age=age)

    def renew(self, consumer: str, holder: str, generation: int, timeout: float) -> Grant:
        deadline = time.monotonic() + timeout
        if self._alive_holder() is None:
            raise LeaseRefused("the lease holder process is gone (killed by sanlock, or closed)",
                               generation=generation, expired=True)
        joined = self._call("inq_lockspace", deadline, self.sanlock.inq_lockspace, self.lockspace, self.host_id,
                            self.path, LOCKSPACE_OFFSET)
        if not joined:
            raise LeaseRefused(f"the sanlock daemon lost lockspace {self.options.sanlock_lockspace}",
                               generation=generation, expired=True)
        version = self._held(deadline)
        if version is None:
            owner, lver = self._owner(deadline)
            raise LeaseRefused(f"the sanlock daemon no longer holds resource {_text(self.resource)} for us",
                               holder=owner, generation=lver)
        if version != generation:
            raise LeaseRefused(f"lease version {version}, not {generation}", holder=holder, generation=version)
        return Grant(holder=holder, generation=version, age=self._our_renewal_age(deadline))

    def handover(self, successor: Mapping[str, Any], holder: str, generation: int | None,
                 timeout: float) -> Grant:
        # The resource is named by virt.uuid, which a failover keeps: the current lease goes on.
        if generation is None:
            return self.grant(str(successor.get("uuid", "")), holder, timeout)
        granted = self.renew(str(successor.get("uuid", "")), holder, generation, timeout)
        return Grant(holder=granted.holder, generation=granted.generation, consumer=str(successor.get("uuid")),
                     age=granted.age)

    def release(self, consumer: str, holder: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pid = self._alive_holder()
        if pid is not None:
            try:
                self._call("release", deadline, self.sanlock.release, self.lockspace, self.resource, self.disks,
                           pid=pid)
            except _Failed as exc:
                raise ConnectionFailed(f"cannot release sanlock resource {_text(self.resource)}: {exc}") from exc
        try:
            # unused=True: never let the daemon kill anyone else using the lockspace.
            self._call("rem_lockspace", deadline, self.sanlock.rem_lockspace, self.lockspace, self.host_id,
                       self.path, LOCKSPACE_OFFSET, unused=True)
        except _Failed as exc:
            logger.info("staying in lockspace %s: %s", self.options.sanlock_lockspace, exc)
        self.close()

    def close(self) -> None:
        """End the holder child: the daemon releases whatever it still holds for it."""
        holder, self._holder = self._holder, None
        if holder is not None:
            _stop(holder)


def _stop(child: Any) -> None:
    """Tell the holder child to release (it exits), kill it if it does not, reap it."""
    # Imported where a child is handled: `ftagent status` loads this module for the backend registry,
    # and subprocess would be all it loads for it (about 2 ms, python -X importtime).
    import subprocess

    try:
        child.stdin.write(b"release\n")
        child.stdin.close()
    except OSError:
        pass
    try:
        child.wait(timeout=1)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    if child.stdout is not None:
        child.stdout.close()


class _Failed(FtagentError):
    """A :class:`sanlock.SanlockException` with its (negative or positive) errno as ``code``."""

    def __init__(self, what: str, exc: BaseException) -> None:
        args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
        text = args[2] if len(args) > 2 else (args[1] if len(args) > 1 else str(exc))
        super().__init__(f"sanlock {what}: {_text(text)} ({_errno(exc)})")
        self.code = _errno(exc)


def default_killpath() -> tuple[str, list[str]] | None:
    """``kill -USR1 <this pid>``: what the daemon runs when our lockspace is lost (see the heartbeat)."""
    kill = shutil.which("kill", path=os.defpath + ":/usr/bin:/bin")
    if kill is None:
        logger.warning("no kill(1) found: a lost sanlock lockspace will SIGKILL the heartbeat")
        return None
    return kill, [f"-{KILLPATH_SIGNAL}", str(os.getpid())]


def margin_warnings(settings: LeaseSettings, timing: SanlockTiming) -> list[str]:
    """Why ``margin`` cannot be met with sanlock's timing (empty when it can)."""
    out = []
    ttl = timing.host_dead
    rungs = sum(1 for rung in (settings.fence_command, settings.fence_units, settings.fence_signal) if rung)
    ladder = rungs * settings.fence_timeout + 0.5  # the guard thread looks twice a second
    if settings.margin >= ttl - settings.renew_interval:
        out.append(f"margin {settings.margin:g} s is not below sanlock's host_dead bound {ttl:g} s - renew_interval "
                   f"{settings.renew_interval:g} s: no renewal can land before the deadline")
    if ladder > settings.margin:
        out.append(f"the fencing ladder may take {ladder:g} s ({rungs} rungs x fence_timeout + 0.5 s), more than "
                   f"margin {settings.margin:g} s: another host could take the lease while it runs")
    if ladder > timing.host_dead - timing.renewal_fail:
        out.append(f"the fencing ladder may take {ladder:g} s, more than the {timing.host_dead - timing.renewal_fail:g}"
                   " s sanlock leaves between killing the holder and declaring its host dead")
    return out


def virt_uuid_of(config: Config) -> str:
    """The FT group's ``virt.uuid`` (the resource name), from the agent's facts."""
    # Imported here: `ftagent status` loads this module for the registry (facts: ~5 ms, python -X importtime).
    from ftagent.facts import collect_facts

    value = collect_facts(config.agent.facts_dir).get("virt.uuid")
    if not value:
        raise ConfigError("the sanlock lease backend names the resource by virt.uuid, and this system has none",
                          section="lease", key="backend")
    if len(value.encode()) > 48:
        raise ConfigError(f"virt.uuid {value!r} is longer than sanlock's 48-byte resource names", section="lease")
    return value


def open_sanlock_backend(config: Config, settings: LeaseSettings, identity: IdentityStore | None = None,
                         connection: Callable[[], Connection] | None = None) -> SanlockBackend:
    """The backend for ``[lease] backend = sanlock``, warning when ``margin`` cannot be met."""
    backend = SanlockBackend(settings, virt_uuid_of(config))
    for warning in margin_warnings(settings, backend.timing):
        logger.warning("%s", warning)
    return backend


def initialise(settings: LeaseSettings, resource: str, *, force: bool = False, sanlock: Any = None,
               timeout: float = 60.0) -> dict[str, Any]:
    """Write the lockspace and the resource at the fixed layout (``ftagent sanlock-init``).

    An area that already holds this lockspace and resource is left alone (``"written": []``).  One
    that holds something else is overwritten only with ``force``; a resource with an owner on disk
    is never overwritten (the lease may be live: release it, or wait until sanlock frees it).
    """
    options = sanlock_options(settings, needed_by="sanlock-init")
    lib = sanlock if sanlock is not None else import_sanlock()
    path = options.sanlock_path
    lockspace = options.sanlock_lockspace.encode()
    name = resource.encode()
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o660)
        os.close(fd)
    if path.is_file() and path.stat().st_size < LEASE_FILE_SIZE:
        os.truncate(path, LEASE_FILE_SIZE)
    backend = SanlockBackend(settings, resource, sanlock=lib, killpath=lambda: None)

    def read(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return backend._bounded(fn.__name__, timeout, fn, *args, **kwargs)
        except _Failed:
            return None

    current_ls = read(lib.read_lockspace, str(path), LOCKSPACE_OFFSET, align=ALIGN, sector=SECTOR)
    current_res = read(lib.read_resource, str(path), RESOURCE_OFFSET, align=ALIGN, sector=SECTOR)
    owners: list[dict[str, Any]] = []
    if current_res:
        owners = read(lib.read_resource_owners, current_res.get("lockspace", lockspace), current_res["resource"],
                      [(str(path), RESOURCE_OFFSET)], align=ALIGN, sector=SECTOR) or []
    if owners:
        held = ", ".join(f"host id {o.get('host_id')} (generation {o.get('generation')})" for o in owners)
        raise InvalidUsage(f"{path}: resource {_text(current_res['resource'])} is held by {held} (lease version "
                           f"{current_res.get('version')}): not overwriting a live lease")
    ls_ok = bool(current_ls) and current_ls.get("lockspace") == lockspace
    res_ok = bool(current_res) and current_res.get("lockspace") == lockspace and current_res.get("resource") == name
    if ((current_ls and not ls_ok) or (current_res and not res_ok)) and not force:
        found = (f"lockspace {_text(current_ls.get('lockspace')) if current_ls else None}, resource "
                 f"{_text(current_res.get('resource')) if current_res else None}")
        raise InvalidUsage(f"{path} already holds another lease ({found}); use --force to overwrite it")
    written = []
    if not ls_ok:
        backend._bounded("write_lockspace", timeout, lib.write_lockspace, lockspace, str(path), LOCKSPACE_OFFSET,
                         iotimeout=options.sanlock_io_timeout, align=ALIGN, sector=SECTOR)
        written.append("lockspace")
    if not res_ok:
        backend._bounded("write_resource", timeout, lib.write_resource, lockspace, name,
                         [(str(path), RESOURCE_OFFSET)], align=ALIGN, sector=SECTOR)
        written.append("resource")
    return {"path": str(path), "lockspace": options.sanlock_lockspace, "lockspace_offset": LOCKSPACE_OFFSET,
            "resource": resource, "resource_offset": RESOURCE_OFFSET, "sector": SECTOR, "align": ALIGN,
            "io_timeout": options.sanlock_io_timeout, "written": written}


#: The lease as a sanlock resource: keys ``sanlock_*``, keyed on the FT group, timing of its own.
BACKEND = BackendSpec(name="sanlock", opener=open_sanlock_backend, keys=KEYS, parse=parse_sanlock_settings,
                      own_ttl=_own_ttl)
