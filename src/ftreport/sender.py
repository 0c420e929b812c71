"""Sending reports: hypervisor check-in, job polling, and the record of the last accepted report.

HTTP goes through ftagent's :class:`~ftagent.connection.Connection` (TLS verification, proxies,
retries, error classes); this module adds the check-in protocol on top:

- ``POST /hypervisors/{owner}?reporter_id=R`` with the report body, then ``GET /jobs/{id}``
  until the job is FINISHED (accepted) or FAILED/CANCELED/ABORTED (rejected);
- the hash of the last report the server *accepted*, and when, are kept in the state directory for
  ``--status``. Whether a report is due is :mod:`ftreport.delivery`'s decision, never this record's:
  a server may have lost what it accepted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from ftagent.atomic import write_atomic
from ftagent.errors import FtagentError

from .errors import SendError
from .settings import ServerConfig

__all__ = [
    "ConnectionFactory",
    "ConnectionLike",
    "Destination",
    "SentRecord",
    "default_connection_factory",
]

log = logging.getLogger(__name__)

_DONE = "FINISHED"
_FAILED = ("FAILED", "CANCELED", "CANCELLED", "ABORTED")


class ConnectionLike(Protocol):
    """What the sender needs from a connection (ftagent's Connection provides it)."""

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None,
                data: Any = None, headers: Mapping[str, str] | None = None) -> Any: ...

    def close(self) -> None: ...


ConnectionFactory = Callable[[ServerConfig, float], ConnectionLike]


def default_connection_factory(server: ServerConfig, timeout: float) -> ConnectionLike:
    """ftagent's Connection for a destination; retries stay short, the daemon does the waiting."""
    # requests and urllib3 come with it: ~55 ms that ftreport --print, which sends nothing, never pays.
    from ftagent.connection import Connection

    return Connection(server.url, ca_cert=server.ca_cert, cert_file=server.cert_file, key_file=server.key_file,
                      username=server.username, password=server.password, insecure=server.insecure,
                      timeout=timeout, proxy=server.proxy, no_proxy=server.no_proxy, retries=2,
                      max_retry_after=5.0, ca_cert_setting=server.ca_origin)


class SentRecord:
    """The last report the server accepted for one destination (its hash, and when), kept on disk."""

    def __init__(self, state_dir: Path, destination_key: str) -> None:
        digest = hashlib.sha256(destination_key.encode()).hexdigest()[:16]
        self.path = state_dir / f"sent-{digest}.json"
        self.destination_key = destination_key

    def accepted_at(self) -> float | None:
        """When the server last accepted a report for this destination (from the record on disk)."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        value = data.get("time") if isinstance(data, dict) and data.get("destination") == self.destination_key \
            else None
        return float(value) if isinstance(value, (int, float)) else None

    def set(self, value: str) -> None:
        data = json.dumps({"destination": self.destination_key, "hash": value, "time": time.time()})
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(self.path, data.encode(), mode=0o600)
        except OSError as exc:
            # Not fatal: the report was delivered; only --status's "last accepted" misses it.
            log.warning("cannot record the sent report in %s: %s", self.path, exc)


def _send_error(exc: Exception, what: str) -> SendError:
    """SendError from an ftagent error, keeping the server's Retry-After hint."""
    retry_after = getattr(exc, "retry_after", None)
    return SendError(f"{what}: {exc}", retry_after=retry_after if isinstance(retry_after, (int, float)) else None)


