"""The ``esx`` source: hosts and VMs (with FT data) from vCenter through pyvmomi.

One PropertyCollector filter over one ContainerView (VMs, hosts, clusters) with leaf property
paths only: pyvmomi decodes leaf values (``config.ftInfo.role``) cheaply and reliably, while
whole data objects (``config``, ``config.ftInfo``) cost much more to decode and fail on some
servers. One-shot collection uses ``RetrievePropertiesEx`` (following continuation tokens);
watching uses ``WaitForUpdatesEx`` (following ``truncated``), which returns the full state first
and then only the changes, so an FT failover or a VM moving shows up within about a second.

TLS is verified against ``ca_cert`` (or the system trust store); only ``insecure = true`` in
the configuration turns verification off.

Every call to vCenter, pyvmomi's included, goes through the connections of ``vimhttp``: it ends
``timeout`` seconds after it started, answered or not, and what vCenter sends is bounded
(``max_answer_size`` for the inventory; a few MiB for the session's calls). The stream decoder
bounds each element as it reads (``vimparse``), and pyvmomi's answers are read through the same
bounds; a page of more objects than asked for (``page_size``) is an error.
"""

from __future__ import annotations

import http.client
import importlib
import logging
import os
import re
import socket
import ssl
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..errors import SourceAuthError, SourceError, SourceTLSError
from ..section import Section
from ..settings import SourceConfig
from .base import ProgressCallback, Snapshot, SourceType, no_progress, settings_of
from .inventory import Inventory
from .vimhttp import (
    DEFAULT_MAX_ANSWER_SIZE,
    BoundedHTTPConnection,
    BoundedHTTPSConnection,
    Limits,
    connection_factory,
    format_size,
)
from .vimparse import page_too_big
from .vimstream import VimFault, VimLimitError, VimProtocolError, VimSoapClient

__all__ = [
    "CLUSTER_PROPERTIES",
    "DECODERS",
    "HOST_PROPERTIES",
    "KEYS",
    "SOURCE_TYPE",
    "VM_PROPERTIES",
    "EsxConnector",
    "EsxSettings",
    "EsxSource",
    "esx_scheme",
    "esx_settings",
    "parse_esx_server",
    "read_settings",
]

log = logging.getLogger(__name__)

# An FT instance's own UUID is not asked for: vSphere defines config.ftInfo.role as its index (from
# 1) in config.ftInfo.instanceUuids, and a VM outside FT needs none. That keeps the answer for 10,000
# VMs the size it was before runtime.faultToleranceState, which vCenter sends for every VM
# ("notConfigured" outside FT), joined the same filter (no second round trip for the FT state).
VM_PROPERTIES = (
    "config.uuid",
    "config.ftInfo.role",
    "config.ftInfo.instanceUuids",
    "runtime.faultToleranceState",
    "runtime.powerState",
    "runtime.host",
)
HOST_PROPERTIES = (
    "name",
    "hardware.systemInfo.uuid",
    "config.network.dnsConfig.hostName",
    "config.network.dnsConfig.domainName",
    "parent",
    "summary.hardware.numCpuPkgs",
    "config.product.name",
    "config.product.version",
    "runtime.connectionState",
)
CLUSTER_PROPERTIES = ("name",)
PROPERTIES = (
    ("VirtualMachine", VM_PROPERTIES),
    ("HostSystem", HOST_PROPERTIES),
    ("ClusterComputeResource", CLUSTER_PROPERTIES),
)


# -- configuration -------------------------------------------------------------------------

#: The section keys of an esx source (besides those every source has; see ftreport.conf(5)).
#: ``is_hypervisor`` and ``simplified_vim`` are virt-who's, accepted with no effect.
KEYS = frozenset({"server", "username", "password", "encrypted_password", "ca_cert", "insecure", "timeout",
                  "decoder", "page_size", "max_answer_size", "is_hypervisor", "simplified_vim"})
DECODERS = ("stream", "pyvmomi")
#: The answers of the session's own calls (API versions, login, service content, view, filter,
#: logout) take a few KiB; they are held to this, or to ``max_answer_size`` if smaller.
SESSION_ANSWER_SIZE = 4 << 20
_MIN_ANSWER_SIZE = 1 << 20
_SIZE_UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30}


