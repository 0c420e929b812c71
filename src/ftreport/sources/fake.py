"""The ``fake`` source: hosts and guests read from a JSON file in report format.

The file holds a check-in body, ``{"hypervisors": [...]}``; virt-who's fake format (``uuid`` and
``guests`` instead of ``hypervisorId`` and ``guestIds``) is read too. ``file = builtin:report1``
(the default) or ``builtin:report2`` use the design's use case (see :mod:`ftreport.examples`).
In daemon mode the file is re-read whenever its modification time or size changes.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SourceError
from ..examples import BUILTIN, builtin_report
from ..filters import HostFilter
from ..model import STATE_UNKNOWN, Guest, Hypervisor
from ..section import Section
from ..settings import SourceConfig
from .base import ProgressCallback, Snapshot, SourceType, no_progress, settings_of

__all__ = ["KEYS", "SOURCE_TYPE", "FakeSettings", "FakeSource", "fake_settings", "parse_report", "read_settings"]

log = logging.getLogger(__name__)

#: The section keys of a fake source (besides those every source has; see ftreport.conf(5)).
KEYS = frozenset({"file", "is_hypervisor"})


@dataclass(frozen=True)
class FakeSettings:
    """A fake section's own keys: the report file (or ``builtin:NAME``)."""

    file: str = "builtin:report1"


def read_settings(sec: Section) -> FakeSettings:
    """A fake section's keys; raises ConfigError naming the key at fault."""
    path = sec.get("file") or None
    if path and not path.startswith("builtin:") and not Path(path).is_file():
        raise sec.error("file", f"no such file: {path}")
    if not sec.flag("is_hypervisor", True):
        raise sec.error("is_hypervisor", "only hypervisor reports (is_hypervisor=true) are supported")
    return FakeSettings(file=path or FakeSettings.file)


def fake_settings(config: SourceConfig) -> FakeSettings:
    """The fake settings of a section (the defaults when it has none)."""
    return settings_of(config, FakeSettings)


def _hypervisor_id(item: Mapping[str, Any]) -> str:
    hid = item.get("hypervisorId", item.get("uuid"))
    if isinstance(hid, Mapping):
        hid = hid.get("hypervisorId")
    if not isinstance(hid, str) or not hid:
        raise ValueError("a hypervisor without hypervisorId (or uuid)")
    return hid


def _guest(item: Any) -> Guest:
    if isinstance(item, str):
        return Guest(item)
    if not isinstance(item, Mapping):
        raise ValueError(f"a guest must be an object, not {type(item).__name__}")
    gid = item.get("guestId")
    if not isinstance(gid, str) or not gid:
        raise ValueError("a guest without guestId")
    state = item.get("state", STATE_UNKNOWN)
    if not isinstance(state, int):
        raise ValueError(f"guest {gid}: state must be an integer")
    attrs = item.get("attributes", {})
    if not isinstance(attrs, Mapping):
        raise ValueError(f"guest {gid}: attributes must be an object")
    return Guest(gid, state, dict(attrs))


def parse_report(data: Any) -> Snapshot:
    """Hypervisors from a report body (ours or virt-who's fake format)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("hypervisors"), list):
        raise ValueError('expected an object with a "hypervisors" list')
    out: Snapshot = []
    for item in data["hypervisors"]:
        if not isinstance(item, Mapping):
            raise ValueError("each hypervisor must be an object")
        guests = item.get("guestIds", item.get("guests", []))
        if not isinstance(guests, list):
            raise ValueError("guestIds must be a list")
        facts = item.get("facts", {})
        if not isinstance(facts, Mapping):
            raise ValueError("facts must be an object")
        name = item.get("name")
        out.append(Hypervisor(
            hypervisor_id=_hypervisor_id(item),
            name=name if isinstance(name, str) else None,
            guests=tuple(_guest(g) for g in guests),
            facts={str(k): str(v) for k, v in facts.items()},
        ))
    return out


class FakeSource:
    """Reads a report-format JSON file (or a built-in report)."""

    def __init__(self, config: SourceConfig, *, poll: float = 0.5,
                 read: Callable[[Path], bytes] | None = None, progress: ProgressCallback = no_progress) -> None:
        # (progress: nothing to show, a file is read at once)
        self._config = config
        self._poll = poll
        self._read = read or Path.read_bytes
        self._filter: HostFilter = config.host_filter
        spec = fake_settings(config).file
        self._builtin: str | None = None
        self._path: Path | None = None
        if spec.startswith("builtin:"):
            name = spec.split(":", 1)[1]
            if name not in BUILTIN:
                raise SourceError(config.name, f"no built-in report {name!r} (have {', '.join(BUILTIN)})")
            self._builtin = name
        else:
            self._path = Path(spec)

    @property
    def name(self) -> str:
        return self._config.name

    def _load(self) -> Snapshot:
        if self._builtin is not None:
            return self._filter.apply(parse_report(builtin_report(self._builtin)))
        assert self._path is not None
        try:
            raw = self._read(self._path)
        except OSError as exc:
            raise SourceError(self.name, f"cannot read {self._path}: {exc.strerror or exc}") from exc
        try:
            data = json.loads(raw)
            return self._filter.apply(parse_report(data))
        except ValueError as exc:
            raise SourceError(self.name, f"{self._path}: {exc}") from exc

    def _stamp(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            st = self._path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def collect(self) -> Snapshot:
        return self._load()

    def watch(self, stop: threading.Event) -> Iterator[Snapshot]:
        stamp = self._stamp()
        yield self._load()
        while not stop.wait(self._poll):
            now = self._stamp()
            if now == stamp:
                continue
            stamp = now
            try:
                snap = self._load()
            except SourceError as exc:
                # A half-written or broken file: keep the last good snapshot until it changes again.
                log.warning("%s; keeping the previous contents", exc)
                continue
            log.info("%s: %s changed, re-read it", self.name, self._path)
            yield snap

    def close(self) -> None:
        pass


SOURCE_TYPE = SourceType("fake", KEYS, read_settings, FakeSource)
