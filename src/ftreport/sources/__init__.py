"""Sources of hosts and guests: ``esx`` (vCenter), ``libvirt`` and ``fake`` (a JSON file).

:func:`create_source` builds the source a configuration section describes; pyvmomi and
libvirt-python are imported only when a section of that type is used.
"""

from __future__ import annotations

from typing import Any

from ..config import SourceConfig
from ..errors import SourceError
from .base import ProgressCallback, Snapshot, Source, no_progress

__all__ = ["ProgressCallback", "Snapshot", "Source", "create_source", "no_progress"]


def create_source(config: SourceConfig, *, progress: ProgressCallback = no_progress, **options: Any) -> Source:
    """The source for one configuration section (options are passed to its constructor)."""
    if config.type == "esx":
        try:
            import pyVmomi  # noqa: F401 - fail here, with a clear message, if it is missing

            from .esx import EsxSource
        except ImportError as exc:
            raise SourceError(config.name, "the esx source needs pyvmomi (pip install 'ftagent[vmware]')") from exc
        return EsxSource(config, progress=progress, **options)
    if config.type == "libvirt":
        try:
            import libvirt  # noqa: F401
        except ImportError as exc:
            raise SourceError(config.name,
                              "the libvirt source needs libvirt-python (pip install 'ftagent[libvirt]')") from exc
        from .libvirt import LibvirtSource

        return LibvirtSource(config, progress=progress, **options)
    if config.type == "fake":
        from .fake import FakeSource

        return FakeSource(config, **options)
    raise SourceError(config.name, f"unknown source type {config.type!r}")
