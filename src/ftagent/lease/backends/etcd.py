"""The ``etcd`` lease backend: the FT group's lease as one key in an etcd v3 cluster.

The key is ``{etcd_prefix}/{org}/{virt.uuid}``, valued with the holder id and attached to an etcd
lease of ``ttl`` seconds:

- grant: a linearizable range of the key; if absent, a fresh etcd lease and one transaction "create
  the key only if it does not exist (create revision 0), attached to that lease";
- renew: a keep-alive of the etcd lease, then a linearizable range of the key on the same member,
  which must still be ours (holder, create revision = generation, etcd lease).  The range goes
  through the leader's quorum check (ReadIndex), so a keep-alive accepted by a leader that was
  already cut off from the majority (older etcd releases may renew there) is not trusted;
- release: revoke the etcd lease (etcd deletes the key at once);
- handover (a failover's successor identity): the same key, so nothing changes in etcd; it is a
  renewal when this instance holds the lease;
- generation: the key's create revision, which only grows across the cluster.

etcd lets another instance create the key only after it expired our etcd lease, which runs at least
``ttl`` from when the leader received our last keep-alive; the state machine stops holding at that
keep-alive's *send* time + ``ttl`` - ``margin``.  A leader change makes the new leader extend every
lease by its full ttl, which only delays a takeover.

Transport: etcd's JSON gateway (``/v3/...``, etcd 3.4 and later) over
:class:`~ftagent.light_transport.LightTransport` (``http.client`` + ``ssl``, the server backend's
renewal transport): one keep-alive connection, TLS with
an optional client certificate, a timeout on every socket operation, and no third-party package, so
the heartbeat stays small (``requests`` alone costs about 6 MB of RSS in the heartbeat).  A call goes
to the member that answered last and moves to the next member on a connection failure, a timeout
or an "unavailable" answer, within the call's own time budget.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from ftagent.errors import ConfigError, ConnectionFailed, FtagentError
from ftagent.lease.backend import BackendSpec, Grant, LeaseRefused
from ftagent.lease.status import holder_fingerprint

if TYPE_CHECKING:
    from ftagent.config import Config
    from ftagent.connection import Connection
    from ftagent.identity import IdentityStore
    from ftagent.lease.settings import LeaseSettings
    from ftagent.light_transport import LightTransport

__all__ = ["BACKEND", "DEFAULT_PREFIX", "KEYS", "EtcdBackend", "EtcdGateway", "EtcdSettings", "lease_key",
           "open_etcd_backend", "parse_etcd_settings"]

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "/ftagent/leases"
#: The ``[lease]`` keys of this backend.
KEYS = ("etcd_endpoints", "etcd_prefix", "etcd_ca_cert", "etcd_cert", "etcd_key", "etcd_username",
        "etcd_password")

# gRPC status codes etcd answers with (in the gateway's JSON body): these mean "try another member".
_UNAVAILABLE = {4, 14}  # DEADLINE_EXCEEDED, UNAVAILABLE
_UNAUTHENTICATED = 16


@dataclass(frozen=True)
class EtcdSettings:
    """The ``etcd_*`` keys of ``[lease]``, validated."""

    endpoints: tuple[str, ...]
    prefix: str = DEFAULT_PREFIX
    ca_cert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never show the password
        return (f"EtcdSettings(endpoints={self.endpoints!r}, prefix={self.prefix!r}, ca_cert={self.ca_cert!r}, "
                f"cert={self.cert!r}, key={self.key!r}, username={self.username!r})")


def parse_etcd_settings(raw: Mapping[str, str], err: Callable[[str, str], ConfigError],
                        base: Path | None) -> EtcdSettings:
    """Validate the ``etcd_*`` keys; ``err(key, message)`` makes the error naming file and key."""

    def path(key: str) -> Path | None:
        value = raw.get(key, "").strip()
        if not value:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else (base or Path.cwd()) / p

    endpoints = tuple(e.strip().rstrip("/") for e in raw.get("etcd_endpoints", "").replace(" ", ",").split(",")
                      if e.strip())
    if not endpoints:
        raise err("etcd_endpoints", "backend etcd needs etcd_endpoints: the URLs of the cluster's members, "
                                    "comma-separated (http://host:2379 or https://host:2379)")
    for url in endpoints:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise err("etcd_endpoints", f"invalid endpoint {url!r}: expected http(s)://host:port")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise err("etcd_endpoints", f"invalid port in endpoint {url!r}") from None
    prefix = raw.get("etcd_prefix", "").strip().rstrip("/") or DEFAULT_PREFIX
    if not prefix.startswith("/"):
        raise err("etcd_prefix", f"etcd_prefix {prefix!r} must start with /")
    cert, key = path("etcd_cert"), path("etcd_key")
    if (cert is None) != (key is None):
        raise err("etcd_key" if key is None else "etcd_cert", "etcd_cert and etcd_key go together")
    username = raw.get("etcd_username", "").strip() or None
    password = raw.get("etcd_password", "") or None
    if password is not None and username is None:
        raise err("etcd_password", "etcd_password without etcd_username")
    if username is not None and password is None:
        raise err("etcd_password", "etcd_username needs etcd_password")
    ca = path("etcd_ca_cert")
    if (cert is not None or ca is not None) and any(e.startswith("http://") for e in endpoints):
        raise err("etcd_endpoints", "TLS settings (etcd_ca_cert, etcd_cert) need https:// endpoints")
    if username is not None and any(e.startswith("http://") for e in endpoints):
        logger.warning("[lease] etcd_username with plain http:// endpoints: the password crosses the network "
                       "in clear text")
    return EtcdSettings(endpoints=endpoints, prefix=prefix, ca_cert=ca, cert=cert, key=key, username=username,
                        password=password)


def lease_key(prefix: str, org: str, virt_uuid: str) -> str:
    """``{prefix}/{org}/{virt.uuid}``; org and uuid are quoted so that neither can add a path level."""
    return f"{prefix}/{quote(org, safe='')}/{quote(virt_uuid.strip().lower(), safe='')}"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: Any) -> str:
    return base64.b64decode(text).decode(errors="replace") if isinstance(text, str) else ""


def _int(value: Any) -> int:
    """etcd's int64 fields come as JSON strings; a missing one is 0."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class EtcdError(ConnectionFailed):
    """A call to the cluster failed (no member answered in time, or etcd said no to the request)."""


