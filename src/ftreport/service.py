"""Running ftreport: one-shot collection, --print, --status, and the daemon loop.

Sources run concurrently, each in its own thread; one failing source never stops the others.
Their latest snapshots meet in :class:`~ftreport.snapshots.Snapshots`. Reports are merged per destination (same
server, owner and credentials) and checked in by the daemon loop, which

- sends a full report at start and at least every ``interval`` seconds, and in between whenever
  the report differs from the last one the server accepted (:mod:`ftreport.delivery`),
- backs off on failures and honours ``Retry-After``, always sending the *newest* report when the
  server is back (older unsent reports are simply superseded),
- reloads its configuration on request (SIGHUP) and stops cleanly (SIGTERM),
- tells systemd it is alive (``WATCHDOG=1``) from the loop itself, each time round and between
  the polls of a check-in job, when the unit sets ``WatchdogSec``: a loop wedged in a call that
  never returns stops the pings, and systemd kills and restarts the daemon.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from ftagent.sdnotify import Notifier, watchdog_interval

from .config import no_sources_error
from .delivery import Delivery
from .encoding import EncodedReport, ReportEncoder, encode_guest_list
from .errors import ConfigError, FtreportError, SendError, SourceError
from .forked import Deliver, ProgressSink, collect_forked, usable_cpus
from .logfiles import source_context
from .metrics import ReportMetrics
from .model import merge_hypervisors
from .progress import Progress
from .sender import ConnectionFactory, Destination, default_connection_factory
from .settings import Config, ServerConfig, SourceConfig
from .snapshots import Snapshots, counts
from .sources import ProgressCallback, Snapshot, Source, create_source, no_progress

__all__ = [
    "Reporter",
    "SourceFactory",
    "SourceWorker",
    "collect_all",
    "run_oneshot",
    "run_status",
]

log = logging.getLogger(__name__)

SourceFactory = Callable[..., Source]

# A delivery's calls: each has this timeout, and is tried up to this many times (the connection's retries).
_CALL_TIMEOUT = 30.0
_CALL_ATTEMPTS = 3


class SourceWorker(threading.Thread):
    """Runs one source's watch loop, reconnecting with exponential backoff."""

    def __init__(self, source: Source, snapshots: Snapshots, *, max_backoff: float = 60.0,
                 min_backoff: float = 0.5, on_first: Callable[[str], None] | None = None) -> None:
        super().__init__(name=f"source-{source.name}", daemon=True)
        self.source = source
        self.snapshots = snapshots
        self.stop_event = threading.Event()
        self._max = max_backoff
        self._min = min(min_backoff, max_backoff)
        self._on_first = on_first

    def run(self) -> None:
        with source_context(self.source.name):
            self._run()

    def _run(self) -> None:
        delay = self._min
        first = True
        while not self.stop_event.is_set():
            try:
                for snapshot in self.source.watch(self.stop_event):
                    if self.snapshots.publish(self.source.name, snapshot):
                        hvs, guests = counts(snapshot)
                        log.info("%s: %d hypervisors, %d guests", self.source.name, hvs, guests)
                    if first and self._on_first is not None:
                        self._on_first(self.source.name)
                    first = False
                    delay = self._min
                    if self.stop_event.is_set():
                        break
            except SourceError as exc:
                log.error("%s; retrying in %.1f s", exc, delay)
                self.snapshots.fail(self.source.name, str(exc))
            except Exception as exc:  # a bug in a source must not kill the daemon
                log.exception("%s: unexpected failure; retrying in %.1f s", self.source.name, delay)
                self.snapshots.fail(self.source.name, f"{self.source.name}: {type(exc).__name__}: {exc}")
            if first and self._on_first is not None:
                self._on_first(self.source.name)
            if self.stop_event.wait(delay):
                break
            delay = min(delay * 2, self._max)
        try:
            self.source.close()
        except Exception:
            log.debug("%s: close failed", self.source.name, exc_info=True)

    def stop(self) -> None:
        self.stop_event.set()


def _make_sources(configs: Sequence[SourceConfig], factory: SourceFactory,
                  progress: ProgressSink | None) -> tuple[list[Source], dict[str, str]]:
    sources: list[Source] = []
    errors: dict[str, str] = {}
    for cfg in configs:
        callback: ProgressCallback = progress.callback(cfg.name) if progress else no_progress
        try:
            sources.append(factory(cfg, progress=callback))
        except SourceError as exc:
            log.error("%s", exc)
            errors[cfg.name] = str(exc)
    return sources, errors


