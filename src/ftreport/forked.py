"""One-shot collection spread over worker processes, as virt-who runs each configuration in its own.

Decoding a vCenter's answer is CPU work, and Python runs it on one core at a time: ten 4,500-VM
vCenters collected by threads of one process need ten times the CPU of one, on a single core. With
several processes the sources are dealt out to them round robin. The workers are forked from this
process, so the source factory, the configuration and the logging set up here carry over as they
are; each worker collects its share with threads and sends back each snapshot as soon as its
source is done. Progress texts are relayed to the parent's display as they come. A worker that
dies leaves an error for each of its sources it had not delivered, never a hang: the parent reads
until the worker's end of the pipe is closed.
"""

from __future__ import annotations

import copyreg
import io
import logging
import multiprocessing
import os
import pickle
import threading
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from types import MappingProxyType
from typing import Any, Optional, Protocol

from .settings import SourceConfig
from .sources import ProgressCallback, Snapshot

__all__ = ["Collect", "Deliver", "ProgressSink", "collect_forked", "usable_cpus"]

log = logging.getLogger(__name__)

Results = tuple[dict[str, Snapshot], dict[str, str]]


class ProgressSink(Protocol):
    """What a collection reports its progress to (:class:`ftreport.progress.Progress`)."""

    def callback(self, name: str) -> ProgressCallback: ...

    def finish(self, name: str, text: str = "done") -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


#: Hands over one source's snapshot as soon as it is collected (instead of in the results).
Deliver = Callable[[str, Snapshot], None]

Collect = Callable[[Sequence[SourceConfig], Optional[ProgressSink], Optional[Deliver]], Results]


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, not the machine's count)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


def _readonly(items: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(items)


def _reduce_readonly(proxy: Mapping[str, Any]) -> tuple[Any, tuple[dict[str, Any]]]:
    return _readonly, (dict(proxy),)


def _dumps(message: object) -> bytes:
    """Pickle a message; guests' read-only attributes (shared by most guests of a vCenter) are
    pickled once per message and stay shared when loaded."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {**copyreg.dispatch_table, MappingProxyType: _reduce_readonly}
    pickler.dump(message)
    return buffer.getvalue()


class _PipeProgress:
    """A worker's progress, sent to the parent."""

    def __init__(self, send: Callable[[object], None]) -> None:
        self._send = send

    def callback(self, name: str) -> ProgressCallback:
        def report(text: str) -> None:
            self._send(("progress", name, text))

        self._send(("waiting", name))
        return report

    def finish(self, name: str, text: str = "done") -> None:
        self._send(("finish", name, text))

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def _worker(group: Sequence[SourceConfig], collect: Collect, writer: Connection, relay: bool) -> None:
    lock = threading.Lock()

    def send(message: object) -> None:
        data = _dumps(message)
        with lock:
            writer.send_bytes(data)

    def deliver(name: str, snapshot: Snapshot) -> None:
        # Each snapshot is sent when its source is done: the parent loads it while the other
        # sources are still being collected, not all of them at the end.
        send(("snapshot", name, snapshot))

    try:
        try:
            results = collect(group, _PipeProgress(send) if relay else None, deliver)
        except BaseException as exc:  # report, rather than lose, the sources of a failing worker
            log.exception("collection worker failed")
            results = ({}, {cfg.name: f"{cfg.name}: {type(exc).__name__}: {exc}" for cfg in group})
        send(("done", *results))
    finally:
        writer.close()


def _relay(reader: Connection, progress: ProgressSink | None, into: list[Results]) -> None:
    snapshots: dict[str, Snapshot] = {}
    try:
        while True:
            kind, *rest = pickle.loads(reader.recv_bytes())  # noqa: S301 - from our own forked worker
            if kind == "snapshot":
                snapshots[rest[0]] = rest[1]
                continue
            if kind == "done":
                into.append(({**snapshots, **rest[0]}, rest[1]))
                return
            if progress is None:
                continue
            if kind == "waiting":
                progress.callback(rest[0])
            elif kind == "progress":
                progress.callback(rest[0])(rest[1])
            elif kind == "finish":
                progress.finish(rest[0], rest[1])
    except EOFError:
        # The worker ended without its final word: what it delivered stands, the rest of its
        # sources are reported as failed.
        into.append((snapshots, {}))
    finally:
        reader.close()


def collect_forked(configs: Sequence[SourceConfig], processes: int, collect: Collect,
                   progress: ProgressSink | None) -> Results:
    """Collect ``configs`` with ``collect`` in ``processes`` processes (this one included)."""
    groups = [list(configs[i::processes]) for i in range(processes)]
    context = multiprocessing.get_context("fork")
    forked = []
    # Every worker is forked before any thread is started here: forking a process that runs
    # threads can copy a lock some thread holds, and deadlock the child.
    for n, group in enumerate(groups[1:], 1):
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(target=_worker, args=(group, collect, writer, progress is not None),
                                  name=f"ftreport-collect-{n}", daemon=True)
        process.start()
        writer.close()  # the worker's copy stays open: EOF here means the worker is gone
        forked.append((group, process, reader))
    workers = []
    for group, process, reader in forked:
        results: list[Results] = []
        thread = threading.Thread(target=_relay, args=(reader, progress, results), name=f"relay-{process.name}",
                                  daemon=True)
        thread.start()
        workers.append((group, process, thread, results))
    log.debug("collecting %d sources in %d processes", len(configs), processes)
    snapshots, errors = collect(groups[0], progress, None)
    for group, process, thread, results in workers:
        thread.join()
        process.join()
        for got, failed in results:
            snapshots.update(got)
            errors.update(failed)
        for cfg in group:
            if cfg.name in snapshots or cfg.name in errors:
                continue
            errors[cfg.name] = (f"{cfg.name}: the collection process ended without a result "
                                f"(exit code {process.exitcode})")
            log.error("%s", errors[cfg.name])
    return snapshots, errors