@dataclass(frozen=True)
class KeyState:
    """The lease key as a range returns it."""

    holder: str
    create_revision: int
    lease: int


class EtcdGateway:
    """Calls to etcd's JSON gateway (``POST /v3/...``) on a list of members.

    A call starts with the member that answered last and moves to the next on a connection failure,
    a timeout or an "unavailable" answer, as long as its time budget lasts; ``sticky`` calls (the
    range after a keep-alive) stay on the member that answered the previous call.
    """

    def __init__(self, settings: EtcdSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        # Imported here, with the gateway: `ftagent status` loads this module for the registry and must
        # not pay for ssl and http.client (about 10 ms, python -X importtime).
        from ftagent.light_transport import LightTransport

        self.settings = settings
        self.clock = clock
        self.clients: list[LightTransport] = [
            LightTransport(url, ca_cert=settings.ca_cert, insecure=False, cert_file=settings.cert,
                           key_file=settings.key, user_agent="ftagent-heartbeat-etcd")
            for url in settings.endpoints]
        self.current = 0
        self.calls = 0
        self._token: str | None = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._token} if self._token else {}

    def _authenticate(self, client: LightTransport, timeout: float) -> None:
        status, data = _post(client, "v3/auth/authenticate",
                             {"name": self.settings.username, "password": self.settings.password}, timeout)
        token = data.get("token") if isinstance(data, dict) else None
        if status != 200 or not isinstance(token, str):
            raise EtcdError(f"etcd authentication as {self.settings.username!r} failed: {_message(data, status)}")
        self._token = token

    def call(self, path: str, body: Mapping[str, Any], timeout: float, *, sticky: bool = False) -> dict[str, Any]:
        """``POST /v3/{path}`` within ``timeout`` seconds in all; the decoded answer."""
        deadline = self.clock() + timeout
        count = len(self.clients)
        order = [self.current] if sticky else [(self.current + i) % count for i in range(count)]
        errors: list[str] = []
        for n, index in enumerate(order):
            left = deadline - self.clock()
            if left <= 0.01:
                break
            # Keep some of the budget for the members after this one: a stalled member must not eat it all.
            budget = left if n == len(order) - 1 else max(left / 2, min(left, 0.5))
            client = self.clients[index]
            try:
                result = self._call_one(client, path, body, budget)
            except ConnectionFailed as exc:
                errors.append(f"{self.settings.endpoints[index]}: {exc}")
                if not sticky and count > 1:
                    self.current = (index + 1) % count
                    logger.info("etcd member %s failed (%s); trying the next member",
                                self.settings.endpoints[index], exc)
                continue
            self.current = index
            return result
        raise EtcdError("no etcd member answered in time: " + ("; ".join(errors) or f"{timeout:.2f} s spent"))

    def _call_one(self, client: LightTransport, path: str, body: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        started = self.clock()
        if self.settings.username and self._token is None:
            self._authenticate(client, timeout)
        for attempt in (0, 1):
            left = timeout - (self.clock() - started)
            if left <= 0.01:
                raise EtcdError(f"timed out after {timeout:.2f} s")
            self.calls += 1
            status, data = _post(client, f"v3/{path}", body, left, self._headers())
            if status == 200 and isinstance(data, dict):
                error = data.get("error")
                if isinstance(error, dict):  # a streaming call's error ({"error": {...}})
                    status, data = 500, error
                else:
                    return data
            code = _int(data.get("code")) if isinstance(data, dict) else 0
            if code == _UNAUTHENTICATED and self.settings.username and attempt == 0:
                self._token = None  # the token expired (or the member restarted): log in again
                self._authenticate(client, max(0.05, timeout - (self.clock() - started)))
                continue
            client.close()
            if code in _UNAVAILABLE or status in (502, 503, 504) or (status >= 500 and not code):
                raise ConnectionFailed(f"unavailable: {_message(data, status)}")
            raise _Rejected(status, code, _message(data, status))
        raise EtcdError("etcd authentication failed")  # pragma: no cover

    def close(self) -> None:
        for client in self.clients:
            client.close()


def _post(client: LightTransport, path: str, body: Mapping[str, Any], timeout: float,
          headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
    """``POST`` a JSON body to the gateway; the status and the decoded answer (``None`` if not JSON)."""
    answer = client.send("POST", path, body=json.dumps(dict(body)).encode(),
                         headers={"Content-Type": "application/json", **(headers or {})}, timeout=timeout)
    return answer.status, answer.json()


class _Rejected(FtagentError):
    """etcd answered with a definite error (not found, permission denied, invalid argument...)."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"etcd refused the request (HTTP {status}, code {code}): {message}")
        self.status, self.code = status, code


def _message(data: Any, status: int) -> str:
    if isinstance(data, dict):
        for name in ("message", "error"):
            if isinstance(data.get(name), str):
                return str(data[name])
    return f"HTTP {status}"


class EtcdBackend:
    """The lease calls on etcd (a :class:`~ftagent.lease.backend.LeaseBackend`); see the module's docstring."""

    name = "etcd"

    def __init__(self, gateway: EtcdGateway, key: str, *, ttl: float) -> None:
        self.gateway = gateway
        self.key = key
        self._ttl = ttl
        self._etcd_ttl = max(1, math.ceil(ttl))  # etcd counts whole seconds; never less than ours
        # The etcd lease this instance holds the key with, and its generation.
        self.lease_id: int | None = None
        self.generation: int | None = None
        # etcd leases granted whose transaction's answer was lost: if the key turns out to be attached
        # to one of them, the key is ours.
        self._unanswered: set[int] = set()

    @property
    def ttl(self) -> float:
        return self._ttl

    # -- etcd calls -------------------------------------------------------------------------------

    def _range(self, timeout: float, *, sticky: bool = False) -> KeyState | None:
        data = self.gateway.call("kv/range", {"key": _b64(self.key)}, timeout, sticky=sticky)
        return _key_state(data.get("kvs"))

    def _create(self, holder: str, timeout: float) -> tuple[bool, KeyState | None, int]:
        """Grant an etcd lease and create the key on it if absent: (created, key state, lease id)."""
        started = self.gateway.clock()
        granted = self.gateway.call("lease/grant", {"TTL": self._etcd_ttl}, timeout)
        lease_id = _int(granted.get("ID"))
        ttl = _int(granted.get("TTL"))
        if not lease_id or ttl < self._etcd_ttl:
            raise EtcdError(f"etcd granted lease {lease_id} with ttl {ttl}, not {self._etcd_ttl}")
        key = _b64(self.key)
        txn = {
            "compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": key, "value": _b64(holder), "lease": str(lease_id)}},
                        {"request_range": {"key": key}}],
            "failure": [{"request_range": {"key": key}}],
        }
        self._unanswered.add(lease_id)
        left = timeout - (self.gateway.clock() - started)
        data = self.gateway.call("kv/txn", txn, max(0.05, left))
        self._unanswered.discard(lease_id)
        state = None
        for response in data.get("responses") or []:
            if isinstance(response, dict) and "response_range" in response:
                state = _key_state((response["response_range"] or {}).get("kvs"))
        created = bool(data.get("succeeded"))
        if not created and state is not None and state.lease == lease_id and state.holder == holder:
            created = True  # a retried transaction whose first attempt had created the key on this lease
        if not created:
            self._revoke_quietly(lease_id, max(0.05, timeout - (self.gateway.clock() - started)))
        return created, state, lease_id

    def _revoke_quietly(self, lease_id: int, timeout: float) -> None:
        try:
            self.gateway.call("lease/revoke", {"ID": str(lease_id)}, timeout)
        except FtagentError as exc:
            logger.debug("etcd lease %x not revoked (it expires by itself): %s", lease_id, exc)

    # -- the LeaseBackend calls ---------------------------------------------------------------------

    def grant(self, consumer: str, holder: str, timeout: float) -> Grant:
        started = self.gateway.clock()
        state = self._range(timeout)
        if state is not None:
            return self._existing(state, holder, timeout - (self.gateway.clock() - started))
        created, state, lease_id = self._create(holder, timeout - (self.gateway.clock() - started))
        if not created:
            if state is None:
                raise EtcdError("the key changed during the acquisition; trying again")
            return self._existing(state, holder, timeout - (self.gateway.clock() - started))
        if state is None or state.lease != lease_id or state.holder != holder:
            raise EtcdError("etcd's answer to the acquisition lacks the key")
        self.lease_id, self.generation = lease_id, state.create_revision
        logger.info("etcd key %s created by holder %s at revision %d (etcd lease %x)", self.key,
                    holder_fingerprint(holder), state.create_revision, lease_id)
        return Grant(holder=holder, generation=state.create_revision)

    def _existing(self, state: KeyState, holder: str, timeout: float) -> Grant:
        """The key exists: ours if it is on the etcd lease we hold (or one whose creation went unanswered)."""
        if state.holder == holder and state.lease in self._unanswered:
            self._unanswered.clear()
            self.lease_id, self.generation = state.lease, state.create_revision
            return self.renew("", holder, state.create_revision, max(0.05, timeout))
        if state.holder == holder and state.lease == self.lease_id and state.create_revision == self.generation:
            return self.renew("", holder, state.create_revision, max(0.05, timeout))
        # Another instance holds it, or one with our holder id that this process does not know of
        # (a restarted agent, the other instance of an FT pair): wait until etcd expires its lease.
        shown = holder_fingerprint(state.holder)
        raise LeaseRefused(f"the etcd key {self.key} is held by holder {shown} (revision {state.create_revision})",
                           holder=shown, generation=state.create_revision)

    def renew(self, consumer: str, holder: str, generation: int, timeout: float) -> Grant:
        started = self.gateway.clock()
        lease_id = self.lease_id if self.generation == generation else None
        if lease_id is None:
            # Carried over from an earlier run of this holder (``heartbeat --once``): the key names its lease.
            state = self._range(timeout)
            if state is None or state.holder != holder or state.create_revision != generation:
                raise _refused(self.key, state, generation)
            lease_id = state.lease
        try:
            data = self.gateway.call("lease/keepalive", {"ID": str(lease_id)},
                                     timeout - (self.gateway.clock() - started))
        except _Rejected as exc:
            raise LeaseRefused(f"etcd refused the keep-alive of lease {lease_id:x}: {exc}", expired=True) from exc
        result = data.get("result") if isinstance(data.get("result"), dict) else data
        assert isinstance(result, dict)
        if _int(result.get("TTL")) <= 0:
            self.lease_id = None
            raise LeaseRefused(f"etcd lease {lease_id:x} has expired", holder=holder, generation=generation,
                               expired=True)
        # Confirm on the same member, through the leader's quorum check, that the key is still ours.
        state = self._range(max(0.05, timeout - (self.gateway.clock() - started)), sticky=True)
        if state is None or state.holder != holder or state.create_revision != generation or state.lease != lease_id:
            raise _refused(self.key, state, generation)
        self.lease_id, self.generation = lease_id, generation
        return Grant(holder=holder, generation=generation)

    def handover(self, successor: Mapping[str, Any], holder: str, generation: int | None,
                 timeout: float) -> Grant:
        # The key belongs to the FT group, not to an identity: a failover keeps it as it is.
        uuid = successor.get("uuid")
        consumer = str(uuid) if uuid else None
        if generation is not None:
            granted = self.renew("", holder, generation, timeout)
        else:
            granted = self.grant("", holder, timeout)
        return Grant(holder=granted.holder, generation=granted.generation, consumer=consumer)

    def release(self, consumer: str, holder: str, timeout: float) -> None:
        lease_id = self.lease_id
        if lease_id is None:
            state = self._range(timeout)
            if state is None or state.holder != holder:
                return
            lease_id = state.lease
        try:
            self.gateway.call("lease/revoke", {"ID": str(lease_id)}, timeout)
        except _Rejected as exc:
            if exc.code != 5:  # NOT_FOUND: already expired, so already released
                raise
        self.lease_id = self.generation = None

    def close(self) -> None:
        self.gateway.close()


