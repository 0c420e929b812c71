"""Prometheus metrics in a file for node_exporter's textfile collector (``[agent] metrics_file``).

Several processes write one file: the heartbeat daemon its ``ftagent_lease_*`` families, each
``checkin`` run its ``ftagent_checkin_*`` and ``ftagent_identity_*`` families.  A writer takes an
exclusive lock beside the file, reads the families others wrote (and its own previous values, so
a one-shot command can keep a counter and the last success time across runs), and replaces the
file atomically with ``0644`` permissions, so the collector never reads a torn file and can read
it under another user.  Rendering uses prometheus_client's exposition code.  Its callers import
this module only when a metrics file is configured (prometheus_client costs about 25 ms to load).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ftagent.atomic import write_atomic

__all__ = ["MetricsFile"]

logger = logging.getLogger(__name__)


class _Families:
    """A collector yielding families parsed from the previous file."""

    def __init__(self, families: Sequence[Any]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Any]:
        yield from self._families


class MetricsFile:
    """One textfile-collector file; this writer owns the families whose names start with ``prefixes``."""

    def __init__(self, path: str | os.PathLike[str], prefixes: Sequence[str]) -> None:
        self.path = Path(path)
        self.prefixes = tuple(prefixes)
        self._previous: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def _owned(self, name: str) -> bool:
        return name.startswith(self.prefixes)

    def _read(self) -> list[Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        try:
            families = list(text_string_to_metric_families(text))
        except (ValueError, TypeError) as exc:
            logger.warning("rewriting unparsable metrics file %s: %s", self.path, exc)
            return []
        kept = []
        for family in families:
            if self._owned(family.name):
                for sample in family.samples:
                    self._previous[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
            else:
                kept.append(family)
        return kept

    def previous(self, sample: str, default: float = 0.0, **labels: str) -> float:
        """The value a sample of ours had in the file (valid inside :meth:`update`)."""
        return self._previous.get((sample, tuple(sorted(labels.items()))), default)

    @contextlib.contextmanager
    def update(self) -> Iterator[Any]:
        """``with mf.update() as registry:`` fill a fresh registry; the file is replaced on exit.

        Failures to write are logged, never raised: monitoring must not break the monitored job.
        """
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            logger.warning("cannot write metrics file %s: %s", self.path, exc.strerror or exc)
            yield CollectorRegistry(auto_describe=True)
            return
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            self._previous = {}
            kept = self._read()
            registry = CollectorRegistry(auto_describe=True)
            yield registry
            registry.register(_Families(kept))
            try:
                write_atomic(self.path, generate_latest(registry), mode=0o644)
            except OSError as exc:
                logger.warning("cannot write metrics file %s: %s", self.path, exc.strerror or exc)
        finally:
            os.close(lock_fd)