@dataclass(frozen=True)
class EsxSettings:
    """An esx section's own keys, validated."""

    server: str = ""
    username: str = ""
    password: str = ""
    ca_cert: str | None = None
    insecure: bool = False
    timeout: float = 60.0
    decoder: str = "stream"
    page_size: int = 2000
    max_answer_size: int = DEFAULT_MAX_ANSWER_SIZE


def esx_scheme(value: str) -> str:
    """``http`` for an esx ``server`` written as an ``http://`` URL (virt-who allows it), else ``https``."""
    text = value.strip()
    return "http" if text.lower().startswith("http://") else "https"


def parse_esx_server(value: str) -> tuple[str, int, str]:
    """vCenter address as host, host:port or http(s) URL (with or without /sdk) -> (host, port, path).

    The scheme is :func:`esx_scheme`; https is the default, and the default port follows it."""
    text = value.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise ValueError(f"vCenter is reached over https (or http), not {parts.scheme}")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise ValueError("bad port") from exc
    host = parts.hostname
    if not host:
        raise ValueError("no host name")
    path = parts.path.rstrip("/") or "/sdk"
    if not path.endswith("/sdk"):
        path += "/sdk"
    return host, port, path


def _size(sec: Section, key: str, default: int) -> int:
    """A size in bytes: ``536870912``, ``512M``, ``512MiB``, ``1G``, ``64K``."""
    raw = (sec.get(key) or "").strip()
    if not raw:
        return default
    m = re.fullmatch(r"(\d+)\s*([A-Za-z]*)", raw)
    unit = _SIZE_UNITS.get(m.group(2).lower()) if m else None
    if m is None or unit is None:
        raise sec.error(key, f"expected a size in bytes, or with K, M or G (KiB, MiB, GiB), got {raw!r}")
    size = int(m.group(1)) * unit
    if size < _MIN_ANSWER_SIZE:
        raise sec.error(key, f"must be at least {format_size(_MIN_ANSWER_SIZE)}, got {raw!r}")
    return size


def read_settings(sec: Section) -> EsxSettings:
    """An esx section's keys; raises ConfigError naming the key at fault."""
    server = sec.get("server") or ""
    if not server:
        raise sec.error("server", "an esx source needs the vCenter address")
    try:
        parse_esx_server(server)
    except ValueError as exc:
        raise sec.error("server", f"not a vCenter address ({exc}): {server!r}") from exc
    if esx_scheme(server) == "http":
        log.warning("%s: [%s] server %s is plain HTTP: the vCenter password and inventory travel "
                    "unencrypted; use https://", sec.file_of("server"), sec.name, server)
    username = sec.get("username") or ""
    if not username:
        raise sec.error("username", "an esx source needs a user name")
    password = sec.secret("password", "encrypted_password")
    if password is None:
        raise sec.error("password", "an esx source needs password or encrypted_password")
    ca_cert = sec.get("ca_cert") or None
    if ca_cert and not Path(ca_cert).is_file():
        raise sec.error("ca_cert", f"no such file: {ca_cert}")
    decoder = (sec.get("decoder") or os.environ.get("FTREPORT_ESX_DECODER") or "stream").strip().lower()
    if decoder not in DECODERS:
        raise sec.error("decoder", f"must be one of {', '.join(DECODERS)}, not {decoder!r}")
    return EsxSettings(
        server=server,
        username=username,
        password=password,
        ca_cert=ca_cert,
        insecure=sec.flag("insecure"),
        timeout=sec.number("timeout", 60.0, minimum=1),
        decoder=decoder,
        page_size=int(sec.number("page_size", 2000, minimum=1, integer=True)),
        max_answer_size=_size(sec, "max_answer_size", DEFAULT_MAX_ANSWER_SIZE),
    )


def esx_settings(config: SourceConfig) -> EsxSettings:
    """The esx settings of a section (the defaults when it has none)."""
    return settings_of(config, EsxSettings)


class EsxConnector(Protocol):
    """Opens a logged-in vCenter session; returns pyvmomi's ServiceInstance. Its calls are bounded
    by ``limits`` (:mod:`ftreport.sources.vimhttp`)."""

    def __call__(self, *, host: str, port: int, path: str, user: str, password: str,
                 ssl_context: ssl.SSLContext, timeout: float, limits: Limits) -> Any: ...


