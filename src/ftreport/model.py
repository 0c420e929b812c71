"""Hosts and guests as ftreport reports them, and the JSON body of a hypervisor check-in.

The body is what Candlepin's asynchronous hypervisor check-in takes::

    {"hypervisors": [{"hypervisorId": {"hypervisorId": ID}, "name": N,
                      "guestIds": [{"guestId": G, "state": S, "attributes": {...}}],
                      "facts": {...}}]}

Hypervisors are sorted by id and guests by guest id (then instance UUID), so equal inventories
give byte-identical bodies and the same hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FACT_CLUSTER",
    "FACT_SOCKETS",
    "FACT_SYSTEM_UUID",
    "FACT_TYPE",
    "FACT_VERSION",
    "STATE_BLOCKED",
    "STATE_CRASHED",
    "STATE_PAUSED",
    "STATE_PMSUSPENDED",
    "STATE_RUNNING",
    "STATE_SHUTINGDOWN",
    "STATE_SHUTOFF",
    "STATE_UNKNOWN",
    "Guest",
    "Hypervisor",
    "body_hash",
    "ft_attributes",
    "merge_hypervisors",
    "report_body",
]

# Guest states as virt-who reports them (libvirt's virDomainState numbering).
STATE_UNKNOWN = 0
STATE_RUNNING = 1
STATE_BLOCKED = 2
STATE_PAUSED = 3
STATE_SHUTINGDOWN = 4
STATE_SHUTOFF = 5
STATE_CRASHED = 6
STATE_PMSUSPENDED = 7

# Facts virt-who sends for a hypervisor.
FACT_SOCKETS = "cpu.cpu_socket(s)"
FACT_TYPE = "hypervisor.type"
FACT_VERSION = "hypervisor.version"
FACT_CLUSTER = "hypervisor.cluster"
FACT_SYSTEM_UUID = "dmi.system.uuid"


def ft_attributes(instance_uuid: str, vsphere_role: int, instance_uuids: Sequence[str],
                  state: str | None = None) -> dict[str, Any]:
    """The FT attributes of one guest instance.

    vSphere numbers roles from 1 (1 = primary); the report numbers them from 0 (0 = primary).
    ``state`` is vSphere's ``runtime.faultToleranceState`` (``running``, ``needSecondary``,
    ``starting``...), sent as ``faultToleranceState`` when the source knows it.
    """
    attrs: dict[str, Any] = {
        "instanceUUID": instance_uuid,
        "ftinfo.role": str(vsphere_role - 1),
        "ftinfo.instanceUUIDs": list(instance_uuids),
    }
    if state:
        attrs["faultToleranceState"] = state
    return attrs


@dataclass(frozen=True)
class Guest:
    """One guest (one VM instance) on a hypervisor."""

    guest_id: str
    state: int = STATE_UNKNOWN
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def sort_key(self) -> tuple[str, str]:
        return (self.guest_id, str(self.attributes.get("instanceUUID", "")))

    def to_json(self) -> dict[str, Any]:
        return {"guestId": self.guest_id, "state": self.state, "attributes": dict(self.attributes)}


@dataclass(frozen=True)
class Hypervisor:
    """One hypervisor with its guests and facts."""

    hypervisor_id: str
    name: str | None = None
    guests: tuple[Guest, ...] = ()
    facts: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hypervisorId": {"hypervisorId": self.hypervisor_id}}
        if self.name is not None:
            out["name"] = self.name
        out["guestIds"] = [g.to_json() for g in sorted(self.guests, key=Guest.sort_key)]
        out["facts"] = dict(sorted(self.facts.items()))
        return out


def merge_hypervisors(groups: Iterable[Iterable[Hypervisor]]) -> list[Hypervisor]:
    """Merge hypervisor lists from several sources; a hypervisor seen twice gets the union of guests.

    Where sources disagree, the later one wins: a guest's state and attributes, a fact, the name
    (unless the later source has none)."""
    seen: dict[str, list[Hypervisor]] = {}
    for group in groups:
        for hv in group:
            seen.setdefault(hv.hypervisor_id, []).append(hv)
    merged = []
    for hid in sorted(seen):
        hvs = seen[hid]
        if len(hvs) == 1:
            merged.append(hvs[0])
            continue
        # One pass over all of them: the same guest (id and instance) in several keeps the last.
        guests = {g.sort_key(): g for hv in hvs for g in hv.guests}
        names = [hv.name for hv in hvs if hv.name is not None]
        facts: dict[str, str] = {}
        for hv in hvs:
            facts.update(hv.facts)
        merged.append(Hypervisor(hypervisor_id=hid, name=names[-1] if names else None,
                                 guests=tuple(guests.values()), facts=facts))
    return merged


def report_body(hypervisors: Iterable[Hypervisor]) -> dict[str, Any]:
    """The JSON body of a hypervisor check-in, sorted for stable output."""
    hvs = sorted(hypervisors, key=lambda h: h.hypervisor_id)
    return {"hypervisors": [h.to_json() for h in hvs]}


def body_hash(body: Mapping[str, Any]) -> str:
    """A stable hash of a report body (independent of key order)."""
    data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()
