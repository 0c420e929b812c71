"""The ``libvirt`` source: one hypervisor and its domains through libvirt-python.

Any libvirt URI works (``qemu:///system``, ``qemu+ssh://host/system``, ``test:///path/node.xml``).
The host's UUID comes from the capabilities (``host/uuid``), else from SMBIOS sysinfo, else it
is derived from the URI and host name (libvirt's test driver has neither). Domain lifecycle
events give prompt updates where the driver supports them; otherwise the domains are polled.

libvirt-python is imported inside the functions that use it: it is an optional binding, needed only
once a libvirt source runs (:func:`ftreport.sources.create_source` checks for it).
"""

from __future__ import annotations

import logging
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import SourceAuthError, SourceError
from ..model import FACT_SOCKETS, FACT_SYSTEM_UUID, FACT_TYPE, FACT_VERSION, Guest, Hypervisor
from ..section import Section
from ..settings import SourceConfig
from .base import ProgressCallback, Snapshot, SourceType, no_progress, settings_of

__all__ = [
    "KEYS",
    "SOURCE_TYPE",
    "LibvirtConnector",
    "LibvirtSettings",
    "LibvirtSource",
    "libvirt_settings",
    "open_connection",
    "read_settings",
]

log = logging.getLogger(__name__)

_RUNNING_STATES = (1, 2)  # VIR_DOMAIN_RUNNING, VIR_DOMAIN_BLOCKED

#: The section keys of a libvirt source (besides those every source has; see ftreport.conf(5)).
KEYS = frozenset({"server", "username", "password", "encrypted_password"})


@dataclass(frozen=True)
class LibvirtSettings:
    """A libvirt section's own keys: the connection URI (None: libvirt's default) and credentials."""

    server: str | None = None
    username: str | None = None
    password: str | None = None


def _libvirt_uri(server: str | None, username: str | None) -> str | None:
    """virt-who's ``server``: a URI as it is, or a host name reached as ``qemu+ssh://[user@]host/system``."""
    if not server:
        return None
    if "://" in server or server.endswith(":///"):
        return server
    user = f"{username}@" if username else ""
    return f"qemu+ssh://{user}{server}/system"


def read_settings(sec: Section) -> LibvirtSettings:
    """A libvirt section's keys; raises ConfigError naming the key at fault."""
    username = sec.get("username") or None
    return LibvirtSettings(server=_libvirt_uri(sec.get("server") or None, username), username=username,
                           password=sec.secret("password", "encrypted_password"))


def libvirt_settings(config: SourceConfig) -> LibvirtSettings:
    """The libvirt settings of a section (the defaults when it has none)."""
    return settings_of(config, LibvirtSettings)


_event_loop_lock = threading.Lock()
_event_loop_started = False


class LibvirtConnector(Protocol):
    """Opens a libvirt connection (``virConnect``)."""

    def __call__(self, uri: str | None, username: str | None, password: str | None) -> Any: ...


def _quiet_libvirt() -> None:
    import libvirt

    # libvirt prints every error to stderr unless a handler is registered; we raise instead.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _ensure_event_loop() -> None:
    """Start libvirt's default event loop once per process (needed for domain events)."""
    global _event_loop_started
    import libvirt

    with _event_loop_lock:
        if _event_loop_started:
            return
        _quiet_libvirt()
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:
                    log.debug("libvirt event loop iteration failed", exc_info=True)

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


def open_connection(uri: str | None, username: str | None, password: str | None) -> Any:
    """The real connector: read-only, with credentials when a password is configured."""
    import libvirt

    _quiet_libvirt()
    if password is None:
        return libvirt.openReadOnly(uri)

    def credentials(creds: list[list[Any]], _opaque: object) -> int:
        for cred in creds:
            if cred[0] == libvirt.VIR_CRED_AUTHNAME:
                cred[4] = username or ""
            elif cred[0] == libvirt.VIR_CRED_PASSPHRASE:
                cred[4] = password
        return 0

    auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], credentials, None]
    return libvirt.openAuth(uri, auth, libvirt.VIR_CONNECT_RO)


def _version(number: int) -> str:
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"


