"""Host filters (virt-who's ``filter_hosts`` / ``exclude_hosts``).

A filter is a comma-separated list of patterns. A pattern matches a host when it matches the
host's hypervisor id or its name, either as a shell wildcard (``esx-*.example.com``) or as a
regular expression matching the whole value (``esx-[0-9]+``). Patterns may be quoted.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .model import Hypervisor

__all__ = ["HostFilter", "parse_patterns"]


def parse_patterns(value: str) -> tuple[str, ...]:
    """Split a virt-who style pattern list: comma separated, optionally quoted items."""
    out = []
    for item in value.split(","):
        item = item.strip()
        if len(item) >= 2 and item[0] == item[-1] and item[0] in "'\"":
            item = item[1:-1].strip()
        if item:
            out.append(item)
    return tuple(out)


def _compile(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error:
        return None


@dataclass(frozen=True)
class HostFilter:
    """Include and exclude patterns; an empty include list includes every host."""

    include: Sequence[str] = ()
    exclude: Sequence[str] = ()

    def _matches(self, patterns: Sequence[str], values: Iterable[str]) -> bool:
        vals = [v for v in values if v]
        for pattern in patterns:
            regex = _compile(pattern)
            for v in vals:
                if fnmatch.fnmatchcase(v.lower(), pattern.lower()):
                    return True
                if regex is not None and regex.fullmatch(v):
                    return True
        return False

    def allows(self, *values: str | None) -> bool:
        """Whether a host known by these values (id, name...) passes the filter."""
        vals = [v for v in values if v]
        if self.include and not self._matches(self.include, vals):
            return False
        return not (self.exclude and self._matches(self.exclude, vals))

    def apply(self, hypervisors: Iterable[Hypervisor]) -> list[Hypervisor]:
        if not self.include and not self.exclude:
            return list(hypervisors)
        return [h for h in hypervisors if self.allows(h.hypervisor_id, h.name)]