def collect_all(configs: Sequence[SourceConfig], *, factory: SourceFactory = create_source,
                progress: ProgressSink | None = None,
                processes: int = 0) -> tuple[dict[str, Snapshot], dict[str, str]]:
    """Collect every source once, concurrently. Returns (snapshots, errors) by source name.

    ``processes``: how many processes share the work (0: one per usable CPU, up to one per esx
    source, when there are two esx sources or more, esx sources being the ones that cost CPU; and
    only while this process runs no other thread: forking a threaded process can deadlock the
    child, so a program that imports ftreport and runs threads gets threads unless it asks)."""
    if processes <= 0:
        esx = sum(1 for cfg in configs if cfg.type == "esx")
        alone = threading.active_count() == 1
        processes = min(usable_cpus(), esx) if esx > 1 and alone else 1
    processes = max(1, min(processes, len(configs)))
    if processes == 1:
        return _collect_threads(configs, factory, progress)
    return collect_forked(configs, processes,
                          lambda group, sink, deliver: _collect_threads(group, factory, sink, deliver), progress)


def _collect_threads(configs: Sequence[SourceConfig], factory: SourceFactory, progress: ProgressSink | None,
                     deliver: Deliver | None = None) -> tuple[dict[str, Snapshot], dict[str, str]]:
    """Collect sources once, each in a thread of this process (``deliver``: hand each snapshot
    over when it is done, instead of returning it)."""
    sources, errors = _make_sources(configs, factory, progress)
    results: dict[str, Snapshot] = {}
    lock = threading.Lock()

    def work(source: Source) -> None:
        with source_context(source.name):
            _work(source)

    def _work(source: Source) -> None:
        started = time.monotonic()
        try:
            snap = source.collect()
        except SourceError as exc:
            with lock:
                errors[source.name] = str(exc)
            log.error("%s", exc)
            if progress:
                progress.finish(source.name, "failed")
            return
        except Exception as exc:
            with lock:
                errors[source.name] = f"{source.name}: {type(exc).__name__}: {exc}"
            log.exception("%s: unexpected failure", source.name)
            return
        hvs, guests = counts(snap)
        log.info("%s: %d hypervisors, %d guests (%.2f s)", source.name, hvs, guests, time.monotonic() - started)
        if progress:
            progress.finish(source.name, f"{hvs} hypervisors, {guests} guests")
        if deliver is not None:
            deliver(source.name, snap)
            return
        with lock:
            results[source.name] = snap

    if progress:
        progress.start()
    try:
        if len(sources) == 1:
            work(sources[0])  # no thread needed (and cheaper for big inventories)
        else:
            threads = [threading.Thread(target=work, args=(s,), name=f"collect-{s.name}", daemon=True)
                       for s in sources]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        if progress:
            progress.stop()
    return results, errors


def _group_destinations(configs: Sequence[SourceConfig]) -> dict[str, tuple[ServerConfig, list[str]]]:
    groups: dict[str, tuple[ServerConfig, list[str]]] = {}
    for cfg in configs:
        server = cfg.require_destination()
        groups.setdefault(server.key, (server, []))[1].append(cfg.name)
    return groups


def _encode(server: ServerConfig, encoder: ReportEncoder, snaps: Sequence[Snapshot]) -> EncodedReport:
    """The report for a destination: a hypervisor check-in, or the guest list of the host's consumer."""
    if server.guests_of:
        return encode_guest_list(merge_hypervisors(snaps))
    return encoder.encode(merge_hypervisors(snaps))


def run_oneshot(config: Config, *, print_to: TextIO | None = None,
                factory: SourceFactory = create_source,
                connection_factory: ConnectionFactory = default_connection_factory,
                progress: Progress | None = None) -> int:
    """Collect once; print the merged body, or check it in and wait for the job. Returns an exit code."""
    if not config.sources:
        raise no_sources_error(config.files)
    groups = {} if print_to is not None else _group_destinations(config.sources)
    snapshots, errors = collect_all(config.sources, factory=factory, progress=progress,
                                    processes=config.global_.processes)
    metrics = ReportMetrics(None if print_to is not None else config.global_.metrics_file)
    for name in snapshots:
        metrics.collected(name)
    for name in errors:
        metrics.source_error(name)
    try:
        return _deliver_once(config, groups, snapshots, errors, metrics, connection_factory, print_to)
    finally:
        metrics.write()