class LibvirtSource:
    """A libvirt hypervisor."""

    def __init__(self, config: SourceConfig, *, connector: LibvirtConnector | None = None,
                 poll_interval: float = 30.0, refresh_interval: float = 300.0,
                 progress: ProgressCallback = no_progress) -> None:
        self._config = config
        self._settings = libvirt_settings(config)
        self._connector = connector or open_connection
        self._poll = poll_interval
        self._refresh = refresh_interval
        self._progress = progress
        self._lock = threading.Lock()
        self._conn: Any = None

    @property
    def name(self) -> str:
        return self._config.name

    @property
    def uri(self) -> str:
        return self._settings.server or "(default URI)"

    def _error(self, exc: BaseException, doing: str) -> SourceError:
        import libvirt

        if isinstance(exc, SourceError):
            return exc
        if isinstance(exc, libvirt.libvirtError):
            code = exc.get_error_code()
            msg = exc.get_error_message() or str(exc)
            if code in (libvirt.VIR_ERR_AUTH_FAILED, getattr(libvirt, "VIR_ERR_AUTH_CANCELLED", -1)):
                return SourceAuthError(self.name, f"{doing} {self.uri}: authentication failed: {msg}")
            return SourceError(self.name, f"{doing} {self.uri} failed: {msg}")
        return SourceError(self.name, f"{doing} {self.uri} failed: {type(exc).__name__}: {exc}")

    def _open(self) -> Any:
        self._progress(f"connecting to {self.uri}")
        try:
            conn = self._connector(self._settings.server, self._settings.username, self._settings.password)
        except Exception as exc:
            raise self._error(exc, "connecting to") from exc
        if conn is None:
            raise SourceError(self.name, f"cannot connect to {self.uri}")
        with self._lock:
            self._conn = conn
        return conn

    def _host(self, conn: Any) -> tuple[str, str, dict[str, str]]:
        """(host uuid, host name, facts) of the connection's hypervisor."""
        hostname = conn.getHostname()
        host_uuid = None
        try:
            caps = ET.fromstring(conn.getCapabilities())  # noqa: S314 - from the libvirt daemon
            host_uuid = caps.findtext("host/uuid")
        except ET.ParseError:
            log.debug("%s: unparsable capabilities", self.name)
        if not host_uuid:
            try:
                sysinfo = ET.fromstring(conn.getSysinfo(0))  # noqa: S314 - from the libvirt daemon
                host_uuid = sysinfo.findtext("system/entry[@name='uuid']")
            except Exception:
                log.debug("%s: no sysinfo", self.name, exc_info=True)
        facts: dict[str, str] = {}
        if host_uuid:
            facts[FACT_SYSTEM_UUID] = host_uuid.lower()
        else:
            host_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.uri}#{hostname}"))
            log.info("%s: %s reports no host UUID; using %s derived from URI and host name",
                     self.name, self.uri, host_uuid)
        info = conn.getInfo()
        facts[FACT_SOCKETS] = str(max(1, int(info[4])) * int(info[5]))
        facts[FACT_TYPE] = str(conn.getType())
        try:
            facts[FACT_VERSION] = _version(int(conn.getVersion()))
        except Exception:
            log.debug("%s: no hypervisor version", self.name, exc_info=True)
        return host_uuid.lower(), hostname, facts

    def _snapshot(self, conn: Any, host: tuple[str, str, dict[str, str]]) -> Snapshot:
        host_uuid, hostname, facts = host
        guests = []
        for dom in conn.listAllDomains(0):
            state = int(dom.state()[0])
            guests.append(Guest(dom.UUIDString().lower(), state,
                                {"virtWhoType": "libvirt", "active": 1 if state in _RUNNING_STATES else 0}))
        hid = hostname if self._config.hypervisor_id == "hostname" else host_uuid
        hv = Hypervisor(hypervisor_id=hid, name=hostname, guests=tuple(guests), facts=facts)
        return self._config.host_filter.apply([hv])

    def collect(self) -> Snapshot:
        conn = self._open()
        try:
            return self._snapshot(conn, self._host(conn))
        except Exception as exc:
            raise self._error(exc, "listing domains of") from exc
        finally:
            self.close()

    def watch(self, stop: threading.Event) -> Iterator[Snapshot]:
        import libvirt

        _ensure_event_loop()
        conn = self._open()
        wake = threading.Event()
        closed: list[int] = []
        callback_id: int | None = None

        def on_event(_conn: Any, _dom: Any, _event: int, _detail: int, _opaque: object) -> None:
            wake.set()

        def on_close(_conn: Any, reason: int, _opaque: object) -> None:
            closed.append(reason)
            wake.set()

        try:
            try:
                callback_id = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                          on_event, None)
            except libvirt.libvirtError as exc:
                log.info("%s: %s has no domain events (%s); polling every %g s", self.name, self.uri,
                         exc.get_error_message(), self._poll)
            try:
                conn.registerCloseCallback(on_close, None)
            except libvirt.libvirtError:
                log.debug("%s: no close callback", self.name)
            try:
                host = self._host(conn)
                last = self._snapshot(conn, host)
            except Exception as exc:
                raise self._error(exc, "listing domains of") from exc
            yield last
            period = self._refresh if callback_id is not None else self._poll
            while not stop.is_set():
                waited = 0.0
                while not stop.is_set() and not wake.is_set() and waited < period:
                    wake.wait(0.25)
                    waited += 0.25
                if stop.is_set():
                    return
                wake.clear()
                if closed:
                    raise SourceError(self.name, f"connection to {self.uri} closed (reason {closed[0]})")
                try:
                    snap = self._snapshot(conn, host)
                except Exception as exc:
                    raise self._error(exc, "listing domains of") from exc
                if snap != last:
                    last = snap
                    yield snap
        finally:
            if callback_id is not None:
                try:
                    conn.domainEventDeregisterAny(callback_id)
                except Exception:
                    log.debug("%s: deregistering events failed", self.name, exc_info=True)
            try:
                conn.unregisterCloseCallback()
            except Exception:
                log.debug("%s: unregistering the close callback failed", self.name, exc_info=True)
            self.close()

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.close()
        except Exception:
            log.debug("%s: close failed", self.name, exc_info=True)


def _is_local(settings: object) -> bool:
    """A section without ``server`` reads the libvirt of the machine ftreport runs on."""
    return isinstance(settings, LibvirtSettings) and settings.server is None


SOURCE_TYPE = SourceType("libvirt", KEYS, read_settings, LibvirtSource, binding="libvirt",
                         install="libvirt-python (pip install 'ftagent[libvirt]')", is_local=_is_local)