def _key_state(kvs: Any) -> KeyState | None:
    if not isinstance(kvs, list) or not kvs or not isinstance(kvs[0], dict):
        return None
    kv = kvs[0]
    return KeyState(holder=_unb64(kv.get("value")), create_revision=_int(kv.get("create_revision")),
                    lease=_int(kv.get("lease")))


def _refused(key: str, state: KeyState | None, generation: int) -> LeaseRefused:
    if state is None:
        return LeaseRefused(f"the etcd key {key} is gone (its etcd lease expired or was revoked)",
                            generation=None, expired=True)
    shown = holder_fingerprint(state.holder)
    return LeaseRefused(f"the etcd key {key} is held by holder {shown} at revision {state.create_revision}, "
                        f"not at {generation}", holder=shown, generation=state.create_revision,
                        expired=state.create_revision != generation)


def open_etcd_backend(config: Config, settings: LeaseSettings, identity: IdentityStore,
                      connection: Callable[[], Connection] | None = None) -> EtcdBackend:
    """The backend for ``[lease] backend = etcd``: the key of this guest's FT group on the configured cluster."""
    from ftagent.facts import collect_facts  # as LightTransport above: platform and subprocess, ~5 ms

    options = settings.backend_options
    if not isinstance(options, EtcdSettings):
        raise ConfigError("backend etcd is not configured", section="lease", key="etcd_endpoints")
    org = identity.load().org
    if not org:
        raise FtagentError("the identity certificate names no organization: the etcd lease key needs it")
    virt_uuid = collect_facts(config.agent.facts_dir).get("virt.uuid")
    if not virt_uuid:
        raise FtagentError("no virt.uuid fact (not a virtual machine, or not readable): the etcd lease key needs it")
    return EtcdBackend(EtcdGateway(options), lease_key(options.prefix, org, virt_uuid), ttl=settings.ttl)


#: The lease as a key in an etcd cluster: keys ``etcd_*``, keyed on the FT group.
BACKEND = BackendSpec(name="etcd", opener=open_etcd_backend, keys=KEYS, parse=parse_etcd_settings)