def _deliver_once(config: Config, groups: dict[str, tuple[ServerConfig, list[str]]],
                  snapshots: dict[str, Snapshot], errors: dict[str, str], metrics: ReportMetrics,
                  connection_factory: ConnectionFactory, print_to: TextIO | None) -> int:
    if print_to is not None:
        if not snapshots:
            log.error("no source could be collected; nothing to print")
            return 1
        data = ReportEncoder(keep=False).encode(
            merge_hypervisors(snapshots[c.name] for c in config.sources if c.name in snapshots), digest=False).data
        snapshots.clear()  # only the text is needed now
        buffer = getattr(print_to, "buffer", None)
        if buffer is not None:  # the bytes as they are, without a decoded copy
            print_to.flush()
            buffer.write(data + b"\n")
            buffer.flush()
        else:
            print_to.write(data.decode() + "\n")
            print_to.flush()
        return 1 if errors else 0
    failed = bool(errors)
    for server, names in groups.values():
        snaps = [snapshots[n] for n in names if n in snapshots]
        if not snaps:
            log.error("nothing to report to %s: every source failed", server.label)
            failed = True
            continue
        dest = Destination(server, reporter_id=config.global_.reporter_id, state_dir=config.global_.state_dir,
                           connection_factory=connection_factory, job_timeout=config.global_.job_timeout)
        delivery = Delivery(dest, metrics, interval=config.global_.interval)
        try:
            report = _encode(server, ReportEncoder(keep=False), snaps)
            delivery.deliver(report, {n: counts(snapshots[n]) for n in names if n in snapshots})
        except SendError as exc:
            log.error("%s", exc)
            metrics.delivery_failed(names)
            failed = True
        finally:
            delivery.close()
    return 1 if failed else 0


def run_status(config: Config, *, factory: SourceFactory = create_source,
               connection_factory: ConnectionFactory = default_connection_factory) -> tuple[int, dict[str, Any]]:
    """Check every source and server; returns (exit code, result)."""
    snapshots, errors = collect_all(config.sources, factory=factory)
    result: dict[str, Any] = {"sources": {}, "servers": {}}
    ok = True
    for cfg in config.sources:
        if cfg.name in snapshots:
            hvs, guests = counts(snapshots[cfg.name])
            result["sources"][cfg.name] = {"ok": True, "type": cfg.type, "hypervisors": hvs, "guests": guests}
        else:
            ok = False
            result["sources"][cfg.name] = {"ok": False, "type": cfg.type, "error": errors.get(cfg.name, "failed")}
    seen: set[str] = set()
    for cfg in config.sources:
        try:
            server = cfg.require_destination()
        except ConfigError as exc:
            ok = False
            result["servers"][cfg.name] = {"ok": False, "error": str(exc)}
            continue
        if server.key in seen:
            continue
        seen.add(server.key)
        dest = Destination(server, reporter_id=config.global_.reporter_id, state_dir=config.global_.state_dir,
                           connection_factory=connection_factory, timeout=10.0)
        label = dest.label + (f" as {server.username}" if server.username else "")
        accepted = dest.record.accepted_at()
        last = {"last_accepted": accepted,
                "last_accepted_age": None if accepted is None else round(max(0.0, time.time() - accepted), 1)}
        try:
            status = dest.status()
            dest.check_owner()
            result["servers"][label] = {"ok": True, "version": status.get("version"), **last}
        except SendError as exc:
            ok = False
            result["servers"][label] = {"ok": False, "error": str(exc), **last}
        finally:
            dest.close()
    return (0 if ok else 1), result


@dataclass
class _DestinationState:
    delivery: Delivery
    sources: list[str]
    next_attempt: float = 0.0
    backoff: float = 0.0
    failing: bool = False
    # The snapshots the last report was encoded from (the very objects) and that report: the loop
    # wakes every half second, and even comparing a 45,000-guest inventory each time would eat the
    # CPU the sources need to see the next change. The encoder re-encodes only changed hypervisors.
    encoded: tuple[list[Snapshot], EncodedReport] | None = None
    encoder: ReportEncoder = field(default_factory=ReportEncoder)
    pending: list[str] = field(default_factory=list)  # sources left out of the last report


