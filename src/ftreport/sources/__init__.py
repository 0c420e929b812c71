"""Sources of hosts and guests: ``esx`` (vCenter), ``libvirt`` and ``fake`` (a JSON file).

Each source module declares its :class:`~ftreport.sources.base.SourceType` (its configuration keys,
how it reads them, its class); :func:`source_type` finds it by name for the configuration and for
:func:`create_source`. A type's module is imported only when a section of that type is read (the
esx module alone costs ~30 ms, a third of ``ftreport -p``'s start with a fake source), and a
binding (pyvmomi, libvirt-python) only when a source of its type runs, so that ftreport starts
without the bindings of the types it does not use.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import SourceError
from ..settings import SourceConfig
from .base import ProgressCallback, Snapshot, Source, SourceType, no_progress

__all__ = [
    "SOURCE_TYPE_NAMES",
    "ProgressCallback",
    "Snapshot",
    "Source",
    "SourceType",
    "create_source",
    "no_progress",
    "source_type",
]

#: The names a section's ``type`` may give.
SOURCE_TYPE_NAMES = ("esx", "libvirt", "fake")


def source_type(name: str) -> SourceType | None:
    """The source type of this name (None: no such type); imports its module on first use."""
    if name == "esx":
        from . import esx

        return esx.SOURCE_TYPE
    if name == "libvirt":
        from . import libvirt

        return libvirt.SOURCE_TYPE
    if name == "fake":
        from . import fake

        return fake.SOURCE_TYPE
    return None


def create_source(config: SourceConfig, *, progress: ProgressCallback = no_progress, **options: Any) -> Source:
    """The source for one configuration section (options are passed to its constructor)."""
    kind = source_type(config.type)
    if kind is None:
        raise SourceError(config.name, f"unknown source type {config.type!r}")
    if kind.binding is not None:
        try:
            importlib.import_module(kind.binding)  # fail here, with a clear message, if it is missing
        except ImportError as exc:
            raise SourceError(config.name, f"the {kind.name} source needs {kind.install}") from exc
    return kind.open(config, progress=progress, **options)
