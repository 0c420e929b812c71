"""The ``esx`` source: hosts and VMs (with FT data) from vCenter through pyvmomi.

One PropertyCollector filter over one ContainerView (VMs, hosts, clusters) with leaf property
paths only: pyvmomi decodes leaf values (``config.ftInfo.role``) cheaply and reliably, while
whole data objects (``config``, ``config.ftInfo``) cost much more to decode and fail on some
servers. One-shot collection uses ``RetrievePropertiesEx`` (following continuation tokens);
watching uses ``WaitForUpdatesEx`` (following ``truncated``), which returns the full state first
and then only the changes, so an FT failover or a VM moving shows up within about a second.

TLS is verified against ``ca_cert`` (or the system trust store); only ``insecure = true`` in
the configuration turns verification off.
"""

from __future__ import annotations

import http.client
import importlib
import logging
import re
import socket
import ssl
import threading
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Protocol

from ..config import SourceConfig, esx_scheme, parse_esx_server
from ..errors import SourceAuthError, SourceError, SourceTLSError
from ..model import (
    FACT_CLUSTER,
    FACT_SOCKETS,
    FACT_SYSTEM_UUID,
    FACT_TYPE,
    FACT_VERSION,
    STATE_PAUSED,
    STATE_RUNNING,
    STATE_SHUTOFF,
    STATE_UNKNOWN,
    Guest,
    Hypervisor,
    ft_attributes,
)
from .base import ProgressCallback, Snapshot, no_progress
from .vimrecords import apply_update, store_object
from .vimstream import VimFault, VimProtocolError, VimSoapClient

__all__ = ["CLUSTER_PROPERTIES", "HOST_PROPERTIES", "VM_PROPERTIES", "EsxConnector", "EsxSource", "Inventory"]

log = logging.getLogger(__name__)

