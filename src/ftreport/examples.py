"""The use case of Candlepin's fault-tolerance design as report bodies (Report 1 and Report 2).

Report 1: FT VM ``vm1`` runs as primary instance A on hypervisor A and as backup instance B on
hypervisor B. Report 2, after a failover: B is the primary, a new backup C runs on hypervisor C,
and hypervisor A no longer runs the VM. These are the built-in data of the ``fake`` source
(``file = builtin:report1`` / ``builtin:report2``; a fake section without ``file`` uses Report 1).
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = [
    "BUILTIN",
    "HYPERVISOR_A",
    "HYPERVISOR_B",
    "HYPERVISOR_C",
    "INSTANCE_A",
    "INSTANCE_B",
    "INSTANCE_C",
    "REPORT_1",
    "REPORT_2",
    "VM1_UUID",
    "builtin_report",
]

VM1_UUID = "4c4c4544-0056-4d10-8031-b1c04f465631"
INSTANCE_A = "52a0e1b4-0000-4a00-8000-00000000000a"
INSTANCE_B = "52a0e1b4-0000-4b00-8000-00000000000b"
INSTANCE_C = "52a0e1b4-0000-4c00-8000-00000000000c"
HYPERVISOR_A = "4a7e9c10-1111-4aaa-8aaa-aaaaaaaaaaaa"
HYPERVISOR_B = "4a7e9c10-2222-4bbb-8bbb-bbbbbbbbbbbb"
HYPERVISOR_C = "4a7e9c10-3333-4ccc-8ccc-cccccccccccc"


def _facts(uuid: str) -> dict[str, str]:
    return {
        "cpu.cpu_socket(s)": "2",
        "hypervisor.type": "VMware ESXi",
        "hypervisor.version": "7.0.3",
        "hypervisor.cluster": "ft-cluster",
        "dmi.system.uuid": uuid,
    }


def _guest(instance: str, role: str, instances: list[str]) -> dict[str, Any]:
    return {
        "guestId": VM1_UUID,
        "state": 1,
        "attributes": {
            "active": 1,
            "virtWhoType": "esx",
            "instanceUUID": instance,
            "ftinfo.role": role,
            "ftinfo.instanceUUIDs": instances,
        },
    }


def _hypervisor(uuid: str, name: str, guests: list[dict[str, Any]]) -> dict[str, Any]:
    return {"hypervisorId": {"hypervisorId": uuid}, "name": name, "guestIds": guests, "facts": _facts(uuid)}


REPORT_1: dict[str, Any] = {"hypervisors": [
    _hypervisor(HYPERVISOR_A, "hypervisor-a.example.com", [_guest(INSTANCE_A, "0", [INSTANCE_A, INSTANCE_B])]),
    _hypervisor(HYPERVISOR_B, "hypervisor-b.example.com", [_guest(INSTANCE_B, "1", [INSTANCE_A, INSTANCE_B])]),
]}

REPORT_2: dict[str, Any] = {"hypervisors": [
    _hypervisor(HYPERVISOR_A, "hypervisor-a.example.com", []),
    _hypervisor(HYPERVISOR_B, "hypervisor-b.example.com", [_guest(INSTANCE_B, "0", [INSTANCE_B, INSTANCE_C])]),
    _hypervisor(HYPERVISOR_C, "hypervisor-c.example.com", [_guest(INSTANCE_C, "1", [INSTANCE_B, INSTANCE_C])]),
]}

BUILTIN: dict[str, dict[str, Any]] = {"report1": REPORT_1, "report2": REPORT_2}


def builtin_report(name: str) -> dict[str, Any]:
    """A deep copy of a built-in report (``report1`` or ``report2``)."""
    return copy.deepcopy(BUILTIN[name])