def smart_connect(*, host: str, port: int, path: str, user: str, password: str,
                  ssl_context: ssl.SSLContext, timeout: float, limits: Limits, protocol: str = "https") -> Any:
    """The real connector: API version negotiation, then login, on pyvmomi's SOAP stub with the
    bounded connections of ``vimhttp`` in place of its own.

    pyVim's ``SmartConnect`` fetches ``vimServiceVersions.xml`` without any timeout, and its
    ``Connect`` makes its stub's connections itself, bounded only per socket read: so ftreport
    negotiates the version itself and makes the stub, as ``Connect`` does, with its own
    connections (and without compressed answers, whose size says nothing of what they unpack to).
    """
    pyvmomi: Any = importlib.import_module("pyVmomi")
    plain = protocol == "http"
    context = None if plain else ssl_context
    version = _negotiate_version(host, port, path, context, timeout)
    # pyvmomi's stub takes plain http as a negative port (as pyVim passes it).
    stub = pyvmomi.SoapStubAdapter(host=host, port=-port if plain else port, path=path, version=version,
                                   sslContext=context, httpConnectionTimeout=timeout,
                                   acceptCompressedResponses=False)
    stub.scheme = connection_factory(limits, context)
    si = pyvmomi.vim.ServiceInstance("ServiceInstance", stub)
    si.RetrieveContent().sessionManager.Login(user, password, None)
    return si


_VERSIONS_SIZE = 1 << 20  # vimServiceVersions.xml: about 1 KiB


def _negotiate_version(host: str, port: int, path: str, ssl_context: ssl.SSLContext | None,
                       timeout: float) -> str:
    """The newest vim25 API version pyvmomi and the server both speak."""
    support: Any = importlib.import_module("pyVmomi.VmomiSupport")
    limits = Limits(timeout=timeout, max_size=_VERSIONS_SIZE, size_name="the size of vimServiceVersions.xml",
                    guard=True)
    if ssl_context is None:
        conn: http.client.HTTPConnection = BoundedHTTPConnection(host, port, limits=limits)
    else:
        conn = BoundedHTTPSConnection(host, port, limits=limits, context=ssl_context)
    try:
        conn.request("GET", path.rstrip("/") + "/vimServiceVersions.xml")
        response = conn.getresponse()
        if response.status != 200:
            raise VimProtocolError(f"no list of API versions (vimServiceVersions.xml: HTTP {response.status})")
        data = response.read()  # read through the guard: no DTD, hence no entity to expand below
    finally:
        conn.close()
    try:
        root = ElementTree.fromstring(data)  # noqa: S314 - checked by the guard (vimhttp), no DTD
    except ElementTree.ParseError as exc:
        raise VimProtocolError(f"malformed list of API versions (vimServiceVersions.xml): {exc}") from None
    offered: set[str] = set()
    for namespace in root.iter("namespace"):
        if (namespace.findtext("name") or "") != "urn:vim25":
            continue
        offered.add(namespace.findtext("version") or "")
        offered.update(v.text or "" for v in namespace.iterfind("priorVersions/version"))
    for version in support.GetServiceVersions("vim25"):  # newest first
        if support.versionIdMap.get(version) in offered:
            return str(version)
    raise VimProtocolError(f"none of the API versions it offers ({', '.join(sorted(offered)) or 'none'}) is "
                           "one this pyvmomi speaks")


def _session_id(stub: Any) -> str:
    """The vCenter session of pyvmomi's SOAP stub: ``GetSessionId`` (pyvmomi 8.0.1+), else the
    session cookie that older releases (8.0.0.1, the minimum) keep as the raw Set-Cookie value."""
    get = getattr(stub, "GetSessionId", None)
    if get is not None:
        return str(get() or "")
    m = re.search(r'vmware_soap_session="?([^";]+)', getattr(stub, "cookie", "") or "")
    return m.group(1) if m else ""


def _pyvmomi() -> tuple[Any, Any]:
    """pyVmomi's ``vim`` and ``vmodl`` namespaces (dynamically typed), imported on first use."""
    module: Any = importlib.import_module("pyVmomi")
    return module.vim, module.vmodl