class Reporter:
    """The daemon: source workers publishing snapshots, and a loop delivering reports.

    :meth:`run` is :meth:`start`, :meth:`step` until :meth:`stop`, then :meth:`close`; a test can
    call those itself and drive the loop one cycle at a time (``with Reporter(...) as rep:``
    starts and closes)."""

    def __init__(self, config: Config, *, factory: SourceFactory = create_source,
                 connection_factory: ConnectionFactory = default_connection_factory,
                 notifier: Notifier | None = None, progress: Progress | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.metrics = ReportMetrics(config.global_.metrics_file)
        self.snapshots = Snapshots(self.metrics)
        self._factory = factory
        self._connection_factory = connection_factory
        self._notifier = notifier or Notifier()
        self._watchdog = watchdog_interval() if self._notifier.enabled else None
        self._pinged = float("-inf")  # when WATCHDOG=1 last went, on the monotonic clock
        self._progress = progress
        self._clock = clock
        self._workers: dict[str, SourceWorker] = {}
        self._dests: dict[str, _DestinationState] = {}
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._load: Callable[[], Config] | None = None
        self._pending_first: set[str] = set()
        self._seen = -1  # the snapshots' version the last cycle delivered

    # -- control (safe from signal handlers and other threads) --------------------------

    def stop(self) -> None:
        self._stop.set()
        self.snapshots.poke()

    def request_reload(self) -> None:
        self._reload.set()
        self.snapshots.poke()

    # -- setup ------------------------------------------------------------------------------

    def _first_done(self, name: str) -> None:
        self._pending_first.discard(name)
        if self._progress is not None:
            self._progress.finish(name)
            if not self._pending_first:
                self._progress.stop()

    def _start_sources(self, configs: Sequence[SourceConfig]) -> None:
        sources, errors = _make_sources(configs, self._factory, self._progress)
        for name, error in errors.items():
            self.snapshots.fail(name, error)
        self._pending_first = {s.name for s in sources}
        for source in sources:
            worker = SourceWorker(source, self.snapshots, max_backoff=self.config.global_.max_backoff,
                                  on_first=self._first_done)
            self._workers[source.name] = worker
            worker.start()
        if self._progress is not None and sources:
            self._progress.start()

    def _stop_sources(self) -> None:
        for worker in self._workers.values():
            worker.stop()
        for worker in self._workers.values():
            worker.join(timeout=10)
            if worker.is_alive():
                log.warning("source %s did not stop within 10 s", worker.source.name)
        self.snapshots.forget(list(self._workers))
        self._workers.clear()
        if self._progress is not None:
            self._progress.stop()

    def _setup_destinations(self, configs: Sequence[SourceConfig]) -> None:
        old = self._dests
        self._dests = {}
        for key, (server, names) in _group_destinations(configs).items():
            prev = old.pop(key, None)
            if prev is not None:
                prev.sources = names
                prev.delivery.interval = self.config.global_.interval
                self._dests[key] = prev
                continue
            dest = Destination(server, reporter_id=self.config.global_.reporter_id,
                               state_dir=self.config.global_.state_dir,
                               connection_factory=self._connection_factory,
                               timeout=_CALL_TIMEOUT, job_timeout=self.config.global_.job_timeout, stop=self._stop,
                               clock=self._clock, alive=self._alive)
            delivery = Delivery(dest, self.metrics, interval=self.config.global_.interval, clock=self._clock)
            self._dests[key] = _DestinationState(delivery, names)
        for state in old.values():
            state.delivery.close()

    def _reload_config(self, load: Callable[[], Config]) -> None:
        self._notifier.reloading()
        try:
            new = load()
            if not new.sources:
                raise no_sources_error(new.files)
            _group_destinations(new.sources)
        except FtreportError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            self._notifier.ready("reload failed; running the previous configuration")
            return
        log.info("reloading: %d sources", len(new.sources))
        self._stop_sources()
        self.config = new
        self.metrics.path = new.global_.metrics_file
        self._setup_destinations(new.sources)
        self._start_sources(new.sources)
        self._notifier.ready(f"reloaded: {len(new.sources)} sources")

    # -- delivery ---------------------------------------------------------------------------

    def _backoff(self, state: _DestinationState, error: SendError) -> None:
        limit = self.config.global_.max_backoff
        state.backoff = min(limit, max(0.5, state.backoff * 2))
        delay = error.retry_after if error.retry_after is not None else state.backoff
        state.next_attempt = self._clock() + delay
        state.failing = True
        log.warning("%s; next attempt in %.1f s", error, delay)

    def _service(self, state: _DestinationState) -> None:
        if self._clock() < state.next_attempt:
            return
        snaps, pending = self.snapshots.gather(state.sources, self.config.global_.first_report_wait)
        if not snaps:
            return  # wait until every source has reported or failed once; never send an empty report
        if pending != state.pending:
            state.pending = pending
            if pending:
                log.warning("%s: reporting without %s, still collecting after %g s (first_report_wait); "
                            "they follow when they are done", state.delivery.label, ", ".join(pending),
                            self.config.global_.first_report_wait)
        cached = state.encoded
        if cached is not None and [id(s) for s in cached[0]] == [id(s) for s in snaps]:
            report = cached[1]
        else:
            report = _encode(state.delivery.destination.server, state.encoder, snaps)
            state.encoded = (snaps, report)
        try:
            if not state.delivery.deliver(report, self.snapshots.counts(state.sources)):
                return
        except SendError as exc:
            if self._stop.is_set():
                return
            self.metrics.delivery_failed(state.sources)
            self.metrics.write()
            self._backoff(state, exc)
            return
        self.metrics.write()
        if state.failing:
            log.info("%s is reachable again", state.delivery.label)
        state.failing = False
        state.backoff = 0.0

    # -- the loop ----------------------------------------------------------------------------

    def start(self, load: Callable[[], Config] | None = None) -> None:
        """Start the sources and set up the destinations; ``load`` re-reads the configuration on
        :meth:`request_reload`."""
        if not self.config.sources:
            raise no_sources_error(self.config.files)
        self._load = load
        self._setup_destinations(self.config.sources)
        self._start_sources(self.config.sources)
        self._notifier.ready(f"watching {len(self.config.sources)} sources")
        if self._watchdog is not None:
            # One call to a server may take its timeout on each of its attempts before it fails:
            # a shorter watchdog restarts a daemon that is only waiting for a slow server.
            longest = _CALL_ATTEMPTS * _CALL_TIMEOUT
            if self._watchdog < longest:
                log.warning("the systemd watchdog (WatchdogSec=%g s) is shorter than one call to a server may "
                            "take (%g s): a slow server will get ftreport restarted", self._watchdog, longest)
            else:
                log.debug("systemd watchdog armed: %g s", self._watchdog)

    def _alive(self) -> None:
        """``WATCHDOG=1`` when systemd's watchdog is armed, at most four times per timeout."""
        if self._watchdog is None:
            return
        now = time.monotonic()
        if now - self._pinged >= self._watchdog / 4:
            self._pinged = now
            self._notifier.notify("WATCHDOG=1")

    def step(self, wait: float = 0.5) -> bool:
        """One cycle: a requested reload, then up to ``wait`` seconds for a new snapshot (and, once
        one came, ``settle`` seconds for related changes), then what is due to every destination.
        Returns False once stopped. Each cycle tells systemd's watchdog the loop is alive."""
        self._alive()
        if self._reload.is_set():
            self._reload.clear()
            if self._load is not None:
                self._reload_config(self._load)
        version = self.snapshots.wait(self._seen, timeout=wait)
        if self._stop.is_set():
            return False
        if version != self._seen:
            # Let related changes (both halves of a failover) arrive before reporting.
            if self._seen != -1 and self._stop.wait(self.config.global_.settle):
                return False
            self._seen = self.snapshots.version
        for state in list(self._dests.values()):
            self._service(state)
        self.metrics.write(every=10.0)
        return not self._stop.is_set()

    def close(self) -> None:
        """Stop the sources and close the destinations (after stop(), or instead of it)."""
        self._stop.set()
        self._notifier.stopping()
        self._notifier.close()
        log.info("stopping")
        self._stop_sources()
        for state in self._dests.values():
            state.delivery.close()

    def __enter__(self) -> Reporter:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def run(self, load: Callable[[], Config] | None = None) -> int:
        """Run until stop(); returns the exit code."""
        self.start(load)
        try:
            while self.step():
                pass
        finally:
            self.close()
        return 0


def dump_json(data: Any) -> str:
    """Pretty JSON for --status --json."""
    return json.dumps(data, indent=2, sort_keys=True)
