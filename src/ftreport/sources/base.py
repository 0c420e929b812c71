"""What every source offers: a one-shot collection and a stream of snapshots on change.

A *snapshot* is the complete list of hypervisors (with their guests) a source sees at one moment,
already filtered by the source's host filters. Sources raise :class:`~ftreport.errors.SourceError`
for every failure they expect (unreachable, bad credentials, untrusted certificate...); the caller
decides whether to retry.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..model import Hypervisor
from ..section import Section
from ..settings import SourceConfig

__all__ = ["ProgressCallback", "Snapshot", "Source", "SourceType", "no_progress", "settings_of"]

Snapshot = list[Hypervisor]
ProgressCallback = Callable[[str], None]
_Settings = TypeVar("_Settings")


def no_progress(_text: str) -> None:
    """A progress callback that shows nothing."""


class Source(Protocol):
    """A place hosts and guests are collected from."""

    @property
    def name(self) -> str:
        """The configuration section the source comes from."""
        ...

    def collect(self) -> Snapshot:
        """Connect, collect everything once, disconnect."""
        ...

    def watch(self, stop: threading.Event) -> Iterator[Snapshot]:
        """Yield a first snapshot, then a new one whenever something changes, until stop is set.

        Raises SourceError when the source becomes unusable; the caller reconnects by calling
        watch() again (with backoff).
        """
        ...

    def close(self) -> None:
        """Release connections (safe to call more than once, from another thread)."""
        ...


@dataclass(frozen=True)
class SourceType:
    """What a source module declares: its type name, its own configuration keys and how it reads
    them, and how a source of the type is opened.

    :mod:`ftreport.config` reads the keys every type shares and hands the section to
    ``read_settings``, whose result becomes :attr:`SourceConfig.settings`; ``keys`` lists what
    ``read_settings`` reads, so that other keys can be reported as unknown."""

    name: str
    keys: frozenset[str]
    read_settings: Callable[[Section], object]
    open: Callable[..., Source]  # (config: SourceConfig, *, progress, **options) -> Source
    #: The Python module the source needs (its binding) and how to install it: a missing binding
    #: fails when a section of the type is used, never when ftreport starts.
    binding: str | None = None
    install: str = ""
    #: Whether a section's settings name the machine ftreport runs on rather than a hypervisor
    #: manager (virt-who's "not a hypervisor": a libvirt source without ``server``). Without an
    #: ``owner``, such a section reports its guests as the host's own, to the host's consumer.
    is_local: Callable[[object], bool] = lambda _settings: False


def settings_of(config: SourceConfig, kind: type[_Settings]) -> _Settings:
    """A section's own settings, of its type's settings class (that class's defaults if it has none)."""
    if config.settings is None:
        return kind()
    if not isinstance(config.settings, kind):
        raise TypeError(f"{config.name}: settings {config.settings!r} are not {kind.__name__}")
    return config.settings