VM_PROPERTIES = (
    "config.uuid",
    "config.instanceUuid",
    "config.ftInfo.role",
    "config.ftInfo.instanceUuids",
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

_POWER = {
    "poweredOn": (STATE_RUNNING, 1),
    "poweredOff": (STATE_SHUTOFF, 0),
    "suspended": (STATE_PAUSED, 0),
}


class EsxConnector(Protocol):
    """Opens a logged-in vCenter session; returns pyvmomi's ServiceInstance."""

    def __call__(self, *, host: str, port: int, path: str, user: str, password: str,
                 ssl_context: ssl.SSLContext, timeout: float) -> Any: ...


def smart_connect(*, host: str, port: int, path: str, user: str, password: str,
                  ssl_context: ssl.SSLContext, timeout: float, protocol: str = "https") -> Any:
    """The real connector: API version negotiation, then pyVim's Connect (login).

    pyVim's SmartConnect fetches ``vimServiceVersions.xml`` without any timeout, so a vCenter
    that accepts connections but never answers would hang the source for ever; the negotiation
    is therefore done here, with the timeout, and the login by pyVim with the chosen version.
    """
    connect: Any = importlib.import_module("pyVim.connect")
    version = _negotiate_version(host, port, path, None if protocol == "http" else ssl_context, timeout)
    if version is None:  # no vimServiceVersions.xml: let pyVim try its other ways
        return connect.SmartConnect(protocol=protocol, host=host, port=port, path=path, user=user, pwd=password,
                                    sslContext=ssl_context, httpConnectionTimeout=timeout)
    # pyVim's Connect takes plain http as a negative port (as SmartConnect passes it).
    return connect.Connect(host=host, port=-port if protocol == "http" else port, path=path, user=user,
                           pwd=password, version=version, sslContext=ssl_context, httpConnectionTimeout=timeout)


def _negotiate_version(host: str, port: int, path: str, ssl_context: ssl.SSLContext | None,
                       timeout: float) -> str | None:
    """The newest vim25 API version pyvmomi and the server both speak (None: not advertised)."""
    support: Any = importlib.import_module("pyVmomi.VmomiSupport")
    if ssl_context is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection(host, port, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl_context)
    try:
        conn.request("GET", path.rstrip("/") + "/vimServiceVersions.xml")
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            return None
    finally:
        conn.close()
    try:
        root = ElementTree.fromstring(data)  # noqa: S314 - from the TLS-verified vCenter, as pyvmomi parses it
    except ElementTree.ParseError:
        return None
    offered: set[str] = set()
    for namespace in root.iter("namespace"):
        if (namespace.findtext("name") or "") != "urn:vim25":
            continue
        offered.add(namespace.findtext("version") or "")
        offered.update(v.text or "" for v in namespace.iterfind("priorVersions/version"))
    for version in support.GetServiceVersions("vim25"):  # newest first
        if support.versionIdMap.get(version) in offered:
            return str(version)
    return None


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


def _value(val: Any) -> Any:
    """Plain Python value of a property: managed object references become their moId."""
    moid = getattr(val, "_moId", None)
    if moid is not None:
        return moid
    if isinstance(val, list):  # pyvmomi arrays are list subclasses
        return [_value(v) for v in val]
    return val


# Read-only, so every plain (non-FT) guest can share one of them.
_PLAIN_ATTRIBUTES = {active: MappingProxyType({"virtWhoType": "esx", "active": active}) for active in (0, 1)}


def _guest(props: Mapping[str, Any]) -> tuple[str, Guest] | None:
    """(host moId, guest) of a VM's record; None for templates and half-created VMs."""
    host = props.get("runtime.host")
    uuid = props.get("config.uuid")
    if not host or not uuid:
        return None
    state, active = _POWER.get(props.get("runtime.powerState", ""), (STATE_UNKNOWN, 0))
    role = props.get("config.ftInfo.role")
    attrs: Mapping[str, Any]
    if role is not None:
        attrs = {"virtWhoType": "esx", "active": active,
                 **ft_attributes(props.get("config.instanceUuid") or "", int(role),
                                 props.get("config.ftInfo.instanceUuids") or [])}
    else:
        attrs = _PLAIN_ATTRIBUTES[active]  # shared: most guests of a big vCenter have these
    return str(host), Guest(uuid, state, attrs)


def _drain(table: dict[str, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The records of a table, in order, each removed from the table as it is handed out."""
    for moid in list(table):
        yield table.pop(moid)


class Inventory:
    """Property values by kind and moId, fed by RetrievePropertiesEx or WaitForUpdatesEx results."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, dict[str, Any]]] = {
            "VirtualMachine": {}, "HostSystem": {}, "ClusterComputeResource": {},
        }
        self._filtered_out: str | None = None  # the last "every host filtered out" warning
        # Guests by host as of the last snapshot, and the VMs changed since (None: rebuild all).
        # A failover changes a few VMs of tens of thousands: only those are made into guests again.
        self._guests: dict[str, dict[str, Guest]] | None = None
        self._vm_host: dict[str, str] = {}
        self.touched: set[str] | None = None

    def load(self, contents: Iterable[Any]) -> None:
        """Objects from RetrievePropertiesEx (ObjectContent), decoded by pyvmomi."""
        for oc in contents:
            props = {p.name: _value(p.val) for p in oc.propSet or ()}
            store_object(self.objects, getattr(oc.obj, "_wsdlName", ""), oc.obj._moId, props)

    def update(self, update_set: Any) -> int:
        """Changes from WaitForUpdatesEx (UpdateSet), decoded by pyvmomi; returns the number of
        object updates."""
        count = 0
        for fs in update_set.filterSet or ():
            for ou in fs.objectSet or ():
                count += 1
                changes = [(ch.name, ch.op, _value(ch.val)) for ch in ou.changeSet or ()]
                apply_update(self.objects, self.touched, getattr(ou.obj, "_wsdlName", ""), ou.obj._moId, ou.kind,
                             changes)
        return count

    def counts(self) -> tuple[int, int]:
        return len(self.objects["HostSystem"]), len(self.objects["VirtualMachine"])

    def snapshot(self, config: SourceConfig, *, consume: bool = False) -> Snapshot:
        """The report's view of the inventory, filtered as the source is configured.

        ``consume`` empties the inventory's VM records as their guests are made, so a one-shot
        collection never holds both in full."""
        guests: Mapping[str, Iterable[Guest]]
        vms = self.objects["VirtualMachine"]
        if consume:
            by_host: dict[str, list[Guest]] = defaultdict(list)
            for props in _drain(vms):
                made = _guest(props)
                if made is not None:
                    by_host[made[0]].append(made[1])
            guests = by_host
        else:
            guests = {host: cached.values() for host, cached in self._watched_guests().items()}
        clusters = self.objects["ClusterComputeResource"]
        out: Snapshot = []
        excluded = {"hosts": 0, "parents": 0}
        parents_seen: set[str] = set()
        for moid, props in self.objects["HostSystem"].items():
            hw_uuid = props.get("hardware.systemInfo.uuid")
            dns_host = props.get("config.network.dnsConfig.hostName")
            domain = props.get("config.network.dnsConfig.domainName")
            name = f"{dns_host}.{domain}" if dns_host and domain else (dns_host or props.get("name") or moid)
            cluster = clusters.get(props.get("parent") or "", {}).get("name")
            if config.hypervisor_id == "hostname":
                hid = name
            elif config.hypervisor_id == "hwuuid":
                hid = moid
            else:
                hid = hw_uuid
            if not hid:
                log.debug("%s: host %s has no %s; skipped", config.name, moid, config.hypervisor_id)
                continue
            if not config.host_filter.allows(hid, name, props.get("name")):
                excluded["hosts"] += 1
                continue
            if (config.parent_filter.include or config.parent_filter.exclude) and \
                    not config.parent_filter.allows(cluster or ""):
                excluded["parents"] += 1
                parents_seen.add(cluster or "(no cluster)")
                continue
            facts: dict[str, str] = {}
            sockets = props.get("summary.hardware.numCpuPkgs")
            if sockets is not None:
                facts[FACT_SOCKETS] = str(sockets)
            if props.get("config.product.name"):
                facts[FACT_TYPE] = str(props["config.product.name"])
            if props.get("config.product.version"):
                facts[FACT_VERSION] = str(props["config.product.version"])
            if cluster:
                facts[FACT_CLUSTER] = str(cluster)
            if hw_uuid:
                facts[FACT_SYSTEM_UUID] = str(hw_uuid)
            out.append(Hypervisor(hypervisor_id=str(hid), name=name, guests=tuple(guests.get(moid, ())),
                                  facts=facts))
        self._warn_if_filtered_out(config, out, excluded, parents_seen)
        return out

    def _watched_guests(self) -> dict[str, dict[str, Guest]]:
        """Guests by host moId (then VM moId), remade only for the VMs touched since last time."""
        vms = self.objects["VirtualMachine"]
        guests, touched = self._guests, self.touched
        if guests is None or touched is None:
            guests, self._vm_host = {}, {}
            touched = set(vms)
        for moid in touched:
            host = self._vm_host.pop(moid, None)
            if host is not None:
                guests[host].pop(moid, None)
            props = vms.get(moid)
            made = _guest(props) if props is not None else None
            if made is not None:
                guests.setdefault(made[0], {})[moid] = made[1]
                self._vm_host[moid] = made[0]
        self._guests, self.touched = guests, set()
        return guests

    def _warn_if_filtered_out(self, config: SourceConfig, out: Snapshot, excluded: dict[str, int],
                              parents_seen: set[str]) -> None:
        """A filter that drops every host is most likely a typo: say so once, with what was seen."""
        message = None
        if not out and excluded["parents"]:
            message = (f"{config.name}: filter_host_parents/exclude_host_parents excluded all "
                       f"{excluded['parents']} hosts (after {excluded['hosts']} excluded by "
                       f"filter_hosts/exclude_hosts); parents seen: {', '.join(sorted(parents_seen))}")
        elif not out and excluded["hosts"]:
            message = f"{config.name}: filter_hosts/exclude_hosts excluded all {excluded['hosts']} hosts"
        if message != self._filtered_out:
            self._filtered_out = message
            if message is not None:
                log.warning("%s; the report has no hypervisors", message)


class EsxSource:
    """vCenter (or a single ESXi host) through pyvmomi."""

    def __init__(self, config: SourceConfig, *, connector: EsxConnector | None = None,
                 wait_seconds: int = 1, progress: ProgressCallback = no_progress) -> None:
        if not config.server or not config.username:
            raise SourceError(config.name, "an esx source needs server and username")
        self._config = config
        self._host, self._port, self._path = parse_esx_server(config.server)
        self._scheme = esx_scheme(config.server)
        self._connector = connector or smart_connect
        self._wait = wait_seconds
        self._progress = progress
        self._lock = threading.Lock()
        self._si: Any = None
        self._ctx: ssl.SSLContext | None = None
        self._logins = 0

    @property
    def name(self) -> str:
        return self._config.name

    @property
    def address(self) -> str:
        return f"{self._scheme}://{self._host}:{self._port}{self._path}"

    def _ssl_context(self) -> ssl.SSLContext:
        if self._config.insecure:
            log.warning("%s: TLS verification of %s is disabled (insecure = true)", self.name, self.address)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        return ssl.create_default_context(cafile=self._config.ca_cert)

    def _error(self, exc: BaseException, doing: str) -> SourceError:
        """Translate pyvmomi, SOAP, TLS and socket failures into SourceError."""
        if isinstance(exc, SourceError):
            return exc
        if isinstance(exc, VimFault):
            return self._fault_error(exc.fault, exc.message, doing)
        if isinstance(exc, VimProtocolError):
            return SourceError(self.name, f"{doing} at {self.address} failed: {exc}")
        vim, vmodl = _pyvmomi()
        if isinstance(exc, ssl.SSLCertVerificationError):
            ca = self._config.ca_cert or "the system trust store"
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
            return SourceAuthError(self.name, f"login to {self.address} as {self._config.username!r} "
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
                                 user=self._config.username or "", password=self._config.password or "",
                                 ssl_context=self._ctx, timeout=self._config.timeout, **extra)
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
                             timeout=self._config.timeout, session_id=_session_id(stub),
                             soap_action=stub.versionId)

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
            if self._config.decoder == "pyvmomi":
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
        options = vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=self._config.page_size)
        result = collector.RetrievePropertiesEx([spec], options)
        while result is not None:
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
            page = client.retrieve(collector, view, PROPERTIES, inventory.objects, self._config.page_size)
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
        stream = self._config.decoder != "pyvmomi"
        client: VimSoapClient | None = None
        try:
            try:
                content = si.RetrieveContent()
                collector = content.propertyCollector.CreatePropertyCollector()
                _view, spec = self._filter_spec(content)
                collector.CreateFilter(spec, partialUpdates=False)
                options = vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=self._wait,
                                                                   maxObjectUpdates=self._config.page_size)
                if stream:
                    client = self._soap_client(si)
                self._progress("retrieving hosts and VMs")
            except Exception as exc:
                raise self._error(exc, "creating the property filter") from exc
            inventory = Inventory()
            version = ""
            first = True
            while not stop.is_set():
                try:
                    if client is not None:
                        page = client.wait_for_updates(collector._moId, version, inventory.objects,
                                                       max_wait_seconds=self._wait,
                                                       max_object_updates=self._config.page_size,
                                                       touched=inventory.touched)
                        if not page.received:
                            continue
                        changed, version, truncated = page.updates, page.version, page.truncated
                        scanned: int | None = page.scanned
                    else:
                        scanned = None
                        update = collector.WaitForUpdatesEx(version, options)
                        if update is None:
                            continue
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

    def close(self) -> None:
        with self._lock:
            si, self._si = self._si, None
        if si is None:
            return
        try:
            si.content.sessionManager.Logout()
        except Exception:
            log.debug("%s: logout failed", self.name, exc_info=True)
