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
    """Split a virt-who style pattern list, with virt-who's meaning.

    Items are separated by commas; a quoted part (single or double quotes) is taken as is, commas
    and spaces included; outside quotes whitespace is dropped, and a backslash before a comma, a
    quote, a space or a backslash takes it literally (before any other character it is kept, unlike
    virt-who, so that regular expressions such as ``\\d`` work). An unterminated quote raises
    ValueError."""
    out: list[str] = []
    item: list[str] = []
    quote: str | None = None
    chars = iter(value)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            # virt-who takes any escaped character literally; a backslash before an ordinary
            # character is kept here, so regular expressions such as \d keep working.
            item.append(nxt if nxt in ",'\"\\" or nxt.isspace() else ch + nxt)
        elif quote is not None:
            if ch == quote:
                quote = None
            else:
                item.append(ch)
        elif ch in "'\"":
            quote = ch
        elif ch == ",":
            out.append("".join(item))
            item = []
        elif not ch.isspace():
            item.append(ch)
    if quote is not None:
        kind = "double" if quote == '"' else "single"
        raise ValueError(f"unterminated {kind} quote")
    out.append("".join(item))
    return tuple(p for p in out if p)


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
    kind: str = ""  # virt-who's filter_type: "wildcards", "regex", or "" (either)

    def _matches(self, patterns: Sequence[str], values: Iterable[str]) -> bool:
        vals = [v for v in values if v]
        for pattern in patterns:
            regex = _compile(pattern) if self.kind != "wildcards" else None
            for v in vals:
                if self.kind != "regex" and fnmatch.fnmatchcase(v.lower(), pattern.lower()):
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
