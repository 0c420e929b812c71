"""System facts: ``virt.uuid``, ``virt.is_guest``, hostname, architecture, OS.

All system paths are injectable (:class:`SystemPaths`) so tests can run anywhere.  ``*.facts``
files (JSON objects) in the facts directory override collected facts, in file-name order, as
``/etc/rhsm/facts/*.facts`` do for subscription-manager.

``virt.uuid`` comes from ``/sys/class/dmi/id/product_uuid`` (readable by root only) or
``dmidecode -s system-uuid``; it is reported in lower case.  SMBIOS before 2.6 and some
hypervisors store the first three fields byte-swapped, so :func:`same_virt_uuid` also accepts the
byte-swapped form, as the server does when it matches guests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SystemPaths",
    "collect_facts",
    "facts_digest",
    "normalize_uuid",
    "read_override_facts",
    "read_virt_uuid",
    "same_virt_uuid",
    "uuid_variants",
]

logger = logging.getLogger(__name__)

_BOGUS_UUIDS = {
    "",
    "not settable",
    "not present",
    "not specified",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "03000200-0400-0500-0006-000700080009",
}

_VENDORS = (
    ("vmware", "vmware"),
    ("qemu", "kvm"),
    ("kvm", "kvm"),
    ("red hat", "kvm"),
    ("openstack", "kvm"),
    ("bochs", "kvm"),
    ("xen", "xen"),
    ("virtualbox", "virtualbox"),
    ("innotek", "virtualbox"),
    ("microsoft corporation", "hyperv"),
    ("amazon ec2", "kvm"),
    ("google", "kvm"),
)


@dataclass(frozen=True)
class SystemPaths:
    """Where facts come from; override in tests."""

    dmi_dir: Path = Path("/sys/class/dmi/id")
    os_release: Path = Path("/etc/os-release")
    cpuinfo: Path = Path("/proc/cpuinfo")
    meminfo: Path = Path("/proc/meminfo")
    #: ``dmidecode`` command, or ``None`` to never run it.
    dmidecode: str | None = "dmidecode"
    hostname: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def normalize_uuid(value: str) -> str:
    """Lower case, surrounding whitespace and braces removed."""
    return value.strip().strip("{}").lower()


def uuid_variants(value: str) -> set[str]:
    """The UUID and its form with the first three fields byte-swapped (SMBIOS byte order)."""
    u = normalize_uuid(value)
    out = {u}
    parts = u.split("-")
    if len(parts) == 5 and [len(p) for p in parts] == [8, 4, 4, 4, 12]:

        def swap(h: str) -> str:
            return "".join(reversed([h[i : i + 2] for i in range(0, len(h), 2)]))

        out.add("-".join([swap(parts[0]), swap(parts[1]), swap(parts[2]), parts[3], parts[4]]))
    return out


def same_virt_uuid(a: str | None, b: str | None) -> bool:
    """True if ``a`` and ``b`` name the same machine (case and SMBIOS byte order ignored)."""
    if not a or not b:
        return False
    return bool(uuid_variants(a) & uuid_variants(b))


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def read_virt_uuid(paths: SystemPaths) -> str | None:
    """The BIOS UUID of this machine, or ``None`` when it cannot be read."""
    value = _read(paths.dmi_dir / "product_uuid")
    if value and normalize_uuid(value) not in _BOGUS_UUIDS:
        return normalize_uuid(value)
    if paths.dmidecode and shutil.which(paths.dmidecode) and os.geteuid() == 0:
        try:
            out = subprocess.run(
                [paths.dmidecode, "-s", "system-uuid"], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError) as exc:
            logger.debug("dmidecode failed: %s", exc)
        else:
            lines = [ln for ln in out.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
            if out.returncode == 0 and lines and normalize_uuid(lines[-1]) not in _BOGUS_UUIDS:
                return normalize_uuid(lines[-1])
    return None


def _host_type(paths: SystemPaths) -> str | None:
    text = " ".join(
        (_read(paths.dmi_dir / name) or "").lower() for name in ("sys_vendor", "product_name", "bios_vendor")
    )
    for needle, kind in _VENDORS:
        if needle in text:
            if kind == "hyperv" and "virtual" not in text:
                continue
            return kind
    return None


def _is_guest(paths: SystemPaths, host_type: str | None) -> bool:
    if host_type is not None:
        return True
    cpuinfo = _read(paths.cpuinfo) or ""
    for line in cpuinfo.splitlines():
        if line.startswith("flags") and " hypervisor" in f" {line.split(':', 1)[-1]}":
            return True
    return False


def _os_release(paths: SystemPaths) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (_read(paths.os_release) or "").splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip('"').strip("'")
    return out


def _memtotal(paths: SystemPaths) -> str | None:
    for line in (_read(paths.meminfo) or "").splitlines():
        if line.startswith("MemTotal:"):
            return line.split()[1]
    return None


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, sort_keys=True)


def read_override_facts(facts_dir: str | os.PathLike[str] | None) -> dict[str, str]:
    """Facts from ``*.facts`` JSON files in ``facts_dir`` (later files win); bad files are skipped."""
    if facts_dir is None:
        return {}
    directory = Path(facts_dir)
    if not directory.is_dir():
        return {}
    out: dict[str, str] = {}
    for path in sorted(directory.glob("*.facts")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            logger.warning("ignoring facts file %s: %s", path, exc)
            continue
        if not isinstance(data, dict):
            logger.warning("ignoring facts file %s: not a JSON object", path)
            continue
        for key, value in data.items():
            if value is not None:
                out[str(key)] = _stringify(value)
    return out


def collect_facts(
    facts_dir: str | os.PathLike[str] | None = None, *, paths: SystemPaths | None = None
) -> dict[str, str]:
    """Collected system facts with the facts directory's overrides applied."""
    p = paths or SystemPaths()
    facts: dict[str, str] = {}
    host_type = _host_type(p)
    facts["virt.is_guest"] = "true" if _is_guest(p, host_type) else "false"
    if host_type:
        facts["virt.host_type"] = host_type
    virt_uuid = read_virt_uuid(p)
    if virt_uuid:
        facts["virt.uuid"] = virt_uuid
    facts["network.hostname"] = p.hostname or socket.gethostname()
    uname = platform.uname()
    facts["uname.machine"] = uname.machine
    facts["uname.sysname"] = uname.system
    facts["uname.release"] = uname.release
    osr = _os_release(p)
    if osr:
        facts["distribution.name"] = osr.get("NAME", "")
        facts["distribution.version"] = osr.get("VERSION_ID", "")
        facts["distribution.id"] = osr.get("ID", "")
    facts["cpu.cpu(s)"] = str(os.cpu_count() or 1)
    mem = _memtotal(p)
    if mem:
        facts["memory.memtotal"] = mem
    facts.update(p.extra)
    facts.update(read_override_facts(facts_dir))
    return facts


def facts_digest(data: Any) -> str:
    """A stable digest of facts (or any JSON value) to detect changes between check-ins."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
