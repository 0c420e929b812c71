"""Calls to the entitlement server: a :class:`Connection`, and :func:`server_connection` which makes one
from ``[server]``.

A connection sends requests through a :class:`~ftagent.transport.Transport` (``requests`` for the
commands, ``http.client`` for the heartbeat) with a timeout on each, encodes and decodes JSON, and
turns an answer's status into an error of :mod:`ftagent.errors`.  A failover answer becomes
:class:`~ftagent.errors.FailoverRequired`, parsed by :mod:`ftagent.failover`: the connection never
acts on it.  The caller decides (:class:`ftagent.agent.Agent` for a command, the lease keeper for the
heartbeat): validate, claim the successor's lease, swap the identity, then tell the connection with
:meth:`Connection.reload_identity` and :meth:`Connection.alias`, after which requests naming the old
consumer UUID go to the new one.
"""

from __future__ import annotations

import email.utils
import json as jsonlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from ftagent import __version__
from ftagent.errors import BadAnswer, ConfigError, RemoteError, error_for_status
from ftagent.failover import parse_failover
from ftagent.light_transport import LightTransport
from ftagent.transport import Answer, Transport

if TYPE_CHECKING:
    from ftagent.config import Config

__all__ = ["DEFAULT_USER_AGENT", "Connection", "parse_retry_after", "server_connection"]

logger = logging.getLogger(__name__)

DEFAULT_USER_AGENT = f"ftagent/{__version__}"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date); ``None`` if absent."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