class Destination:
    """One entitlement server and owner that reports are checked in to."""

    def __init__(self, server: ServerConfig, *, reporter_id: str, state_dir: Path,
                 connection_factory: ConnectionFactory = default_connection_factory,
                 timeout: float = 30.0, job_timeout: float = 120.0,
                 stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 alive: Callable[[], None] = lambda: None) -> None:
        self.server = server
        self.reporter_id = reporter_id
        self.record = SentRecord(state_dir, server.key)
        self._factory = connection_factory
        self._timeout = timeout
        self._job_timeout = job_timeout
        self._stop = stop or threading.Event()
        self._clock = clock
        self._alive = alive  # called between the polls of a job: the caller's loop is still turning
        self._conn: ConnectionLike | None = None

    @property
    def label(self) -> str:
        return self.server.label

    def _connection(self) -> ConnectionLike:
        if self._conn is None:
            try:
                self._conn = self._factory(self.server, self._timeout)
            except Exception as exc:  # ftagent.errors.ConfigError for a bad URL or CA path
                raise SendError(f"{self.label}: {exc}") from exc
        return self._conn

    def _request(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        try:
            return self._connection().request(method, path, **kwargs)
        except FtagentError as exc:
            raise _send_error(exc, f"{what} to {self.label}") from exc

    def check_in(self, payload: bytes) -> Mapping[str, Any]:
        """Post a report and wait for its job; returns the job's result data.

        For the guests of the host itself (:attr:`ServerConfig.guests_of`), the payload is the
        consumer's guest list, put as virt-who puts it; the server answers at once."""
        if self.server.guests_of:
            self._request("PUT", f"/consumers/{quote(self.server.guests_of, safe='')}", "guest list update",
                          data=payload, headers={"Content-Type": "application/json"})
            return {}
        owner = quote(self.server.owner, safe="")
        job = self._request("POST", f"/hypervisors/{owner}", "hypervisor check-in",
                            params={"reporter_id": self.reporter_id}, data=payload,
                            headers={"Content-Type": "application/json"})
        if not isinstance(job, Mapping) or "id" not in job or "state" not in job:
            # A synchronous server answers with the result itself.
            return job if isinstance(job, Mapping) else {}
        return self._wait_job(job)

    def _wait_job(self, job: Mapping[str, Any]) -> Mapping[str, Any]:
        job_id = str(job["id"])
        deadline = self._clock() + self._job_timeout
        delay = 0.05
        while True:
            state = str(job.get("state", "")).upper()
            if state == _DONE:
                result = job.get("resultData")
                log.debug("job %s finished: %s", job_id, result)
                return result if isinstance(result, Mapping) else {"result": result}
            if state in _FAILED:
                detail = job.get("resultData") or job.get("result") or "no details"
                raise SendError(f"{self.label} rejected the report: job {job_id} {state}: {detail}")
            if self._clock() >= deadline:
                raise SendError(f"job {job_id} at {self.label} still {state} after {self._job_timeout:g} s")
            if self._stop.wait(delay):
                raise SendError(f"stopped while waiting for job {job_id}")
            self._alive()
            delay = min(delay * 2, 1.0)
            polled = self._request("GET", f"/jobs/{quote(job_id, safe='')}", "job status")
            if not isinstance(polled, Mapping):
                raise SendError(f"{self.label}: unexpected job status {polled!r}")
            job = polled

    def status(self) -> Mapping[str, Any]:
        """``GET /status``: reachability (and version) of the server."""
        result = self._request("GET", "/status", "status check")
        return result if isinstance(result, Mapping) else {}

    def check_owner(self) -> Mapping[str, Any]:
        """The credentials work and the owner exists: ``GET /owners/{owner}`` as a user; as a
        consumer (the host's certificate), which may not read its owner, ``GET /consumers/{uuid}``
        for itself, whose org must be the owner reported to."""
        consumer = self.server.guests_of or self._certificate_consumer()
        if consumer is None:
            result = self._request("GET", f"/owners/{quote(self.server.owner, safe='')}", "owner check")
            return result if isinstance(result, Mapping) else {}
        result = self._request("GET", f"/consumers/{quote(consumer, safe='')}", "consumer check")
        found = result.get("owner") if isinstance(result, Mapping) else None
        key = found.get("key") if isinstance(found, Mapping) else None
        if self.server.owner and key and key != self.server.owner:
            raise SendError(f"{self.label}: the consumer {consumer} the certificate names belongs to org {key}, "
                            f"not {self.server.owner}")
        return result if isinstance(result, Mapping) else {}

    def _certificate_consumer(self) -> str | None:
        """The consumer UUID of the client certificate when the destination authenticates with one."""
        if self.server.username or not self.server.cert_file:
            return None
        from ftagent.crypto import cert_info, load_cert  # only --status needs it: cryptography costs ~40 ms

        try:
            return cert_info(load_cert(Path(self.server.cert_file).read_bytes())).common_name or None
        except (OSError, ValueError) as exc:
            raise SendError(f"{self.label}: cannot read the client certificate {self.server.cert_file}: "
                            f"{exc}") from exc

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