class EsxSource:
    """vCenter (or a single ESXi host) through pyvmomi."""

    def __init__(self, config: SourceConfig, *, connector: EsxConnector | None = None,
                 wait_seconds: int = 1, progress: ProgressCallback = no_progress) -> None:
        settings = esx_settings(config)
        if not settings.server or not settings.username:
            raise SourceError(config.name, "an esx source needs server and username")
        self._config = config
        self._settings = settings
        self._host, self._port, self._path = parse_esx_server(settings.server)
        self._scheme = esx_scheme(settings.server)
        self._connector = connector or smart_connect
        self._wait = wait_seconds
        self._progress = progress
        self._lock = threading.Lock()
        self._si: Any = None
        self._ctx: ssl.SSLContext | None = None
        self._logins = 0
        self._late = False  # a call ran out of time: no logout (it would take as long again)
        # The bounds of the calls pyvmomi makes: the session's own, and, with decoder = pyvmomi,
        # the inventory's (whose pages, as one answer, are counted together: see _retrieve_pyvmomi).
        if settings.decoder == "pyvmomi":
            self._limits = Limits(timeout=settings.timeout, max_size=settings.max_answer_size, per_call=False,
                                  guard=True)
        elif settings.max_answer_size <= SESSION_ANSWER_SIZE:
            self._limits = Limits(timeout=settings.timeout, max_size=settings.max_answer_size, guard=True)
        else:
            self._limits = Limits(timeout=settings.timeout, max_size=SESSION_ANSWER_SIZE,
                                  size_name="the bound on session calls", guard=True)

    @property
    def name(self) -> str:
        return self._config.name

    @property
    def address(self) -> str:
        return f"{self._scheme}://{self._host}:{self._port}{self._path}"

    def _ssl_context(self) -> ssl.SSLContext:
        if self._settings.insecure:
            log.warning("%s: TLS verification of %s is disabled (insecure = true)", self.name, self.address)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        return ssl.create_default_context(cafile=self._settings.ca_cert)

    def _error(self, exc: BaseException, doing: str) -> SourceError:
        """Translate pyvmomi, SOAP, TLS and socket failures into SourceError."""
        if isinstance(exc, SourceError):
            return exc
        if isinstance(exc, VimFault):
            return self._fault_error(exc.fault, exc.message, doing)
        if isinstance(exc, VimProtocolError):
            return SourceError(self.name, f"{doing} at {self.address} failed: {exc}")
        if isinstance(exc, VimLimitError):
            self._late = exc.limit == "timeout"
            return SourceError(self.name, f"{doing} at {self.address} stopped: {exc}")
        vim, vmodl = _pyvmomi()
        if isinstance(exc, ssl.SSLCertVerificationError):
            ca = self._settings.ca_cert or "the system trust store"
            return SourceTLSError(self.name, f"certificate of {self.address} not trusted "
                                             f"({exc.verify_message}; CA: {ca})")
        if isinstance(exc, ssl.SSLError):
            return SourceTLSError(self.name, f"TLS with {self.address} failed: {exc.reason or exc}")
        if isinstance(exc, vmodl.MethodFault):
            if isinstance(exc, vim.fault.InvalidLogin):
                fault = "InvalidLogin"  # and its subclasses (PasswordExpired...)
            elif isinstance(exc, vim.fault.NotAuthenticated):
                fault = "NotAuthenticated"
            else:
                fault = type(exc).__name__.rpartition(".")[2]
            return self._fault_error(fault, getattr(exc, "msg", None) or "", doing)
        if isinstance(exc, ConnectionRefusedError):
            return SourceError(self.name, f"cannot connect to {self.address}: connection refused")
        if isinstance(exc, (TimeoutError, socket.timeout)):  # one class only from Python 3.10
            return SourceError(self.name, f"{doing} at {self.address} timed out")
        if isinstance(exc, OSError):
            return SourceError(self.name, f"{doing} at {self.address} failed: {exc.strerror or exc}")
        if isinstance(exc, http.client.HTTPException):
            return SourceError(self.name, f"{doing} at {self.address} failed: {type(exc).__name__} {exc}")
        return SourceError(self.name, f"{doing} at {self.address} failed: {type(exc).__name__}: {exc}")

    def _fault_error(self, fault: str, message: str, doing: str) -> SourceError:
        """A vSphere fault (by type name, from pyvmomi or the stream decoder) as a SourceError."""
        if fault == "InvalidLogin":
            return SourceAuthError(self.name, f"login to {self.address} as {self._settings.username!r} "
                                              "refused: wrong user name or password")
        if fault == "NotAuthenticated":
            return SourceError(self.name, f"session with {self.address} ended (expired or vCenter restarted)")
        return SourceError(self.name, f"{doing} at {self.address} failed: {message or fault}")

    def _connect(self) -> Any:
        self._progress(f"connecting to {self._host}:{self._port}")
        self._ctx = self._ssl_context()
        try:
            # Plain http (virt-who allows it; the configuration warned): only then is the
            # protocol passed, so connectors written for https keep working.
            extra = {"protocol": "http"} if self._scheme == "http" else {}
            si = self._connector(host=self._host, port=self._port, path=self._path,
                                 user=self._settings.username or "", password=self._settings.password or "",
                                 ssl_context=self._ctx, timeout=self._settings.timeout, limits=self._limits,
                                 **extra)
        except Exception as exc:
            raise self._error(exc, "login") from exc
        with self._lock:
            self._si = si
        self._logins += 1
        if self._logins > 1:  # after an expired session or a vCenter restart
            log.info("%s: logged in to %s again (new session)", self.name, self.address)
        else:
            log.debug("%s: logged in to %s", self.name, self.address)
        return si

    def _filter_spec(self, content: Any) -> tuple[Any, Any]:
        vim, vmodl = _pyvmomi()

        pc = vmodl.query.PropertyCollector
        view = content.viewManager.CreateContainerView(
            content.rootFolder, [vim.VirtualMachine, vim.HostSystem, vim.ClusterComputeResource], True)
        traverse = pc.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)
        spec = pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
            propSet=[
                pc.PropertySpec(type=vim.VirtualMachine, pathSet=list(VM_PROPERTIES)),
                pc.PropertySpec(type=vim.HostSystem, pathSet=list(HOST_PROPERTIES)),
                pc.PropertySpec(type=vim.ClusterComputeResource, pathSet=list(CLUSTER_PROPERTIES)),
            ],
        )
        return view, spec

    def _soap_client(self, si: Any) -> VimSoapClient:
        """Raw SOAP on pyvmomi's session: its cookie and API version, the same TLS verification."""
        stub = si._GetStub()  # public per pyVmomi ("officially supported")
        ssl_context = None if self._scheme == "http" else self._ctx
        return VimSoapClient(host=self._host, port=self._port, path=self._path, ssl_context=ssl_context,
                             timeout=self._settings.timeout, session_id=_session_id(stub),
                             soap_action=stub.versionId, max_answer_size=self._settings.max_answer_size)

    def _report_counts(self, inventory: Inventory) -> None:
        hosts, vms = inventory.counts()
        self._progress(f"{hosts} hosts, {vms} VMs")

    def collect(self) -> Snapshot:
        si = self._connect()
        doing = "retrieving the inventory"
        try:
            content = si.RetrieveContent()
            view, spec = self._filter_spec(content)
            self._progress("retrieving hosts and VMs")
            if self._settings.decoder == "pyvmomi":
                inventory = self._retrieve_pyvmomi(content, spec)
            else:
                inventory = self._retrieve_stream(si, content.propertyCollector._moId, view._moId)
            try:
                view.Destroy()
            except Exception:
                log.debug("%s: destroying the container view failed", self.name, exc_info=True)
            return inventory.snapshot(self._config, consume=True)
        except Exception as exc:
            raise self._error(exc, doing) from exc
        finally:
            self.close()

    def _retrieve_pyvmomi(self, content: Any, spec: Any) -> Inventory:
        _vim, vmodl = _pyvmomi()
        inventory = Inventory()
        collector = content.propertyCollector
        page_size = self._settings.page_size
        options = vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=page_size)
        self._limits.restart()  # the retrieval's pages count as one answer
        result = collector.RetrievePropertiesEx([spec], options)
        while result is not None:
            if len(result.objects or ()) > page_size:
                raise page_too_big(page_size)
            inventory.load(result.objects)
            self._report_counts(inventory)
            if not result.token:
                break
            result = collector.ContinueRetrievePropertiesEx(result.token)
        return inventory

    def _retrieve_stream(self, si: Any, collector: str, view: str) -> Inventory:
        """RetrievePropertiesEx in pages of page_size objects, each folded in as it arrives."""
        inventory = Inventory()
        client = self._soap_client(si)
        objects = scanned = 0
        try:
            page = client.retrieve(collector, view, PROPERTIES, inventory.objects, self._settings.page_size)
            objects, scanned = objects + page.objects, scanned + page.scanned
            self._report_counts(inventory)
            while page.token:
                page = client.continue_retrieve(collector, page.token, inventory.objects)
                objects, scanned = objects + page.objects, scanned + page.scanned
                self._report_counts(inventory)
        finally:
            client.close()
        # Objects the scanner did not take were written in another shape than vCenter's usual one:
        # decoded all the same, by the XML parser, at twice the CPU.
        log.debug("%s: %d objects retrieved, %d of them read by the regular-shape scanner",
                  self.name, objects, scanned)
        return inventory

    def watch(self, stop: threading.Event) -> Iterator[Snapshot]:
        _vim, vmodl = _pyvmomi()

        si = self._connect()
        doing = "watching the inventory"
        stream = self._settings.decoder != "pyvmomi"
        client: VimSoapClient | None = None
        try:
            try:
                content = si.RetrieveContent()
                collector = content.propertyCollector.CreatePropertyCollector()
                _view, spec = self._filter_spec(content)
                collector.CreateFilter(spec, partialUpdates=False)
                options = vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=self._wait,
                                                                   maxObjectUpdates=self._settings.page_size)
                if stream:
                    client = self._soap_client(si)
                self._progress("retrieving hosts and VMs")
            except Exception as exc:
                raise self._error(exc, "creating the property filter") from exc
            inventory = Inventory()
            version = ""
            first = True
            truncated = False
            while not stop.is_set():
                try:
                    if client is not None:
                        page = client.wait_for_updates(collector._moId, version, inventory.objects,
                                                       max_wait_seconds=self._wait,
                                                       max_object_updates=self._settings.page_size,
                                                       touched=inventory.touched)
                        if not page.received:
                            continue
                        changed, version, truncated = page.updates, page.version, page.truncated
                        scanned: int | None = page.scanned
                    else:
                        scanned = None
                        with self._waiting(restart=not truncated):
                            update = collector.WaitForUpdatesEx(version, options)
                        if update is None:
                            continue
                        if sum(len(fs.objectSet or ()) for fs in update.filterSet or ()) > self._settings.page_size:
                            raise page_too_big(self._settings.page_size)
                        changed = inventory.update(update)
                        version, truncated = update.version, bool(update.truncated)
                except Exception as exc:
                    raise self._error(exc, doing) from exc
                if truncated:
                    self._report_counts(inventory)
                    continue
                if first:
                    hosts, vms = inventory.counts()
                    log.info("%s: %d hosts, %d VMs in %s", self.name, hosts, vms, self.address)
                    first = False
                elif not changed:
                    continue  # nothing this filter watches changed: no new snapshot to make
                elif scanned is None:
                    log.debug("%s: %d object updates", self.name, changed)
                else:
                    log.debug("%s: %d object updates, %d of them read by the regular-shape scanner",
                              self.name, changed, scanned)
                yield inventory.snapshot(self._config)
        finally:
            if client is not None:
                client.close()
            self.close()

    @contextmanager
    def _waiting(self, *, restart: bool) -> Iterator[None]:
        """pyvmomi's WaitForUpdatesEx: vCenter may hold it for the wait it asks; a new update set
        (not the rest of a truncated one) is a new answer."""
        if restart:
            self._limits.restart()
        self._limits.grace = self._wait
        try:
            yield
        finally:
            self._limits.grace = 0.0

    def close(self) -> None:
        with self._lock:
            si, self._si = self._si, None
            late, self._late = self._late, False
        if si is None:
            return
        if late:  # the error says so already; the session ends on vCenter's own idle timeout
            log.debug("%s: no logout from %s, which did not answer in time", self.name, self.address)
            si._GetStub().DropConnections()
            return
        try:
            si.content.sessionManager.Logout()
        except Exception:
            log.debug("%s: logout failed", self.name, exc_info=True)


SOURCE_TYPE = SourceType("esx", KEYS, read_settings, EsxSource, binding="pyVmomi",
                         install="pyvmomi (pip install 'ftagent[vmware]')")