class Connection:
    """A connection to the server at ``url`` (for example ``https://host:8443/candlepin``).

    Without ``transport`` it goes through :class:`~ftagent.requests_transport.RequestsTransport` made
    from the other arguments (see there: ``ca_cert``, ``cert_file``/``key_file``, HTTP Basic
    ``username``/``password``, ``proxy``, ``retries``...).  ``timeout`` bounds each answer.
    """

    def __init__(
        self,
        url: str,
        *,
        ca_cert: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        username: str | None = None,
        password: str | None = None,
        insecure: bool = False,
        timeout: float = 30.0,
        proxy: str | None = None,
        no_proxy: str | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        max_retry_after: float = 120.0,
        user_agent: str = DEFAULT_USER_AGENT,
        ca_cert_setting: str | None = None,
        transport: Transport | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError(f"invalid server URL {url!r}: expected https://HOST[:PORT]/PATH")
        if timeout <= 0:
            raise ConfigError(f"invalid timeout {timeout!r}: must be positive")
        self.url = url.rstrip("/")
        self.cert_file = str(cert_file) if cert_file is not None else None
        self.timeout = float(timeout)
        #: Number of requests sent (logical requests, not counting a transport's own retries).
        self.requests_sent = 0
        self._aliases: dict[str, str] = {}
        if transport is None:
            # Imported here, not at the top: the heartbeat makes its connection on the light transport
            # and must not load requests and urllib3 (about 15 MB of its memory, bench/ftagent_heartbeat).
            from ftagent.requests_transport import RequestsTransport

            transport = RequestsTransport(
                self.url, ca_cert=ca_cert, cert_file=cert_file, key_file=key_file, username=username,
                password=password, insecure=insecure, proxy=proxy, no_proxy=no_proxy, retries=retries,
                backoff=backoff, max_retry_after=max_retry_after, user_agent=user_agent,
                ca_cert_setting=ca_cert_setting)
        self.transport: Transport = transport

    # -- plumbing -------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<Connection {self.url} cert={self.cert_file!r}>"

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close open connections; a later request opens a new one."""
        self.transport.close()

    def reload_identity(self) -> None:
        """Drop open connections so that the next request presents the (new) identity files."""
        self.transport.reset()

    @property
    def connections_opened(self) -> int:
        """How many TCP/TLS connections this connection has opened so far."""
        return self.transport.connections_opened

    def alias(self, old_uuid: str, new_uuid: str) -> None:
        """Rewrite ``old_uuid`` to ``new_uuid`` in the path and parameters of later requests."""
        self._aliases[old_uuid] = new_uuid

    def resolve_uuid(self, uuid: str) -> str:
        """The UUID a request naming ``uuid`` is sent for, after failovers."""
        seen = {uuid}
        while uuid in self._aliases:
            uuid = self._aliases[uuid]
            if uuid in seen:
                break
            seen.add(uuid)
        return uuid

    def _target(self, path: str, params: Mapping[str, Any] | None) -> str:
        path = path.lstrip("/")
        if self._aliases:
            path = "/".join(self.resolve_uuid(seg) for seg in path.split("/"))
        if not params:
            return path
        # As requests encodes parameters: a None value leaves the key out, a list repeats it.
        query = {key: self.resolve_uuid(value) if isinstance(value, str) and self._aliases else value
                 for key, value in params.items() if value is not None}
        encoded = urlencode(query, doseq=True)
        return f"{path}?{encoded}" if encoded else path

    def _check(self, method: str, path: str, answer: Answer) -> None:
        status = answer.status
        if status < 300:
            return
        body = answer.json()
        if 300 <= status < 400:
            failover = parse_failover(status, body, method=method, path=path)
            if failover is not None:
                raise failover
            location = answer.header("Location") or ""
            display = body.get("displayMessage") if isinstance(body, dict) else None
            message = display or f"server redirected to {location or '(no location)'}; redirects are not followed"
            raise RemoteError(status, message, body=body, method=method, path=path)
        raise error_for_status(status, body, method=method, path=path,
                               retry_after=parse_retry_after(answer.header("Retry-After")))

    # -- public API -----------------------------------------------------------------------

    def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """Send a request to ``path`` (relative to the base URL); return its successful :class:`Answer`.

        ``json`` is encoded as the body (``Content-Type: application/json``); ``data`` is sent as it
        is.  Raises a :class:`~ftagent.errors.FtagentError`, :class:`~ftagent.errors.FailoverRequired`
        for a failover answer.
        """
        method = method.upper()
        all_headers = dict(headers or {})
        body: bytes | None
        if json is not None:
            body = jsonlib.dumps(json, allow_nan=False).encode()
            all_headers.setdefault("Content-Type", "application/json")
        else:
            body = data.encode() if isinstance(data, str) else data
        started = time.monotonic()
        self.requests_sent += 1
        answer = self.transport.send(method, self._target(path, params), body=body, headers=all_headers,
                                     timeout=self.timeout)
        logger.debug("%s %s -> %s (%.0f ms)", method, path, answer.status, (time.monotonic() - started) * 1000)
        self._check(method, path, answer)
        return answer

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send a request (as :meth:`send`); return the decoded JSON body, ``None`` for an empty one."""
        answer = self.send(method, path, params=params, json=json, data=data, headers=headers)
        if not answer.body:
            return None
        try:
            return jsonlib.loads(answer.body)
        except RecursionError:
            raise BadAnswer(f"{method} {path}: the answer is nested too deeply to decode; refused") from None
        except ValueError:
            return answer.body.decode("utf-8", errors="replace")

    def get(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        """``GET path``."""
        return self.request("GET", path, params=params)

    def post(self, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        """``POST path`` with a JSON body."""
        return self.request("POST", path, json=json, params=params)

    def put(self, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        """``PUT path`` with a JSON body."""
        return self.request("PUT", path, json=json, params=params)

    def delete(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        """``DELETE path``."""
        return self.request("DELETE", path, params=params)


def server_connection(
    config: Config,
    *,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
    username: str | None = None,
    password: str | None = None,
    retries: int | None = None,
    light: bool = False,
) -> Connection:
    """A :class:`Connection` to ``[server]`` of ``config``: the one place its settings become arguments.

    ``light`` asks for the ``http.client`` transport (the heartbeat's), which is used unless a proxy is
    configured; ``retries`` overrides ``[server] retries`` (the light transport makes none).
    """
    server = config.server
    if not server.url:
        raise ConfigError(f"no server URL: set [server] url in {config.where}")
    if light and not server.proxy:
        transport = LightTransport(server.url, ca_cert=server.ca_cert, insecure=server.insecure,
                                   cert_file=cert_file, key_file=key_file)
        return Connection(server.url, cert_file=cert_file, timeout=server.timeout, transport=transport)
    return Connection(
        server.url,
        ca_cert=server.ca_cert,
        cert_file=cert_file,
        key_file=key_file,
        username=username,
        password=password,
        insecure=server.insecure,
        timeout=server.timeout,
        proxy=server.proxy,
        no_proxy=server.no_proxy,
        retries=server.retries if retries is None else retries,
        ca_cert_setting=f"[server] ca_cert in {config.where}",
    )
