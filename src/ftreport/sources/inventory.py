"""The esx source's inventory: vCenter's hosts, VMs and clusters as property records, and the
report's view of them.

The records are fed by one-shot retrievals (``RetrievePropertiesEx``) or by the changes of a
watch (``WaitForUpdatesEx``), decoded either by pyvmomi (:meth:`Inventory.load`,
:meth:`Inventory.update`) or by the stream decoder, which folds straight into
:attr:`Inventory.objects` through :mod:`ftreport.sources.vimrecords`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

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
from ..settings import SourceConfig
from .base import Snapshot
from .vimrecords import apply_update, store_object

__all__ = ["Inventory"]

log = logging.getLogger(__name__)

_POWER = {
    "poweredOn": (STATE_RUNNING, 1),
    "poweredOff": (STATE_SHUTOFF, 0),
    "suspended": (STATE_PAUSED, 0),
}


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
        instances = props.get("config.ftInfo.instanceUuids") or []
        # vSphere's role is the instance's index (from 1) in the group's instance UUIDs.
        instance = instances[int(role) - 1] if 0 < int(role) <= len(instances) else ""
        attrs = {"virtWhoType": "esx", "active": active,
                 **ft_attributes(instance, int(role), instances, props.get("runtime.faultToleranceState"))}
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
